//! The `pipeline` binary, run for real in temporary directories; error texts
//! are compared word for word.

use crate::common;

use pipeline_testkit::{Service, require};

use common::{pipeline, repo, stderr, stdout, workspace};

const SEVERAL_MISTAKES: &str = "extends: dev
functions:
  ingest:
    memroy_mb: 512
    timeout_seconds: 60
  loader:
    architecture: arm
database:
  read_replicas: 9
  multi_az: \"yes\"
network:
  cidr: 10.40.1.0/16
datasets:
  events:
    primary_key: [event_idd]
";

#[test]
fn shipped_environments_are_valid() {
    let out = pipeline(&repo(), &["validate", "--all"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "ok: dev (environments/dev.yaml <- environments/base.yaml)\n\
         ok: dit (environments/dit.yaml <- environments/dev.yaml <- environments/base.yaml)\n\
         ok: uat (environments/uat.yaml <- environments/base.yaml)\n\
         ok: prod (environments/prod.yaml <- environments/base.yaml)\n"
    );
}

#[test]
fn every_mistake_is_reported_with_its_place() {
    let ws = workspace(&[("pr-7.yaml", SEVERAL_MISTAKES)]);
    let out = pipeline(ws.path(), &["validate", "--env", "pr-7"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stdout(&out), "");
    let expected = r#"  × unknown key `memroy_mb` in `functions.ingest`
   ╭─[environments/pr-7.yaml:4:5]
 3 │   ingest:
 4 │     memroy_mb: 512
   ·     ────┬────
   ·         ╰── unknown key
 5 │     timeout_seconds: 60
   ╰────
  help: did you mean `memory_mb`?

  × `functions.ingest.timeout_seconds` must be at most 29, found 60
   ╭─[environments/pr-7.yaml:5:22]
 4 │     memroy_mb: 512
 5 │     timeout_seconds: 60
   ·                      ─┬
   ·                       ╰── longer than API Gateway waits
 6 │   loader:
   ╰────
  help: API Gateway ends a request after 29 seconds, so `ingest` cannot usefully run longer

  × `functions.loader.architecture` must be one of `x86_64`, `arm64`, found `arm`
   ╭─[environments/pr-7.yaml:7:19]
 6 │   loader:
 7 │     architecture: arm
   ·                   ─┬─
   ·                    ╰── not an allowed value
 8 │ database:
   ╰────
  help: did you mean `arm64`?

  × `database.read_replicas` must be at most 5, found 9
    ╭─[environments/pr-7.yaml:9:18]
  8 │ database:
  9 │   read_replicas: 9
    ·                  ┬
    ·                  ╰── too large
 10 │   multi_az: "yes"
    ╰────
  help: Number of read replicas serving queries, from 0 to 5.

  × `database.multi_az` must be true or false, found a string
    ╭─[environments/pr-7.yaml:10:13]
  9 │   read_replicas: 9
 10 │   multi_az: "yes"
    ·             ──┬──
    ·               ╰── expected true or false
 11 │ network:
    ╰────
  help: Keep a synchronous standby in a second availability zone.

  × `network.cidr` has host bits set: `10.40.1.0/16`
    ╭─[environments/pr-7.yaml:12:9]
 11 │ network:
 12 │   cidr: 10.40.1.0/16
    ·         ──────┬─────
    ·               ╰── not the start of the block
 13 │ datasets:
    ╰────
  help: did you mean `10.40.0.0/16`?

  × dataset `events`: `primary_key` names `event_idd`, which is not a column
    ╭─[environments/pr-7.yaml:15:19]
 14 │   events:
 15 │     primary_key: [event_idd]
    ·                   ────┬────
    ·                       ╰── here
    ╰────
  help: did you mean `event_id`?

  × `pr-7` has 7 problems
  help: fix the problems above; nothing was sent to AWS

"#;
    assert_eq!(stderr(&out), expected);
}

#[test]
fn problems_come_as_json_with_file_line_and_column() {
    let ws = workspace(&[("pr-7.yaml", SEVERAL_MISTAKES)]);
    let out = pipeline(
        ws.path(),
        &["--output", "json", "validate", "--env", "pr-7"],
    );
    assert_eq!(out.status.code(), Some(2));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json report");
    let places: Vec<String> = report["environments"][0]["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| {
            format!(
                "{}:{}:{} {}",
                p["file"].as_str().unwrap_or(""),
                p["line"],
                p["column"],
                p["message"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        places,
        vec![
            "environments/pr-7.yaml:4:5 unknown key `memroy_mb` in `functions.ingest`",
            "environments/pr-7.yaml:5:22 `functions.ingest.timeout_seconds` must be at most 29, found 60",
            "environments/pr-7.yaml:7:19 `functions.loader.architecture` must be one of `x86_64`, `arm64`, found `arm`",
            "environments/pr-7.yaml:9:18 `database.read_replicas` must be at most 5, found 9",
            "environments/pr-7.yaml:10:13 `database.multi_az` must be true or false, found a string",
            "environments/pr-7.yaml:12:9 `network.cidr` has host bits set: `10.40.1.0/16`",
            "environments/pr-7.yaml:15:19 dataset `events`: `primary_key` names `event_idd`, which is not a column",
        ]
    );
    let error: serde_json::Value = serde_json::from_slice(&out.stderr).expect("json error");
    assert_eq!(error["error"]["code"], "invalid_spec");
}

#[test]
fn cross_field_rules_point_at_the_inherited_value() {
    let spec = "extends: dev
rollout:
  strategy: canary
  percent: 10
database:
  deletion_protection: true
queue:
  visibility_timeout_seconds: 600
monitoring:
  log_retention_days: 10
";
    let ws = workspace(&[("pr-8.yaml", spec)]);
    let out = pipeline(
        ws.path(),
        &["--output", "json", "validate", "--env", "pr-8"],
    );
    assert_eq!(out.status.code(), Some(2));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json report");
    let problems = report["environments"][0]["problems"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let lines: Vec<String> = problems
        .iter()
        .map(|p| {
            format!(
                "{}:{} {} | {}",
                p["file"].as_str().unwrap_or(""),
                p["line"],
                p["message"].as_str().unwrap_or(""),
                p["help"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        lines,
        vec![
            "environments/pr-8.yaml:3 a canary rollout needs `rollout.bake_minutes` | add `bake_minutes:` under `rollout`",
            "environments/pr-8.yaml:3 a canary rollout needs gate alarms | list alarms under `rollout.alarms`, such as `[ingest-errors, loader-errors, query-errors, api-5xx]`",
            "environments/pr-8.yaml:8 `queue.visibility_timeout_seconds` must be at least 6 times the loader's timeout (1800), found 600 | a message must stay hidden while the loader retries it, or it is delivered again mid-load; AWS advises six times the function timeout",
            "environments/pr-8.yaml:10 CloudWatch Logs cannot keep logs for 10 days | the nearest allowed value is 7; allowed: 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653",
            "environments/base.yaml:16 this environment is prod-like (deletion protection is on) but its API has no web ACL | set `waf: {rate_limit: 2000}` (requests per client address in 5 minutes), or waive the rule with `waivers: [{rule: no-waf, reason: \"...\"}]`",
            "environments/base.yaml:53 this environment is prod-like (deletion protection is on) but its database is not multi-AZ | set `multi_az: true`, or waive the rule with `waivers: [{rule: single-az, reason: \"...\"}]`",
        ]
    );
}

#[test]
fn a_written_waiver_allows_a_single_az_prod_like_environment() {
    let spec = "extends: dev
api:
  waf: {rate_limit: 1000}
database:
  deletion_protection: true
waivers:
  - rule: single-az
    reason: demo environment that must survive teardown scripts
";
    let ws = workspace(&[("demo.yaml", spec)]);
    let out = pipeline(ws.path(), &["validate", "--env", "demo"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // The same waiver on an environment that does not need it is an error.
    let ws = workspace(&[(
        "demo.yaml",
        "extends: dev\nwaivers:\n  - rule: single-az\n    reason: not needed at all here\n",
    )]);
    let out = pipeline(ws.path(), &["validate", "--env", "demo"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("× this waiver waives a rule the environment does not break"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn extends_errors_name_the_file_and_suggest() {
    let ws = workspace(&[
        ("pr-9.yaml", "extends: pr-10\n"),
        ("pr-10.yaml", "extends: pr-9\n"),
        ("pr-11.yaml", "extends: dve\n"),
    ]);
    let out = pipeline(ws.path(), &["validate", "--env", "pr-9"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "  × `extends` makes a cycle: pr-9 -> pr-10 -> pr-9
   ╭─[environments/pr-10.yaml:1:10]
 1 │ extends: pr-9
   ·          ──┬─
   ·            ╰── cycle
   ╰────
  help: an environment cannot extend itself, directly or through others

  × `pr-9` has 1 problem
  help: fix the problems above; nothing was sent to AWS

"
    );
    let out = pipeline(ws.path(), &["validate", "--env", "pr-11"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "  × `pr-11` extends `dve`, which does not exist
   ╭─[environments/pr-11.yaml:1:10]
 1 │ extends: dve
   ·          ─┬─
   ·           ╰── no such environment
   ╰────
  help: did you mean `dev`?

  × `pr-11` has 1 problem
  help: fix the problems above; nothing was sent to AWS

"
    );
}

#[test]
fn yaml_syntax_errors_have_a_position() {
    let ws = workspace(&[("pr-12.yaml", "functions:\n  ingest: [1, 2\n")]);
    let out = pipeline(ws.path(), &["validate", "--env", "pr-12"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with(
            "  × this is not valid YAML: while parsing a flow sequence, expected ',' or ']'\n   ╭─[environments/pr-12.yaml:3:1]\n"
        ),
        "{}",
        stderr(&out)
    );
}

/// A "billion laughs": every level holds nine aliases of the level before, so
/// `i` would expand to 9^9 copies of `x`.
const ALIAS_BOMB: &str = "a: &a [x, x, x, x, x, x, x, x, x]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
";

#[test]
fn an_alias_bomb_stops_at_the_alias_that_passes_the_budget() {
    let ws = workspace(&[("pr-13.yaml", ALIAS_BOMB)]);
    let out = pipeline(ws.path(), &["validate", "--env", "pr-13"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    // a to d copy 8289 nodes; the first `*d` of `e` would copy 7381 more.
    assert_eq!(
        stderr(&out),
        "  × aliases expand to more than 10000 nodes
   ╭─[environments/pr-13.yaml:5:8]
 4 │ d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
 5 │ e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
   ·        ─┬
   ·         ╰── this alias passes the limit
 6 │ f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
   ╰────
  help: write the values out or use fewer nested aliases

  × `pr-13` has 1 problem
  help: fix the problems above; nothing was sent to AWS

"
    );
}

/// The first `len` bytes of `text`, for assertion messages about huge outputs.
fn head(text: &str, len: usize) -> &str {
    let mut end = len.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[test]
fn a_ten_mebibyte_value_is_refused_at_the_line_limit() {
    let spec = format!(
        "functions:\n  ingest:\n    memory_mb: {}\n",
        "x".repeat(10 << 20)
    );
    let ws = workspace(&[("pr-14.yaml", &spec)]);
    let out = pipeline(ws.path(), &["validate", "--env", "pr-14"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{}", head(&err, 2000));
    assert_eq!(stdout(&out), "");
    assert!(
        err.starts_with(
            "  × this line is longer than 10000 characters\n   ╭─[environments/pr-14.yaml:3:10001]\n"
        ),
        "{}",
        head(&err, 2000)
    );
    assert!(
        err.ends_with(
            "  help: break a long value over several lines; inside double quotes, end each line with `\\`

  × `pr-14` has 1 problem
  help: fix the problems above; nothing was sent to AWS

"
        ),
        "{}",
        &err[err.len().saturating_sub(2000)..]
    );
}

#[test]
fn a_ten_mebibyte_list_is_refused_at_the_size_limit() {
    // 1.7 million short lines: a legal document, but ten times the size limit.
    let spec = format!("tags:\n{}", "  - v\n".repeat((10 << 20) / 6));
    let ws = workspace(&[("pr-15.yaml", &spec)]);
    let out = pipeline(ws.path(), &["validate", "--env", "pr-15"]);
    assert_eq!(out.status.code(), Some(2), "{}", head(&stderr(&out), 2000));
    assert_eq!(stdout(&out), "");
    // Byte 1048576 is the fifth of line 174763: (1048576 - 6) / 6 lines of
    // items follow `tags:`, and 4 bytes are left over.
    assert_eq!(
        stderr(&out),
        "  × this file is longer than 1 MiB
        ╭─[environments/pr-15.yaml:174763:5]
 174762 │   - v
 174763 │   - v
        ·     ▲
        ·     ╰── the limit is passed here
 174764 │   - v
        ╰────
  help: a spec holds one environment's settings; keep data and generated content out of it

  × `pr-15` has 1 problem
  help: fix the problems above; nothing was sent to AWS

"
    );
}

#[test]
fn unknown_environments_are_usage_errors() {
    let ws = workspace(&[]);
    let out = pipeline(ws.path(), &["synth", "--env", "dve"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "  × there is no environment `dve`\n  help: did you mean `dev`? (run `pipeline envs` to list them)\n\n"
    );
    let out = pipeline(ws.path(), &["synth", "--env", "Bad_Name"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "  × `Bad_Name` cannot name an environment\n  help: environment names take 1 to 12 lower case letters, digits and `-`, starting with a letter\n\n"
    );
    let out = pipeline(ws.path(), &["synth"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "  × no environment selected\n  help: pass `--env NAME` or `--all`\n\n"
    );
}

#[test]
fn an_ad_hoc_environment_synthesises() {
    let ws = workspace(&[(
        "pr-123.yaml",
        "extends: dev\nfunctions:\n  loader: {memory_mb: 2048}\n",
    )]);
    let out = pipeline(ws.path(), &["synth", "--env", "pr-123", "--out", "build"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let app = std::fs::read_to_string(ws.path().join("build/pr-123/app.template.json"))
        .expect("app template");
    let app: serde_json::Value = serde_json::from_str(&app).expect("json");
    let loader = &app["Resources"]["LoaderFunction"]["Properties"];
    assert_eq!(loader["MemorySize"], 2048);
    assert_eq!(loader["FunctionName"], "pipeline-pr-123-loader");
    let manifest =
        std::fs::read_to_string(ws.path().join("build/pr-123/manifest.json")).expect("manifest");
    let manifest: serde_json::Value = serde_json::from_str(&manifest).expect("json");
    assert_eq!(manifest["stacks"][0]["name"], "pipeline-pr-123-network");
}

#[test]
fn envs_lists_key_settings() {
    let out = pipeline(&repo(), &["envs"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "ENV   REGION        AZS  DATABASE        MULTI-AZ  REPLICAS  PROTECTED  ROLLOUT            LOGS  AUTH
dev   eu-west-1       2  db.t4g.micro    no               0  no         all-at-once          7d  api_key
dit   eu-west-1       2  db.t4g.micro    no               0  no         all-at-once         14d  api_key
uat   eu-west-1       2  db.t4g.medium   yes              1  no         canary 10%/5m       90d  cognito
prod  eu-west-1       3  db.r7g.large    yes              2  yes        canary 10%/5m      731d  cognito
"
    );
    let out = pipeline(&repo(), &["--output", "json", "envs"]);
    let listing: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(listing["environments"][3]["scale"]["read_replicas"], 2);
}

#[test]
fn built_in_environments_serve_when_there_is_no_directory() {
    let empty = tempfile::tempdir().expect("temp dir");
    let out = pipeline(empty.path(), &["validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 4);
}

#[test]
fn schema_describes_one_file_or_a_merged_environment() {
    let out = pipeline(&repo(), &["schema"]);
    assert_eq!(out.status.code(), Some(0));
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json schema");
    assert_eq!(schema["title"], "pipeline environment");
    assert!(schema.get("required").is_none());
    assert_eq!(
        schema["$defs"]["Function"]["properties"]["memory_mb"]["maximum"],
        10240
    );
    let out = pipeline(&repo(), &["schema", "--merged"]);
    let merged: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json schema");
    assert!(
        merged["required"]
            .as_array()
            .is_some_and(|r| r.contains(&serde_json::json!("datasets")))
    );
}

#[test]
fn every_command_has_help() {
    for args in [
        vec!["--help"],
        vec!["validate", "--help"],
        vec!["synth", "--help"],
        vec!["envs", "--help"],
        vec!["schema", "--help"],
        vec!["local", "--help"],
        vec!["push", "--help"],
        vec!["query", "--help"],
        vec!["build", "--help"],
        vec!["bootstrap", "--help"],
        vec!["deploy", "--help"],
        vec!["diff", "--help"],
        vec!["status", "--help"],
        vec!["outputs", "--help"],
        vec!["destroy", "--help"],
        vec!["logs", "--help"],
        vec!["recover", "--help"],
    ] {
        let out = pipeline(&repo(), &args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(stdout(&out).contains("Usage: pipeline"), "{args:?}");
    }
}

/// `validate` and `synth` never talk to the network: traced with strace,
/// the process opens no internet socket.
#[test]
fn validate_and_synth_open_no_network_socket() {
    require!(Service::Strace);
    let ws = workspace(&[]);
    let trace = ws.path().join("trace");
    let status = std::process::Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=socket,connect", "-o"])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_pipeline"))
        .args(["synth", "--all", "--out", "build"])
        .current_dir(ws.path())
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run strace");
    assert!(status.success());
    let trace = std::fs::read_to_string(trace).expect("trace");
    let network: Vec<&str> = trace.lines().filter(|l| l.contains("AF_INET")).collect();
    assert!(network.is_empty(), "network calls: {network:?}");
    assert!(ws.path().join("build/dev/app.template.json").exists());
}

/// The error of a `--output json` run: exit code, message and help.
fn json_error(out: &std::process::Output) -> (Option<i32>, String, String) {
    let err = stderr(out);
    let value: serde_json::Value = serde_json::from_str(err.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {err}"));
    (
        out.status.code(),
        value["error"]["message"].as_str().unwrap_or("").to_string(),
        value["error"]["help"].as_str().unwrap_or("").to_string(),
    )
}

#[test]
fn a_prod_like_environment_is_destroyed_only_with_force() {
    let uat = std::fs::read_to_string(repo().join("environments/uat.yaml")).expect("uat");
    let ws = workspace(&[("live.yaml", &uat)]);
    // No AWS endpoint is reachable: the refusal comes before any call.
    let out = common::command(
        ws.path(),
        &["--output", "json", "destroy", "--env", "live", "--yes"],
    )
    .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    .output()
    .expect("run");
    assert_eq!(
        json_error(&out),
        (
            Some(2),
            "`live` is prod-like (deletion protection or gradual rollouts); nothing was deleted"
                .into(),
            "pass --force to destroy it anyway".into()
        )
    );
}

#[test]
fn building_without_cargo_lambda_says_how_to_install_it() {
    let ws = workspace(&[]);
    let out = common::command(&repo(), &["--output", "json", "--environments"])
        .arg(ws.path().join("environments"))
        .args(["build", "--env", "dev", "--rds-ca-bundle", "Cargo.toml"])
        // A PATH with cargo but without cargo-lambda.
        .env(
            "PATH",
            std::path::Path::new(env!("CARGO"))
                .parent()
                .expect("cargo dir"),
        )
        .output()
        .expect("run");
    assert_eq!(
        json_error(&out),
        (
            Some(1),
            "cargo-lambda is not installed".into(),
            "install it with `pip install cargo-lambda ziglang` (seconds) or `cargo install cargo-lambda`, or pass prebuilt zips with `--artifacts DIR`".into()
        )
    );
}

#[test]
fn building_outside_the_workspace_points_to_artifacts() {
    let ws = workspace(&[]);
    let out = pipeline(ws.path(), &["--output", "json", "build", "--env", "dev"]);
    let (code, message, help) = json_error(&out);
    assert_eq!(code, Some(1));
    assert!(
        message.ends_with(" is not in the pipeline's workspace"),
        "{message}"
    );
    assert_eq!(
        help,
        "run the command in the folder with Cargo.toml and functions/, or pass prebuilt packages with --artifacts DIR"
    );
}

/// With `auth: iam`, `query` signs its request with SigV4 for API
/// Gateway (`execute-api`, the spec's region), with the AWS credentials of
/// the environment. A stand-in API keeps the request's headers; before,
/// the request went unsigned and API Gateway would refuse it.
#[test]
fn query_signs_its_requests_with_sigv4_when_the_api_takes_iam() {
    use std::io::{BufRead, BufReader, Write};
    let ws = workspace(&[("sig.yaml", "extends: dev\napi:\n  auth: iam\n")]);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("a request");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("read");
            if line.trim().is_empty() {
                break;
            }
            head.push(line.trim().to_string());
        }
        let body = r#"{"records":[],"next_cursor":null}"#;
        write!(
            &stream,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("answer");
        head
    });
    let out = common::command(
        ws.path(),
        &["query", "--env", "sig", "-d", "events", "--url", &url],
    )
    .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    .env(
        "AWS_SECRET_ACCESS_KEY",
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    )
    .env_remove("AWS_SESSION_TOKEN")
    .env_remove("AWS_PROFILE")
    .output()
    .expect("run pipeline");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let head = server.join().expect("server");
    let header = |name: &str| {
        head.iter()
            .find_map(|h| {
                h.split_once(':')
                    .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_default()
    };
    let authorization = header("authorization");
    assert!(
        authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
            && authorization.contains("/eu-west-1/execute-api/aws4_request")
            && authorization.contains("Signature="),
        "{head:?}"
    );
    assert!(!header("x-amz-date").is_empty(), "{head:?}");
}

/// `push` and `smoke` print the spec's problems, with file, line and
/// column, before the summary that points at them. Before, they printed
/// only "`bad` has 1 problems" and "fix the problems above", with nothing
/// above.
#[test]
fn push_and_smoke_print_the_specs_problems() {
    let ws = workspace(&[("bad.yaml", "extends: dev\nqueue:\n  batch_size: 0\n")]);
    std::fs::write(ws.path().join("one.ndjson"), "{}\n").expect("write");
    for args in [
        vec!["push", "--env", "bad", "-d", "events", "one.ndjson"],
        vec!["smoke", "--env", "bad"],
    ] {
        let out = pipeline(ws.path(), &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let text = stderr(&out);
        assert!(
            text.contains("environments/bad.yaml:3:")
                && text.contains("batch_size")
                && text.contains("fix the problems above"),
            "{args:?}: {text}"
        );
    }
}
