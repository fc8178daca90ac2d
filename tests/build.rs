//! `pipeline build` for real: a clean clone of the repository builds the
//! functions for Lambda with cargo-lambda. The zips hold no path of the
//! folder they were built in nor of the cargo home (so that they come out
//! byte-identical wherever they are built), one function asked for alone
//! gets the same package as in the full build, and each `bootstrap` is an
//! arm64 Linux executable that needs no glibc newer than `provided.al2023`
//! has (2.34).
//!
//! Before, a second clean clone in another folder built again and its zip
//! was compared; but sharing the first clone's target directory, cargo
//! found every crate fresh (it names the workspace's crates by paths
//! relative to the workspace) and rebuilt nothing, so the comparison could
//! not see a folder's path in a package. The paths are now looked for in
//! the packages themselves.
//!
//! Building for Lambda takes minutes, so the test is ignored by a plain
//! `cargo test`; `scripts/test` (and so CI) runs it. It needs what
//! `.ci/tools.sh` installs: cargo-lambda and zig (`CARGO_LAMBDA_PATH`) and
//! the aarch64 Rust target.

use crate::common;

use pipeline_testkit::{Service, require};

use std::path::{Path, PathBuf};
use std::process::Command;

/// A clean clone of the committed tree.
fn clone(to: &Path) {
    let status = Command::new("git")
        .args(["clone", "--quiet", "--no-hardlinks"])
        .arg(common::repo())
        .arg(to)
        .status()
        .expect("git clone");
    assert!(status.success(), "git clone failed");
}

/// Builds the packages of dev in a clone (only `function`'s, with one);
/// the zips' paths.
fn build(clone: &Path, function: Option<&str>) -> Vec<PathBuf> {
    let mut path = vec![pipeline_testkit::cargo_lambda_dir()];
    path.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    let mut command = common::command(clone, &["--output", "json", "build", "--env", "dev"]);
    if let Some(function) = function {
        command.args(["--function", function]);
    }
    let started = std::time::Instant::now();
    let out = command
        .arg("--rds-ca-bundle")
        .arg(common::repo().join("functions/shared/tests/fixtures/unrelated-ca.pem"))
        .env("PATH", std::env::join_paths(path).expect("PATH"))
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        // The test command builds the tests through clippy-driver; packages
        // are built as a user builds them.
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CLIPPY_ARGS")
        .output()
        .expect("run pipeline build");
    assert_eq!(
        out.status.code(),
        Some(0),
        "build failed:\n{}",
        common::stderr(&out)
    );
    eprintln!(
        "built {} in {} s",
        function.unwrap_or("every function"),
        started.elapsed().as_secs()
    );
    let built: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    built["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| clone.join(p["path"].as_str().expect("path")))
        .collect()
}

/// The newest `GLIBC_2.N` version an executable asks for.
fn newest_glibc(binary: &[u8]) -> u32 {
    let needle = b"GLIBC_2.";
    binary
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .filter_map(|(i, _)| {
            let rest = &binary[i + needle.len()..];
            let digits: Vec<u8> = rest
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .copied()
                .collect();
            std::str::from_utf8(&digits).ok()?.parse().ok()
        })
        .max()
        .unwrap_or(0)
}

/// Whether `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
#[ignore = "builds the functions for Lambda (minutes); scripts/test runs it"]
fn a_clean_clone_builds_packages_that_hold_no_build_path() {
    require!(Service::CargoLambda);
    let dir = tempfile::tempdir().expect("temp dir");
    let clone_dir = dir.path().join("a-folder-of-its-own");
    clone(&clone_dir);
    let all = build(&clone_dir, None);
    assert_eq!(all.len(), 3);
    let full: Vec<(PathBuf, Vec<u8>)> = all
        .iter()
        .map(|p| (p.clone(), std::fs::read(p).expect("zip")))
        .collect();
    // One function asked for alone: the same package as in the full build.
    let alone = build(&clone_dir, Some("ingest"));
    assert_eq!(alone.len(), 1);
    let ingest = std::fs::read(&alone[0]).expect("zip");
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .expect("a cargo home");
    let folder = clone_dir.to_str().expect("utf-8 path").as_bytes().to_vec();
    let home = cargo_home.to_str().expect("utf-8 path").as_bytes().to_vec();
    for (path, bytes) in &full {
        if path.file_name() == alone[0].file_name() {
            assert!(
                *bytes == ingest,
                "{} differs when built alone",
                path.display()
            );
        }
        eprintln!("{}: {} bytes", path.display(), bytes.len());

        let mut archive =
            zip::ZipArchive::new(std::io::Cursor::new(bytes.clone())).expect("zip archive");
        let names: Vec<&str> = archive.file_names().collect();
        assert_eq!(
            names,
            [
                "amazon-root-ca.pem",
                "bootstrap",
                "datasets.json",
                "rds-ca.pem"
            ]
        );
        let mut bootstrap = Vec::new();
        std::io::Read::read_to_end(
            &mut archive.by_name("bootstrap").expect("bootstrap"),
            &mut bootstrap,
        )
        .expect("read bootstrap");
        // ELF, 64-bit, machine AArch64 (183).
        assert_eq!(&bootstrap[..5], b"\x7fELF\x02");
        assert_eq!(u16::from_le_bytes([bootstrap[18], bootstrap[19]]), 183);
        let glibc = newest_glibc(&bootstrap);
        assert!(
            (17..=34).contains(&glibc),
            "{} needs GLIBC_2.{glibc}",
            path.display()
        );
        // The places it was built in: a package built elsewhere would differ.
        for (what, needle) in [("the clone's folder", &folder), ("the cargo home", &home)] {
            assert!(
                !contains(&bootstrap, needle),
                "{} holds {what} ({})",
                path.display(),
                String::from_utf8_lossy(needle)
            );
        }
    }
}
