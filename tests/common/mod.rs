//! Helpers shared by the integration tests: a scratch workspace and the real binary.
#![allow(dead_code)]

pub mod runtime_api;

pub use pipeline_testkit::{moto, registry, repo};

use std::path::Path;
use std::process::{Command, Output};

/// A temporary directory holding `environments/` with the shipped `base.yaml`
/// and `dev.yaml` plus the given files.
pub fn workspace(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let envs = dir.path().join("environments");
    std::fs::create_dir(&envs).expect("environments dir");
    for name in ["base.yaml", "dev.yaml"] {
        std::fs::copy(repo().join("environments").join(name), envs.join(name)).expect("copy spec");
    }
    for (name, text) in files {
        std::fs::write(envs.join(name), text).expect("write spec");
    }
    dir
}

/// Runs `pipeline` in `dir` without colours and without the caller's settings.
pub fn pipeline(dir: &Path, args: &[&str]) -> Output {
    command(dir, args).output().expect("run pipeline")
}

pub fn command(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pipeline"));
    cmd.args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("PIPELINE_OUTPUT")
        .env_remove("PIPELINE_ENVIRONMENTS");
    cmd
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Writes a function's prebuilt package, `<dir>/artifacts/<function>.zip`:
/// a `bootstrap` (mode 0755) whose bytes say `version`, and `datasets.json`.
pub fn package(dir: &Path, function: &str, version: &str) {
    use std::io::Write;
    let dir = dir.join("artifacts");
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    let file = std::fs::File::create(dir.join(format!("{function}.zip"))).expect("zip");
    let mut zip = zip::ZipWriter::new(file);
    let options = zip::write::SimpleFileOptions::default();
    zip.start_file("bootstrap", options.unix_permissions(0o755))
        .expect("entry");
    zip.write_all(format!("{function} {version}").as_bytes())
        .expect("write");
    zip.start_file("datasets.json", options).expect("entry");
    zip.write_all(b"{}").expect("write");
    zip.finish().expect("finish");
}
