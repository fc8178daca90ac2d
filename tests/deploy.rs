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
        pipeline_cli::aws::config_loader()
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

    /// The account's API Gateway CloudWatch logging role.
    async fn account_logging_role(&self) -> Option<String> {
        aws_sdk_apigateway::Client::new(&self.sdk().await)
            .get_account()
            .send()
            .await
            .expect("get account")
            .cloudwatch_role_arn()
            .map(str::to_string)
    }

    /// The template a stack holds, as CloudFormation gives it back.
    async fn stack_template(&self, stack: &str) -> Value {
        let out = aws_sdk_cloudformation::Client::new(&self.sdk().await)
            .get_template()
            .stack_name(stack)
            .send()
            .await
            .expect("get template");
        serde_json::from_str(out.template_body().expect("a template body")).expect("json")
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

/// Where an alias points, and its other versions' weights.
type Route = (String, Vec<(String, f64)>);

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
            pipeline_cli::http::client()
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

    /// A metric alarm on more than one error a minute of `namespace`'s
    /// `Errors` (moto's CloudFormation skips alarms: tests make them).
    fn error_alarm(&self, name: &str, namespace: &str) {
        self.cloudwatch(&[
            ("Action", "PutMetricAlarm"),
            ("Version", "2010-08-01"),
            ("AlarmName", name),
            ("Namespace", namespace),
            ("MetricName", "Errors"),
            ("Statistic", "Sum"),
            ("Period", "60"),
            ("EvaluationPeriods", "1"),
            ("Threshold", "1"),
            ("ComparisonOperator", "GreaterThanThreshold"),
        ]);
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
            pipeline_cli::http::client()
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

const LIVE: &str = "extends: dev
api:
  waf: {rate_limit: 1000}
database:
  multi_az: true
rollout:
  strategy: canary
  percent: 10
  bake_minutes: 1
  poll_seconds: 5
  alarms: [ingest-errors]
";

mod gates;
mod lifecycle;
mod rollout;
