//! The deploy commands (the real binary) against moto: bootstrap, deploy
//! from nothing, an unchanged redeploy, one changed function, diff exit
//! codes, status, outputs, logs, the deploy lock, the account guard and
//! destroy. moto runs through `tests/moto/server.py`, which closes the gaps
//! between moto's CloudFormation and AWS's that our templates meet (see its
//! comments). What moto cannot show (failures, rollbacks, events per
//! resource, recover) is tested against a scripted CloudFormation in
//! `cli/src/deploy/tests.rs`.

use crate::common;

use pipeline_testkit::{Service, require};

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::moto::Moto;

use serde_json::Value;

/// A scratch project: environments, prebuilt packages, and moto.
struct Project {
    dir: tempfile::TempDir,
    moto: Moto,
}

const FUNCTIONS: [&str; 3] = ["ingest", "loader", "query"];

impl Project {
    fn new(extra: &[(&str, &str)]) -> Project {
        Project::with_moto(extra, &[])
    }

    /// A project whose moto runs with `moto_env` (its fault injections).
    fn with_moto(extra: &[(&str, &str)], moto_env: &[(&str, &str)]) -> Project {
        let dir = common::workspace(extra);
        let project = Project {
            dir,
            moto: common::moto::start_with_env(moto_env),
        };
        for f in FUNCTIONS {
            project.package(f, "v1");
        }
        project
    }

    /// Writes a function's package; another `version` is other code.
    fn package(&self, function: &str, version: &str) {
        common::package(self.dir.path(), function, version);
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = common::command(self.dir.path(), args);
        cmd.env("AWS_ENDPOINT_URL", &self.moto.url)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("PIPELINE_ARTIFACTS", self.dir.path().join("artifacts"))
            .env("PIPELINE_POLL_MS", "20")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION")
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run pipeline")
    }

    /// Runs a command that must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "pipeline {args:?}\nstdout:\n{}\nstderr:\n{}",
            common::stdout(&out),
            common::stderr(&out)
        );
        common::stdout(&out)
    }

    /// The result of a `--output json` run: the document, or the last of
    /// its JSON lines (the events come first).
    fn json(&self, args: &[&str]) -> Value {
        let stdout = self.ok(args);
        serde_json::from_str(&stdout).unwrap_or_else(|_| {
            let last = stdout.lines().last().unwrap_or_default();
            serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {stdout}"))
        })
    }

    /// Runs a command that must fail with `--output json`: its exit code
    /// and its error's message and help, word for word.
    fn fails(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        failure(&self.run(&all))
    }

    async fn sdk(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("eu-west-1"))
            .endpoint_url(&self.moto.url)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .load()
            .await
    }

    async fn s3(&self) -> aws_sdk_s3::Client {
        aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&self.sdk().await)
                .force_path_style(true)
                .build(),
        )
    }

    async fn objects(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let out = self
            .s3()
            .await
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .send()
            .await
            .expect("list objects");
        out.contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect()
    }
}

/// Writes log events to a new stream, `(milliseconds from now, message)`.
async fn put_events(p: &Project, group: &str, stream: &str, events: &[(i64, &str)]) {
    let logs = aws_sdk_cloudwatchlogs::Client::new(&p.sdk().await);
    logs.create_log_stream()
        .log_group_name(group)
        .log_stream_name(stream)
        .send()
        .await
        .expect("stream");
    let now = chrono::Utc::now().timestamp_millis();
    let mut put = logs
        .put_log_events()
        .log_group_name(group)
        .log_stream_name(stream);
    for (offset, message) in events {
        put = put.log_events(
            aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                .timestamp(now + offset)
                .message(*message)
                .build()
                .expect("event"),
        );
    }
    put.send().await.expect("put events");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

/// The exit code and the JSON error (message, help) of a failed run.
fn failure(out: &Output) -> (Option<i32>, String, String) {
    let err = common::stderr(out);
    let line = err.lines().last().unwrap_or_default();
    let value: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {err}"));
    (
        out.status.code(),
        value["error"]["message"].as_str().unwrap_or("").to_string(),
        value["error"]["help"].as_str().unwrap_or("").to_string(),
    )
}

fn stack_statuses(status: &Value) -> Vec<(String, String)> {
    status["stacks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or("").to_string(),
                s["status"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn bootstrap_deploy_redeploy_change_inspect_and_destroy_dev() {
    require!(Service::Moto);
    let p = Project::new(&[]);
    let rt = runtime();

    // Nothing can be deployed before the bootstrap stack exists.
    assert_eq!(
        p.fails(&["deploy", "--env", "dev", "--yes"]),
        (
            Some(2),
            "environment `dev` is not bootstrapped: there is no stack pipeline-dev-bootstrap"
                .into(),
            "run `pipeline bootstrap --env dev` once, then deploy again".into()
        )
    );

    let boot = p.json(&["--output", "json", "bootstrap", "--env", "dev"]);
    let bucket = boot["assets_bucket"].as_str().expect("bucket").to_string();
    assert_eq!(bucket, "pipeline-dev-assets-123456789012-eu-west-1");
    assert!(
        boot["repository_uri"]
            .as_str()
            .is_some_and(|u| u.ends_with("/pipeline-dev-functions"))
    );
    // Bootstrapping again changes nothing.
    let again = p.ok(&["bootstrap", "--env", "dev"]);
    assert!(
        again.starts_with("pipeline-dev-bootstrap: no changes\n"),
        "{again}"
    );

    // Every stack is new.
    let out = p.run(&["diff", "--env", "dev", "--exit-code"]);
    assert_eq!(code(&out), Some(2), "{}", common::stderr(&out));
    let diff = common::stdout(&out);
    for stack in ["network", "data", "monitoring", "app"] {
        assert!(
            diff.contains(&format!("pipeline-dev-{stack}: create\n")),
            "{diff}"
        );
    }
    assert!(diff.contains("  + Database "), "{diff}");

    // Without a terminal, changes need --yes; no stack is left behind (the
    // packages are uploaded: they are named by their content).
    assert_eq!(
        p.fails(&["deploy", "--env", "dev"]),
        (
            Some(2),
            "stack pipeline-dev-network has changes, and there is no terminal to confirm them"
                .into(),
            "review the changes with `pipeline diff`, then deploy with `--yes`".into()
        )
    );
    assert_eq!(rt.block_on(p.objects(&bucket, "assets/")).len(), 3);
    let status = p.json(&["--output", "json", "status", "--env", "dev"]);
    assert!(
        stack_statuses(&status)[1..]
            .iter()
            .all(|(_, s)| s == "NOT_DEPLOYED"),
        "{status}"
    );

    // From nothing: every stack created (the packages are there already).
    let deployed = p.json(&["--output", "json", "deploy", "--env", "dev", "--yes"]);
    assert_eq!(deployed["event"], "deployed");
    assert_eq!(
        (&deployed["packages"], &deployed["uploaded"]),
        (&3.into(), &0.into())
    );
    let changed: Vec<bool> = deployed["stacks"]
        .as_array()
        .expect("stacks")
        .iter()
        .map(|s| s["changed"] == true)
        .collect();
    assert_eq!(changed, [true; 4]);
    let api_url = deployed["outputs"]["ApiUrl"].as_str().expect("ApiUrl");
    assert!(
        api_url.starts_with("https://")
            && api_url.ends_with(".execute-api.eu-west-1.amazonaws.com/live"),
        "{api_url}"
    );
    let written: Value = serde_json::from_slice(
        &std::fs::read(p.dir.path().join("out/dev/outputs.json")).expect("outputs.json"),
    )
    .expect("json");
    assert_eq!(written["pipeline-dev-app"]["ApiUrl"], api_url);
    assert!(
        written["pipeline-dev-data"]["DbSecretArn"]
            .as_str()
            .is_some_and(|a| a.starts_with("arn:aws:secretsmanager:"))
    );
    let mut assets = rt.block_on(p.objects(&bucket, "assets/"));
    assets.sort();
    assert_eq!(assets.len(), 3, "{assets:?}");

    // Unchanged: nothing uploaded, nothing executed.
    let text = p.ok(&["deploy", "--env", "dev", "--yes"]);
    assert!(
        text.contains(
            "dev is up to date: no changes in 4 stacks\npackages: 0 uploaded, 3 already there; versions published: 0\n"
        ),
        "{text}"
    );
    for stack in ["network", "data", "monitoring", "app"] {
        assert!(
            text.contains(&format!("pipeline-dev-{stack}: no changes\n")),
            "{text}"
        );
    }
    let out = p.run(&["diff", "--env", "dev", "--exit-code"]);
    assert_eq!(
        code(&out),
        Some(0),
        "{}{}",
        common::stdout(&out),
        common::stderr(&out)
    );
    assert!(common::stdout(&out).ends_with("dev is up to date\n"));

    // One function changes: only its package goes up, only the app stack moves.
    p.package("ingest", "v2");
    let out = p.run(&["diff", "--env", "dev", "--exit-code"]);
    assert_eq!(code(&out), Some(2), "{}", common::stderr(&out));
    let diff = common::stdout(&out);
    assert!(
        diff.contains("pipeline-dev-network: no changes\n")
            && diff.contains("pipeline-dev-app: update\n"),
        "{diff}"
    );
    let deployed = p.json(&["--output", "json", "deploy", "--env", "dev", "--yes"]);
    assert_eq!(deployed["uploaded"], 1);
    assert_eq!(deployed["versions_published"], 1);
    let changed: Vec<bool> = deployed["stacks"]
        .as_array()
        .expect("stacks")
        .iter()
        .map(|s| s["changed"] == true)
        .collect();
    assert_eq!(changed, [false, false, false, true]);
    assert_eq!(rt.block_on(p.objects(&bucket, "assets/")).len(), 4);
    // The function runs the new package.
    let ingest = deployed["outputs"]["IngestFunctionName"]
        .as_str()
        .expect("name")
        .to_string();
    let new_zip = std::fs::read(p.dir.path().join("artifacts/ingest.zip")).expect("zip");
    let sha = rt.block_on(async {
        let lambda = aws_sdk_lambda::Client::new(&p.sdk().await);
        let f = lambda
            .get_function()
            .function_name(&ingest)
            .send()
            .await
            .expect("function");
        f.configuration()
            .and_then(|c| c.code_sha256().map(str::to_string))
    });
    use base64::Engine as _;
    use sha2::Digest as _;
    let expected = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&new_zip));
    assert_eq!(sha.as_deref(), Some(expected.as_str()));

    // Status and outputs.
    let status = p.json(&["--output", "json", "status", "--env", "dev"]);
    let statuses = stack_statuses(&status);
    assert_eq!(
        statuses[0],
        ("pipeline-dev-bootstrap".into(), "CREATE_COMPLETE".into())
    );
    assert_eq!(
        statuses[4],
        ("pipeline-dev-app".into(), "UPDATE_COMPLETE".into())
    );
    let functions: Vec<(&str, &str)> = status["functions"]
        .as_array()
        .expect("functions")
        .iter()
        .map(|f| {
            (
                f["function"].as_str().unwrap_or(""),
                f["live_version"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        functions,
        [("ingest", "2"), ("loader", "1"), ("query", "1")]
    );
    let outputs = p.json(&["--output", "json", "outputs", "--env", "dev"]);
    assert_eq!(outputs["pipeline-dev-app"]["ApiUrl"], api_url);
    let text = p.ok(&["outputs", "--env", "dev"]);
    assert!(
        text.contains(&format!("  ApiUrl                       {api_url}\n")),
        "{text}"
    );

    // Logs of a function, filtered.
    let group = written["pipeline-dev-monitoring"]["IngestLogGroupName"]
        .as_str()
        .expect("log group")
        .to_string();
    rt.block_on(put_events(
        &p,
        &group,
        "s1",
        &[
            (-3_600_000, "an old ERROR"),
            (-1000, "batch stored"),
            (-500, "ERROR cannot reach the database"),
        ],
    ));
    let text = p.ok(&[
        "logs",
        "--env",
        "dev",
        "--function",
        "ingest",
        "--since",
        "10m",
        "--filter",
        "ERROR",
    ]);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.trim_end()
            .ends_with(" ERROR cannot reach the database"),
        "{text}"
    );
    let text = p.ok(&[
        "logs",
        "--env",
        "dev",
        "--function",
        "ingest",
        "--since",
        "2h",
    ]);
    assert_eq!(text.lines().count(), 3, "{text}");

    // --follow prints what arrives later, until Ctrl-C, which exits 0.
    let follow = [
        "--output",
        "json",
        "logs",
        "--env",
        "dev",
        "--function",
        "ingest",
        "--since",
        "1m",
        "--follow",
    ];
    let (mut child, rx) = p.start_until(&follow, |v| v["message"] == "batch stored");
    let next = || -> Value {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("a log line");
        serde_json::from_str(&line).expect("json")
    };
    assert_eq!(next()["message"], "ERROR cannot reach the database");
    rt.block_on(put_events(&p, &group, "s2", &[(0, "a later line")]));
    let later = next();
    assert_eq!(
        (&later["message"], &later["stream"]),
        (&"a later line".into(), &"s2".into())
    );
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    assert_eq!(child.wait().expect("wait").code(), Some(0));

    // Destroy: refused without a terminal unless --yes; says what is kept.
    assert_eq!(
        p.fails(&["destroy", "--env", "dev"]),
        (
            Some(2),
            "destroying `dev` needs a confirmation".into(),
            "pass --yes to destroy without a terminal".into()
        )
    );
    let text = p.ok(&["destroy", "--env", "dev", "--yes"]);
    assert!(
        text.ends_with("destroyed dev: 4 stacks deleted\n"),
        "{text}"
    );
    let order: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(": DELETE_COMPLETE after "))
        .map(|l| l.split(':').next().unwrap_or(""))
        .collect();
    assert_eq!(
        order,
        [
            "pipeline-dev-app",
            "pipeline-dev-monitoring",
            "pipeline-dev-data",
            "pipeline-dev-network"
        ]
    );
    let status = p.json(&["--output", "json", "status", "--env", "dev"]);
    let statuses = stack_statuses(&status);
    assert_eq!(
        statuses[0].1, "CREATE_COMPLETE",
        "the bootstrap stack stays"
    );
    assert!(
        statuses[1..].iter().all(|(_, s)| s == "NOT_DEPLOYED"),
        "{status}"
    );
}

#[test]
fn a_second_deploy_is_refused_while_the_first_holds_the_lock() {
    require!(Service::Moto);
    let p = Project::new(&[]);
    let boot = p.json(&["--output", "json", "bootstrap", "--env", "dev"]);
    let bucket = boot["assets_bucket"].as_str().expect("bucket").to_string();
    runtime().block_on(async {
        p.s3()
            .await
            .put_object()
            .bucket(&bucket)
            .key("locks/dev.json")
            .body(
                br#"{"started_at":"2026-11-27T10:00:00+00:00","by":"ci","pid":41}"#
                    .to_vec()
                    .into(),
            )
            .send()
            .await
            .expect("lock");
    });
    assert_eq!(
        p.fails(&["deploy", "--env", "dev", "--yes"]),
        (
            Some(2),
            "another deploy of `dev` is in progress (started 2026-11-27T10:00:00+00:00 by ci, pid 41)".into(),
            "wait for it to finish; if it died, deploy again with --force-unlock".into()
        )
    );
    let status = p.json(&["--output", "json", "status", "--env", "dev"]);
    assert_eq!(stack_statuses(&status)[1].1, "NOT_DEPLOYED");

    let deployed = p.json(&[
        "--output",
        "json",
        "deploy",
        "--env",
        "dev",
        "--yes",
        "--force-unlock",
    ]);
    assert_eq!(deployed["event"], "deployed");
    // The lock is gone once the deploy is done.
    assert!(runtime().block_on(p.objects(&bucket, "locks/")).is_empty());
}

#[test]
fn credentials_of_another_account_change_nothing() {
    require!(Service::Moto);
    let p = Project::new(&[("acct.yaml", "extends: dev\naccount: \"111111111111\"\n")]);
    assert_eq!(
        p.fails(&["bootstrap", "--env", "acct"]),
        (
            Some(2),
            "the AWS credentials are for account 123456789012, but the environment belongs to account 111111111111".into(),
            "use the profile of account 111111111111 (`--profile`, AWS_PROFILE), or fix `account` in the spec; nothing was changed".into()
        )
    );
    let status = p.json(&["--output", "json", "status", "--env", "acct"]);
    assert!(
        stack_statuses(&status)
            .iter()
            .all(|(_, s)| s == "NOT_DEPLOYED")
    );
}

#[test]
fn spec_errors_stop_a_deploy_before_any_aws_call() {
    require!(Service::Moto);
    let dir = common::workspace(&[("bad.yaml", "extends: dev\ndatabase:\n  read_replicas: 9\n")]);
    // An endpoint nobody listens on: a call would fail differently.
    let out = common::command(dir.path(), &["deploy", "--env", "bad", "--yes"])
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("PIPELINE_ARTIFACTS", dir.path())
        .output()
        .expect("run");
    assert_eq!(code(&out), Some(2));
    let err = common::stderr(&out);
    assert!(err.contains("bad.yaml:3:"), "{err}");
    assert!(err.contains("nothing was sent to AWS"), "{err}");
}

#[test]
fn a_missing_package_says_how_to_make_it() {
    require!(Service::Moto);
    let p = Project::new(&[]);
    std::fs::remove_file(p.dir.path().join("artifacts/query.zip")).expect("rm");
    let (code, message, help) = p.fails(&["deploy", "--env", "dev", "--yes"]);
    assert_eq!(code, Some(1));
    assert_eq!(
        message,
        format!(
            "there is no query.zip in {}",
            p.dir.path().join("artifacts").display()
        )
    );
    assert_eq!(
        help,
        "`pipeline build --env <env>` writes the packages to out/<env>/"
    );
}

const LIVE: &str = "extends: dev
database:
  multi_az: true
rollout:
  strategy: canary
  percent: 10
  bake_minutes: 1
  poll_seconds: 5
  alarms: [ingest-errors]
";

impl Project {
    /// Bootstraps and deploys an environment; the deploy's result.
    fn bootstrap_and_deploy(&self, env: &str) -> Value {
        self.ok(&["bootstrap", "--env", env]);
        self.json(&["--output", "json", "deploy", "--env", env, "--yes"])
    }

    /// Where the function's `live` alias points, and its other versions' weights.
    fn alias(&self, function: &str) -> Route {
        runtime().block_on(async {
            let lambda = aws_sdk_lambda::Client::new(&self.sdk().await);
            let a = lambda
                .get_alias()
                .function_name(function)
                .name("live")
                .send()
                .await
                .expect("alias");
            let mut weights: Vec<(String, f64)> = a
                .routing_config()
                .and_then(|r| r.additional_version_weights())
                .map(|w| w.iter().map(|(k, v)| (k.clone(), *v)).collect())
                .unwrap_or_default();
            weights.sort_by(|x, y| x.0.cmp(&y.0));
            (a.function_version().unwrap_or("").to_string(), weights)
        })
    }

    /// A parameter of a deployed stack, as DescribeStacks shows it.
    fn parameter(&self, stack: &str, key: &str) -> String {
        runtime().block_on(async {
            let cfn = aws_sdk_cloudformation::Client::new(&self.sdk().await);
            let stacks = cfn
                .describe_stacks()
                .stack_name(stack)
                .send()
                .await
                .expect("describe stacks");
            stacks
                .stacks()
                .first()
                .and_then(|s| {
                    s.parameters()
                        .iter()
                        .find(|p| p.parameter_key() == Some(key))
                })
                .and_then(|p| p.parameter_value())
                .unwrap_or_else(|| panic!("{stack} has no parameter {key}"))
                .to_string()
        })
    }

    /// A CloudWatch query API call to moto (which serves alarms that way).
    fn cloudwatch(&self, form: &[(&str, &str)]) {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let status = runtime().block_on(async {
            reqwest::Client::new()
                .post(format!("{}/", self.moto.url))
                .header("content-type", "application/x-www-form-urlencoded")
                .header(
                    "authorization",
                    "AWS4-HMAC-SHA256 Credential=testing/20260101/eu-west-1/monitoring/aws4_request, SignedHeaders=host, Signature=0",
                )
                .body(body)
                .send()
                .await
                .expect("cloudwatch")
                .status()
        });
        assert!(status.is_success(), "{status}");
    }

    fn set_alarm(&self, name: &str, state: &str, reason: &str) {
        self.cloudwatch(&[
            ("Action", "SetAlarmState"),
            ("Version", "2010-08-01"),
            ("AlarmName", name),
            ("StateValue", state),
            ("StateReason", reason),
        ]);
    }

    /// Queues what the next Lambda invocations answer (moto's scripted results).
    fn lambda_results(&self, results: &[&str]) {
        let status = runtime().block_on(async {
            reqwest::Client::new()
                .post(format!(
                    "{}/moto-api/static/lambda-simple/response",
                    self.moto.url
                ))
                .json(&serde_json::json!({"results": results, "region": "eu-west-1"}))
                .send()
                .await
                .expect("moto api")
                .status()
        });
        assert!(status.is_success(), "{status}");
    }

    /// Starts a command and waits for the JSON event line that `until`
    /// accepts; the running process, and the lines still to come.
    fn start_until(
        &self,
        args: &[&str],
        until: impl Fn(&Value) -> bool,
    ) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
        let mut child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pipeline");
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
                if tx.send(line.unwrap_or_default()).is_err() {
                    break;
                }
            }
        });
        loop {
            match rx.recv_timeout(Duration::from_secs(120)) {
                Ok(line) if serde_json::from_str::<Value>(&line).is_ok_and(|v| until(&v)) => {
                    return (child, rx);
                }
                Ok(_) => {}
                Err(_) => {
                    let _ = child.kill();
                    let out = child.wait_with_output().expect("wait");
                    panic!("the event awaited did not come: {}", common::stderr(&out));
                }
            }
        }
    }
}

fn shifted_to(percent: u64) -> impl Fn(&Value) -> bool {
    move |v| v["event"] == "shifted" && v["percent"] == percent
}

#[test]
fn a_canary_rolls_back_on_an_alarm_and_a_killed_one_is_promoted_or_aborted() {
    require!(Service::Moto);
    let p = Project::new(&[("live.yaml", LIVE)]);
    // The first versions take all the traffic at once: the aliases served
    // `$LATEST`, which takes no weights.
    let first = p.bootstrap_and_deploy("live");
    assert_eq!(first["rollout"], "all-at-once promoted");
    let ingest = first["outputs"]["IngestFunctionName"]
        .as_str()
        .expect("ingest")
        .to_string();
    assert_eq!(p.alias(&ingest), ("1".into(), vec![]));
    // moto's CloudFormation skips alarms: the gate alarm is made here.
    let alarm = "pipeline-live-ingest-errors";
    p.cloudwatch(&[
        ("Action", "PutMetricAlarm"),
        ("Version", "2010-08-01"),
        ("AlarmName", alarm),
        ("Namespace", "AWS/Lambda"),
        ("MetricName", "Errors"),
        ("Statistic", "Sum"),
        ("Period", "60"),
        ("EvaluationPeriods", "1"),
        ("Threshold", "1"),
        ("ComparisonOperator", "GreaterThanThreshold"),
    ]);

    // The gate alarms watch every version behind the alias, outside a
    // rollout, and the new version alone during its bake.
    let monitoring = "pipeline-live-monitoring";
    let gate = || p.parameter(monitoring, "IngestGateVersion");
    assert_eq!(gate(), "all");

    // New ingest code: 10% for the bake, until the alarm fires.
    p.package("ingest", "v2");
    let deploy = ["--output", "json", "deploy", "--env", "live", "--yes"];
    let (child, _lines) = p.start_until(&deploy, shifted_to(10));
    assert_eq!(p.alias(&ingest), ("1".into(), vec![("2".into(), 0.1)]));
    assert_eq!(gate(), "2");
    p.set_alarm(alarm, "ALARM", "Threshold Crossed: 1 datapoint [4.0] > 1.0");
    let out = child.wait_with_output().expect("deploy");
    assert_eq!(
        failure(&out),
        (
            Some(3),
            format!(
                "the rollout was rolled back: {alarm} is in ALARM (Threshold Crossed: 1 datapoint [4.0] > 1.0)"
            ),
            "all traffic is on the previous versions; fix the cause and deploy again".into()
        )
    );
    assert_eq!(p.alias(&ingest), ("1".into(), vec![]));
    assert_eq!(gate(), "all");
    p.set_alarm(alarm, "OK", "fixed");

    // A deploy killed mid-bake leaves the rollout visible; promote ends it.
    let (mut child, _lines) = p.start_until(&deploy, shifted_to(10));
    child.kill().expect("kill");
    child.wait().expect("wait");
    assert_eq!(
        p.fails(&["deploy", "--env", "live", "--yes", "--force-unlock"]),
        (
            Some(2),
            "a rollout of `live` is in flight: step 1/2, 10% on the new versions".into(),
            "finish it first: `pipeline rollout promote --env live` or `pipeline rollout abort --env live`".into()
        )
    );
    let state = p.json(&["--output", "json", "rollout", "status", "--env", "live"]);
    assert_eq!(
        (&state["phase"], &state["step"]),
        (&"in_progress".into(), &0.into())
    );
    let text = p.ok(&["rollout", "status", "--env", "live"]);
    assert!(
        text.starts_with("canary rollout of live: in progress, step 1/2, new versions take 10%\n"),
        "{text}"
    );
    // The killed deploy left the gates on the version it was baking.
    assert_eq!(gate(), "2");
    p.ok(&["rollout", "promote", "--env", "live"]);
    assert_eq!(p.alias(&ingest), ("2".into(), vec![]));
    assert_eq!(gate(), "all");

    // Killed again with newer code: abort sends the traffic back.
    p.package("ingest", "v3");
    let unlock = [
        "--output",
        "json",
        "deploy",
        "--env",
        "live",
        "--yes",
        "--force-unlock",
    ];
    let (mut child, _lines) = p.start_until(&unlock, shifted_to(10));
    child.kill().expect("kill");
    child.wait().expect("wait");
    assert_eq!(p.alias(&ingest), ("2".into(), vec![("3".into(), 0.1)]));
    assert_eq!(gate(), "3");
    let text = p.ok(&["rollout", "abort", "--env", "live", "--function", "ingest"]);
    assert!(
        text.starts_with("rollout aborted: all traffic is on the previous versions (ingest 2→3)"),
        "{text}"
    );
    assert_eq!(p.alias(&ingest), ("2".into(), vec![]));
    assert_eq!(gate(), "all");
    let state = p.json(&["--output", "json", "rollout", "status", "--env", "live"]);
    assert_eq!(state["phase"], "aborted");
}

#[test]
fn failed_migrations_or_smoke_invocations_move_no_traffic() {
    require!(Service::Moto);
    let p = Project::new(&[]);
    let first = p.bootstrap_and_deploy("dev");
    let loader = first["outputs"]["LoaderFunctionName"]
        .as_str()
        .expect("LoaderFunctionName")
        .to_string();
    assert_eq!(p.alias(&loader), ("1".into(), vec![]));

    p.package("loader", "v2");
    let refused = r#"{"errorType":"MigrationRefused","errorMessage":"dropping column kind needs allow_destructive_changes"}"#;
    p.lambda_results(&[refused]);
    assert_eq!(
        p.fails(&["deploy", "--env", "dev", "--yes"]),
        (
            Some(1),
            format!("the migrations of loader version 2 failed: Unhandled: {refused}"),
            "no traffic moved; the previous versions still serve".into()
        )
    );
    assert_eq!(p.alias(&loader), ("1".into(), vec![]));

    // Migrations pass, the smoke invocation crashes.
    let crashed = r#"{"errorType":"Runtime.ExitError","errorMessage":"RequestId: 1 Error: Runtime exited with error: signal: aborted"}"#;
    p.lambda_results(&["{}", crashed]);
    assert_eq!(
        p.fails(&["deploy", "--env", "dev", "--yes"]),
        (
            Some(1),
            format!("the smoke invocation of loader version 2 failed: Unhandled: {crashed}"),
            "no traffic moved; the previous versions still serve".into()
        )
    );
    assert_eq!(p.alias(&loader), ("1".into(), vec![]));

    // Both pass: the new version serves.
    let deployed = p.json(&["--output", "json", "deploy", "--env", "dev", "--yes"]);
    assert_eq!(
        deployed["versions_published"], 0,
        "version 2 was published by the first try"
    );
    assert_eq!(p.alias(&loader), ("2".into(), vec![]));
}

/// Where an alias points, and its other versions' weights.
type Route = (String, Vec<(String, f64)>);

/// Routes through Lambda (moto), then records where the alias points.
struct Observed<'a> {
    lambda: pipeline_cli::rollout::aws::Lambda,
    seen: &'a std::cell::RefCell<Vec<Route>>,
}

impl pipeline_cli::rollout::Aliases for Observed<'_> {
    async fn route(
        &self,
        function: &str,
        version: &str,
        canary: Option<(&str, f64)>,
    ) -> Result<(), pipeline_cli::rollout::CallError> {
        self.lambda.route(function, version, canary).await?;
        let a = self
            .lambda
            .client
            .get_alias()
            .function_name(function)
            .name("live")
            .send()
            .await
            .expect("alias");
        let weights = a
            .routing_config()
            .and_then(|r| r.additional_version_weights())
            .map(|w| w.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default();
        self.seen
            .borrow_mut()
            .push((a.function_version().unwrap_or("").to_string(), weights));
        Ok(())
    }
}

struct Quiet;

/// Gate alarms that exist and stay OK.
impl pipeline_cli::rollout::Gates for Quiet {
    async fn describe(
        &self,
        names: &[String],
    ) -> Result<Vec<pipeline_cli::rollout::Alarm>, pipeline_cli::rollout::CallError> {
        Ok(names
            .iter()
            .map(|name| pipeline_cli::rollout::Alarm {
                name: name.clone(),
                state: "OK".into(),
                reason: String::new(),
            })
            .collect())
    }
}

/// The gate alarms' version is the monitoring stack's business, which this
/// test leaves out (the canary test below checks it through the binary).
impl pipeline_cli::rollout::Watch for Quiet {
    async fn watch(
        &self,
        _: &[(pipeline_cli::spec::model::FunctionId, String)],
    ) -> Result<(), pipeline_cli::rollout::CallError> {
        Ok(())
    }
}

struct Memory(std::cell::RefCell<Option<pipeline_cli::rollout::State>>);

impl pipeline_cli::rollout::Store for Memory {
    async fn load(
        &self,
        _: &str,
    ) -> Result<Option<pipeline_cli::rollout::State>, pipeline_cli::rollout::CallError> {
        Ok(self.0.borrow().clone())
    }
    async fn save(
        &self,
        state: &pipeline_cli::rollout::State,
    ) -> Result<(), pipeline_cli::rollout::CallError> {
        *self.0.borrow_mut() = Some(state.clone());
        Ok(())
    }
}

/// Time that passes only when the rollout sleeps.
struct Instantly(std::cell::Cell<chrono::DateTime<chrono::Utc>>);

impl pipeline_cli::rollout::Clock for Instantly {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.0.get()
    }
    async fn sleep(&self, d: Duration) {
        self.0
            .set(self.0.get() + chrono::Duration::from_std(d).unwrap_or_default());
    }
}

struct NoReport;

impl pipeline_cli::rollout::Reporter for NoReport {
    fn report(&self, _: &pipeline_cli::rollout::Event) {}
}

#[test]
fn a_linear_rollout_moves_moto_aliases_step_by_step_to_the_new_version() {
    require!(Service::Moto);
    use pipeline_cli::rollout::{Phase, Rollouts, State, Target, steps};
    use pipeline_cli::spec::model::Strategy;
    let p = Project::new(&[]);
    let first = p.bootstrap_and_deploy("dev");
    let query = first["outputs"]["QueryFunctionName"]
        .as_str()
        .expect("QueryFunctionName")
        .to_string();
    let rt = runtime();
    let lambda = rt.block_on(async { aws_sdk_lambda::Client::new(&p.sdk().await) });
    // A second version of new code, as a deploy publishes it.
    let version = rt.block_on(async {
        let zip = std::fs::read(p.dir.path().join("artifacts/ingest.zip")).expect("zip");
        lambda
            .update_function_code()
            .function_name(&query)
            .zip_file(aws_sdk_lambda::primitives::Blob::new(zip))
            .send()
            .await
            .expect("update code");
        let (version, published) = pipeline_cli::rollout::aws::Lambda {
            client: lambda.clone(),
        }
        .version(&query)
        .await
        .expect("version");
        assert!(published);
        version
    });
    assert_eq!(version, "2");
    let seen = std::cell::RefCell::new(Vec::new());
    let mut spec = pipeline_cli::spec::Loader::new(Some(p.dir.path().join("environments")))
        .load("dev")
        .expect("dev")
        .spec
        .rollout;
    spec.percent = Some(30);
    spec.interval_minutes = Some(2);
    let mut state = State {
        environment: "dev".into(),
        strategy: Strategy::Linear,
        steps: steps(Strategy::Linear, &spec),
        step: 0,
        phase: Phase::InProgress,
        started_at: String::new(),
        updated_at: String::new(),
        targets: vec![Target {
            function: pipeline_cli::spec::model::FunctionId::Query,
            name: query.clone(),
            from: "1".into(),
            to: "2".into(),
        }],
        alarms: vec![],
    };
    let observed = Observed {
        lambda: pipeline_cli::rollout::aws::Lambda {
            client: lambda.clone(),
        },
        seen: &seen,
    };
    let (store, clock) = (
        Memory(Default::default()),
        Instantly(std::cell::Cell::new(chrono::Utc::now())),
    );
    let rollouts = Rollouts {
        aliases: &observed,
        gates: &Quiet,
        watch: &Quiet,
        store: &store,
        clock: &clock,
        reporter: &NoReport,
        alarms: vec!["pipeline-dev-query-errors".into()],
        poll: Duration::from_secs(15),
    };
    let outcome = rt.block_on(rollouts.run(&mut state));
    assert_eq!(outcome, Ok(pipeline_cli::rollout::Outcome::Promoted));
    let weights = |w: f64| vec![("2".to_string(), w)];
    assert_eq!(
        *seen.borrow(),
        [
            ("1".to_string(), weights(0.3)),
            ("1".to_string(), weights(0.6)),
            ("1".to_string(), weights(0.9)),
            ("2".to_string(), vec![]),
        ]
    );
    assert_eq!(p.alias(&query), ("2".into(), vec![]));

    // Then a canary to a third version: 30% for the bake, then all.
    seen.borrow_mut().clear();
    rt.block_on(async {
        lambda
            .update_function_configuration()
            .function_name(&query)
            .memory_size(1536)
            .send()
            .await
            .expect("update configuration");
    });
    let (version, _) = rt
        .block_on(observed.lambda.version(&query))
        .expect("version");
    assert_eq!(version, "3", "a configuration change makes a version too");
    let mut state = State {
        strategy: Strategy::Canary,
        steps: steps(Strategy::Canary, &spec),
        step: 0,
        phase: Phase::InProgress,
        targets: vec![Target {
            function: pipeline_cli::spec::model::FunctionId::Query,
            name: query.clone(),
            from: "2".into(),
            to: "3".into(),
        }],
        ..state
    };
    let outcome = rt.block_on(rollouts.run(&mut state));
    assert_eq!(outcome, Ok(pipeline_cli::rollout::Outcome::Promoted));
    assert_eq!(
        *seen.borrow(),
        [
            ("2".to_string(), vec![("3".to_string(), 0.3)]),
            ("3".to_string(), vec![])
        ]
    );
    assert_eq!(p.alias(&query), ("3".into(), vec![]));
}

/// An API function's answer to GET /v1/health, as API Gateway's proxy
/// integration takes it.
fn health_answer(status: u16, body: &Value) -> String {
    serde_json::json!({
        "statusCode": status,
        "headers": {"content-type": "application/json"},
        "body": body.to_string(),
        "isBase64Encoded": false,
    })
    .to_string()
}

/// Before, only a function error stopped a deploy: a new query version
/// whose health route answered 503 (its database down) took the traffic.
/// moto does not run the functions' code: their answers are queued
/// (`lambda_results`); with none queued, server.py (R4) answers the health
/// route as a healthy function does.
#[test]
fn a_new_version_whose_health_route_answers_5xx_or_404_takes_no_traffic() {
    require!(Service::Moto);
    let p = Project::new(&[]);
    let first = p.bootstrap_and_deploy("dev");
    let query = first["outputs"]["QueryFunctionName"]
        .as_str()
        .expect("QueryFunctionName")
        .to_string();
    assert_eq!(p.alias(&query), ("1".into(), vec![]));
    p.package("query", "v2");
    let deploy = ["deploy", "--env", "dev", "--yes"];
    let down = serde_json::json!({"error": {"code": "unavailable", "message": "the database does not answer"}});
    p.lambda_results(&[&health_answer(503, &down)]);
    assert_eq!(
        p.fails(&deploy),
        (
            Some(1),
            format!(
                "the smoke invocation of query version 2 failed: GET /v1/health answered 503: {down}"
            ),
            "no traffic moved; the previous versions still serve".into()
        )
    );
    assert_eq!(p.alias(&query), ("1".into(), vec![]));
    // A version without the health route is no better.
    let missing = serde_json::json!({"error": {"code": "not_found", "message": "there is no GET /v1/health"}});
    p.lambda_results(&[&health_answer(404, &missing)]);
    assert_eq!(
        p.fails(&deploy).1,
        format!(
            "the smoke invocation of query version 2 failed: GET /v1/health answered 404: {missing}"
        )
    );
    assert_eq!(p.alias(&query), ("1".into(), vec![]));
    // Healthy: it serves.
    p.ok(&deploy);
    assert_eq!(p.alias(&query), ("2".into(), vec![]));
}

/// An environment gated on `replica-lag` with two replicas, and on external
/// alarms: 55 metric alarms and a composite one, more than DescribeAlarms
/// answers in one page (server.py R2 pages as CloudWatch does, and answers
/// composite alarms only to a request for them). Before, the gate asked for
/// `pipeline-gated-replica-lag`, which does not exist, and DescribeAlarms
/// left it out: the gate could never fire; nor could the composite alarm,
/// nor any alarm past the first page. The monitoring stack makes the
/// pipeline's own alarms (server.py R1).
#[test]
fn every_gate_alarm_must_exist_and_each_one_sends_traffic_back() {
    require!(Service::Moto);
    let external: Vec<String> = (0..55)
        .map(|i| format!("ext-{i:02}"))
        .chain(std::iter::once("team-composite".to_string()))
        .collect();
    let spec = format!(
        "extends: dev
database:
  multi_az: true
  read_replicas: 2
rollout:
  strategy: canary
  percent: 10
  bake_minutes: 1
  poll_seconds: 5
  alarms: [replica-lag]
  external_alarms: [{}]
",
        external.join(", ")
    );
    let p = Project::new(&[("gated.yaml", &spec)]);
    for name in &external[..55] {
        p.cloudwatch(&[
            ("Action", "PutMetricAlarm"),
            ("Version", "2010-08-01"),
            ("AlarmName", name),
            ("Namespace", "Team/Db"),
            ("MetricName", "Errors"),
            ("Statistic", "Sum"),
            ("Period", "60"),
            ("EvaluationPeriods", "1"),
            ("Threshold", "1"),
            ("ComparisonOperator", "GreaterThanThreshold"),
        ]);
    }
    p.ok(&["bootstrap", "--env", "gated"]);
    let deploy = ["deploy", "--env", "gated", "--yes"];
    assert_eq!(
        p.fails(&deploy),
        (
            Some(1),
            "the gate alarm team-composite does not exist, so it could never send traffic back"
                .into(),
            "deploy the monitoring stack that makes them, or fix `rollout.alarms` and `rollout.external_alarms`; no traffic moved".into()
        )
    );
    let ingest = "pipeline-gated-ingest";
    assert_eq!(p.alias(ingest), ("$LATEST".into(), vec![]));
    p.cloudwatch(&[
        ("Action", "PutCompositeAlarm"),
        ("Version", "2010-08-01"),
        ("AlarmName", "team-composite"),
        ("AlarmRule", "ALARM(\"ext-00\") OR ALARM(\"ext-01\")"),
    ]);
    let first = p.json(&["--output", "json", "deploy", "--env", "gated", "--yes"]);
    assert_eq!(first["rollout"], "all-at-once promoted");
    assert_eq!(p.alias(ingest), ("1".into(), vec![]));

    // The second replica's lag sends the canary back.
    p.package("ingest", "v2");
    let lag = "pipeline-gated-replica-lag-2";
    p.set_alarm(lag, "ALARM", "Threshold Crossed: 1 datapoint [40.0] > 30.0");
    assert_eq!(
        p.fails(&deploy),
        (
            Some(3),
            format!(
                "the rollout was rolled back: {lag} is in ALARM (Threshold Crossed: 1 datapoint [40.0] > 30.0)"
            ),
            "all traffic is on the previous versions; fix the cause and deploy again".into()
        )
    );
    assert_eq!(p.alias(ingest), ("1".into(), vec![]));
    // So does the composite alarm, on the answer's second page.
    p.set_alarm(lag, "OK", "recovered");
    p.set_alarm("team-composite", "ALARM", "ext-01 is in ALARM");
    assert_eq!(
        p.fails(&deploy).1,
        "the rollout was rolled back: team-composite is in ALARM (ext-01 is in ALARM)"
    );
    assert_eq!(p.alias(ingest), ("1".into(), vec![]));
}

/// Before, a deploy invoked a version as soon as it was published; one
/// still Pending cannot be invoked. server.py (R5) keeps each new version
/// Pending for its first GetFunctionConfiguration calls, and refuses to
/// invoke it meanwhile, as Lambda does.
#[test]
fn new_versions_are_invoked_once_they_are_active() {
    require!(Service::Moto);
    let p = Project::with_moto(&[], &[("PIPELINE_MOTO_PENDING", "3")]);
    let first = p.bootstrap_and_deploy("dev");
    assert_eq!(first["rollout"], "all-at-once promoted");
    let query = first["outputs"]["QueryFunctionName"]
        .as_str()
        .expect("QueryFunctionName")
        .to_string();
    p.package("query", "v2");
    p.ok(&["deploy", "--env", "dev", "--yes"]);
    assert_eq!(p.alias(&query), ("2".into(), vec![]));

    // A version that fails instead stops the deploy, with Lambda's reason.
    let p = Project::with_moto(
        &[],
        &[
            ("PIPELINE_MOTO_PENDING", "2"),
            (
                "PIPELINE_MOTO_PENDING_FAILS",
                "ImageAccessDenied: Lambda cannot pull the function's image",
            ),
        ],
    );
    p.ok(&["bootstrap", "--env", "dev"]);
    assert_eq!(
        p.fails(&["deploy", "--env", "dev", "--yes"]),
        (
            Some(1),
            "version 1 of pipeline-dev-ingest cannot be invoked: its state is Failed: Lambda cannot pull the function's image (ImageAccessDenied)".into(),
            "no traffic moved; the previous versions still serve".into()
        )
    );
    assert_eq!(p.alias("pipeline-dev-ingest"), ("$LATEST".into(), vec![]));
}

/// Each function's `reserved_concurrency` of this spec, in that order.
fn reserving(ingest: u32, loader: u32, query: u32) -> String {
    format!(
        "extends: dev
functions:
  ingest: {{reserved_concurrency: {ingest}}}
  loader: {{reserved_concurrency: {loader}}}
  query: {{reserved_concurrency: {query}}}
"
    )
}

/// Before, reservations the account could not take failed the app stack
/// half way (server.py R3 refuses them as Lambda does, and serves
/// GetAccountSettings). moto's quota is Lambda's default, 1,000.
#[test]
fn reservations_beyond_the_accounts_concurrency_are_refused_before_any_stack_moves() {
    require!(Service::Moto);
    let p = Project::new(&[
        ("big.yaml", &reserving(500, 300, 150)),
        ("a.yaml", &reserving(150, 150, 150)),
        ("b.yaml", &reserving(100, 100, 200)),
    ]);
    p.ok(&["bootstrap", "--env", "big"]);
    assert_eq!(
        p.fails(&["deploy", "--env", "big", "--yes"]),
        (
            Some(2),
            "the functions of `big` would reserve 950 concurrent executions (ingest 500, loader 300, query 150), but at most 900 can be reserved in eu-west-1: the account's Lambda quota \"Concurrent executions\" is 1000, other functions reserve 0, and Lambda keeps 100 unreserved".into(),
            "ask for a \"Concurrent executions\" quota of at least 1050 in Service Quotas (AWS Lambda, eu-west-1), or lower `reserved_concurrency` in the spec; no stack was changed".into()
        )
    );
    let status = p.json(&["--output", "json", "status", "--env", "big"]);
    assert!(
        stack_statuses(&status)[1..]
            .iter()
            .all(|(_, s)| s == "NOT_DEPLOYED"),
        "{status}"
    );

    // `a` reserves 450, `b` 400: 150 stay unreserved. `b` may go to 450,
    // its own 400 being given back by its deploy, and no further.
    p.bootstrap_and_deploy("a");
    p.bootstrap_and_deploy("b");
    let spec = p.dir.path().join("environments/b.yaml");
    std::fs::write(&spec, reserving(100, 100, 250)).expect("spec");
    p.ok(&["deploy", "--env", "b", "--yes"]);
    std::fs::write(&spec, reserving(100, 100, 251)).expect("spec");
    assert_eq!(
        p.fails(&["deploy", "--env", "b", "--yes"]),
        (
            Some(2),
            "the functions of `b` would reserve 451 concurrent executions (ingest 100, loader 100, query 251), but at most 450 can be reserved in eu-west-1: the account's Lambda quota \"Concurrent executions\" is 1000, other functions reserve 450, and Lambda keeps 100 unreserved".into(),
            "ask for a \"Concurrent executions\" quota of at least 1001 in Service Quotas (AWS Lambda, eu-west-1), or lower `reserved_concurrency` in the spec; no stack was changed".into()
        )
    );
}

/// AWS throttles callers above its rates. The SDK's clients try again by
/// themselves; before, the hand-signed DescribeAlarms client did not, and
/// a throttled gate read failed the deploy. server.py (R6) throttles the
/// first calls of the operations named, in each service's wire format.
#[test]
fn a_deploy_goes_through_throttling() {
    require!(Service::Moto);
    let p = Project::with_moto(
        &[("live.yaml", LIVE)],
        &[(
            "PIPELINE_MOTO_THROTTLE",
            "cloudformation:DescribeStacks=2,lambda:GetFunctionConfiguration=1,lambda:Invoke=1,cloudwatch:DescribeAlarms=3",
        )],
    );
    let first = p.bootstrap_and_deploy("live");
    assert_eq!(first["rollout"], "all-at-once promoted");
    let ingest = first["outputs"]["IngestFunctionName"]
        .as_str()
        .expect("ingest")
        .to_string();
    assert_eq!(p.alias(&ingest), ("1".into(), vec![]));
}

const GUARDED: &str = "extends: dev
database:
  multi_az: true
  deletion_protection: true
";

/// Whether RDS (moto) protects each instance from deletion, as the
/// DescribeDBInstances query API answers (in XML).
fn protected_instances(p: &Project) -> Vec<bool> {
    let body = runtime().block_on(async {
        reqwest::Client::new()
            .post(format!("{}/", p.moto.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=testing/20260101/eu-west-1/rds/aws4_request, SignedHeaders=host, Signature=0",
            )
            .body("Action=DescribeDBInstances&Version=2014-10-31")
            .send()
            .await
            .expect("rds")
            .text()
            .await
            .expect("rds answer")
    });
    body.split("<DeletionProtection>")
        .skip(1)
        .map(|rest| rest.starts_with("true<"))
        .collect()
}

#[test]
fn a_protected_database_rolls_back_cleanly_is_made_again_and_can_be_destroyed() {
    require!(Service::Moto);
    // The first create of the data stack fails after its database was
    // made. A protected instance cannot be deleted, so its rollback would
    // end in ROLLBACK_FAILED (moto refuses the delete as RDS does): the
    // first create makes the database unprotected.
    let reason = "Resource handler returned message: \"Service Unavailable\"";
    let p = Project::with_moto(
        &[("guarded.yaml", GUARDED)],
        &[(
            "PIPELINE_MOTO_FAIL",
            &format!("DbSecretAttachment@1={reason}"),
        )],
    );
    p.ok(&["bootstrap", "--env", "guarded"]);
    let (code, message, help) = p.fails(&["deploy", "--env", "guarded", "--yes"]);
    assert_eq!(
        (code, message.as_str(), help.as_str()),
        (
            Some(1),
            format!(
                "stack pipeline-guarded-data failed: ROLLBACK_COMPLETE\n  DbSecretAttachment (AWS::SecretsManager::SecretTargetAttachment) CREATE_FAILED: {reason}"
            )
            .as_str(),
            "the failed first create was rolled back; fix the cause and deploy again (the empty stack is deleted and created anew)"
        )
    );
    assert_eq!(protected_instances(&p), Vec::<bool>::new());

    // The next deploy deletes the stack, creates it, and turns protection on.
    let deployed = p.json(&["--output", "json", "deploy", "--env", "guarded", "--yes"]);
    let data = deployed["stacks"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == "pipeline-guarded-data")
        .cloned()
        .unwrap_or_default();
    assert_eq!(data["status"], "UPDATE_COMPLETE", "{deployed}");
    assert_eq!(protected_instances(&p), [true]);

    // CloudFormation cannot delete a protected instance: destroy turns the
    // protection off first (the final snapshot is still taken).
    let destroyed = p.json(&[
        "--output", "json", "destroy", "--env", "guarded", "--yes", "--force",
    ]);
    assert_eq!(destroyed["event"], "destroyed", "{destroyed}");
    assert_eq!(protected_instances(&p), Vec::<bool>::new());
}
