//! The rendered templates pass cfn-lint (no error, no warning) and checkov
//! (no failed check) for every shipped environment. The pinned tools are
//! installed by `.ci/tools.sh`; `CFN_LINT` and `CHECKOV` name them.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use pipeline_cli::spec::Loader;
use pipeline_cli::synth::synthesize;

fn tool(var: &str, venv: &str, bin: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(var) {
        return PathBuf::from(path);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let cache =
        std::env::var_os("XDG_CACHE_HOME").map_or_else(|| home.join(".cache"), PathBuf::from);
    let path = cache
        .join("pipeline-tools")
        .join(venv)
        .join("bin")
        .join(bin);
    assert!(
        path.exists(),
        "{bin} is not installed: run `source .ci/tools.sh` (or set {var})"
    );
    path
}

/// An ad-hoc environment whose functions ship as container images.
const IMAGES: &str = "extends: dev
functions:
  ingest: {package: image}
  loader: {package: image, base_image: public.ecr.aws/lambda/provided:al2023}
  query: {package: image, architecture: x86_64}
";

/// Synthesises every shipped environment, and one whose functions are
/// images, into a temporary directory.
fn synthesised() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let specs = common::workspace(&[("pr-7.yaml", IMAGES)]);
    for env in ["dit", "uat", "prod"] {
        std::fs::copy(
            common::repo()
                .join("environments")
                .join(format!("{env}.yaml")),
            specs
                .path()
                .join("environments")
                .join(format!("{env}.yaml")),
        )
        .expect("copy spec");
    }
    let mut loader = Loader::new(Some(specs.path().join("environments")));
    for env in ["dev", "dit", "uat", "prod", "pr-7"] {
        let env = loader.load(env).unwrap_or_else(|e| panic!("{env}: {e:?}"));
        let out = dir.path().join(&env.name);
        std::fs::create_dir_all(&out).expect("mkdir");
        for (name, text) in synthesize(&env).expect("synth").files {
            std::fs::write(out.join(name), text).expect("write");
        }
    }
    dir
}

fn templates(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for env in std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(Result::ok)
    {
        for file in std::fs::read_dir(env.path())
            .expect("read dir")
            .filter_map(Result::ok)
        {
            if file
                .file_name()
                .to_string_lossy()
                .ends_with(".template.json")
            {
                out.push(file.path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn cfn_lint_finds_nothing() {
    let dir = synthesised();
    let files = templates(dir.path());
    // Five templates (bootstrap and four stacks) for each of five environments.
    assert_eq!(files.len(), 25);
    let out = Command::new(tool("CFN_LINT", "cfn-lint", "cfn-lint"))
        .args(&files)
        .output()
        .expect("run cfn-lint");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text, "", "cfn-lint findings");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn checkov_fails_no_check() {
    let dir = synthesised();
    let out = Command::new(tool("CHECKOV", "checkov", "checkov"))
        .args([
            "--skip-download",
            "--quiet",
            "--compact",
            "--output",
            "json",
        ])
        .args(["--framework", "cloudformation", "openapi", "secrets"])
        .arg("--directory")
        .arg(dir.path())
        .output()
        .expect("run checkov");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "checkov output is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    // One report per framework that found files; secrets finds none when clean.
    let reports = match report {
        serde_json::Value::Array(items) => items,
        single => vec![single],
    };
    let mut passed = 0;
    for r in &reports {
        let summary = &r["summary"];
        let failed = summary["failed"].as_u64().unwrap_or(0);
        let failures: Vec<String> = r["results"]["failed_checks"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| format!("{} {} {}", c["check_id"], c["resource"], c["file_path"]))
            .collect();
        assert_eq!(failed, 0, "{} failed: {failures:#?}", r["check_type"]);
        passed += summary["passed"].as_u64().unwrap_or(0);
    }
    let types: Vec<&str> = reports
        .iter()
        .filter_map(|r| r["check_type"].as_str())
        .collect();
    assert!(types.contains(&"cloudformation"), "{types:?}");
    assert!(passed > 400, "only {passed} checks passed");
}
