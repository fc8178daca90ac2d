//! Judges nobody here wrote, on everything synth renders for every shipped
//! environment: cfn-lint with AWS's serverless rules (no error, no warning),
//! checkov (no failed check), and openapi-spec-validator on the API documents
//! (the clients' `openapi.json` and the REST API body in the app stack). The
//! pinned tools are installed by `.ci/tools.sh`; `CFN_LINT`, `CHECKOV` and
//! `OPENAPI_SPEC_VALIDATOR` name them.

use crate::common;

use pipeline_testkit::{Service, require};

use std::path::{Path, PathBuf};

use std::process::Command;

use pipeline_cli::spec::Loader;
use pipeline_cli::synth::synthesize;

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
    require!(Service::CfnLint);
    let dir = synthesised();
    let files = templates(dir.path());
    // Five templates (bootstrap and four stacks) for each of five environments.
    assert_eq!(files.len(), 25);
    let out = Command::new(Service::CfnLint.program())
        // AWS's serverless rules (cfn-lint-serverless), on top of the plain run.
        .args(["--append-rules", "cfn_lint_serverless.rules", "--"])
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
    require!(Service::Checkov);
    let dir = synthesised();
    let out = Command::new(Service::Checkov.program())
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

#[test]
fn openapi_documents_pass_the_validator() {
    require!(Service::OpenapiSpecValidator);
    let dir = synthesised();
    let mut documents = Vec::new();
    for env in std::fs::read_dir(dir.path())
        .expect("read dir")
        .filter_map(Result::ok)
    {
        let env = env.path();
        documents.push(env.join("openapi.json"));
        // The body API Gateway imports, with its extensions, as its own file.
        let app: serde_json::Value = serde_json::from_slice(
            &std::fs::read(env.join("app.template.json")).expect("app template"),
        )
        .expect("app template JSON");
        let body = &app["Resources"]["Api"]["Properties"]["Body"];
        assert!(body.is_object(), "no REST API body in {}", env.display());
        let file = env.join("rest-api-body.json");
        std::fs::write(&file, serde_json::to_vec(body).expect("body")).expect("write body");
        documents.push(file);
    }
    documents.sort();
    // Both documents of each of the five environments.
    assert_eq!(documents.len(), 10);
    let out = Command::new(Service::OpenapiSpecValidator.program())
        .args(&documents)
        .output()
        .expect("run openapi-spec-validator");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for doc in &documents {
        assert!(
            text.contains(&format!("{}: OK", doc.display())),
            "{}: {text}",
            doc.display()
        );
    }
}
