//! A local implementation of the Lambda Runtime API (version 2018-06-01:
//! `GET /runtime/invocation/next`, `POST /runtime/invocation/{id}/response`,
//! `.../error` and `/runtime/init/error`), and each function's release or
//! debug `bootstrap` started against it in a task directory laid out as its
//! zip (`datasets.json` and the CA bundles beside it), with the environment
//! Lambda and the app template give it: the AWS SDK from the environment's
//! credentials and region, the database through IAM authentication over
//! verified TLS (the local Postgres's certificate is for `localhost`), S3,
//! SQS and Secrets Manager through moto.
//!
//! Used by the bootstrap test (`tests/events.rs`) and the cold-start
//! benchmark (`cli/examples/coldstart.rs`).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};

pub const REGION: &str = "eu-west-1";

pub const BUCKET: &str = "pipeline-lab-raw";

pub const SECRET: &str = "pipeline-lab-db";

/// How long any one step may take before the run is abandoned.
pub const STEP: Duration = Duration::from_secs(30);

pub type Fail = Box<dyn std::error::Error + Send + Sync>;

/// What the runtime interface saw, in order.
enum Seen {
    Next(Instant),
    Answer {
        at: Instant,
        body: Vec<u8>,
        error: bool,
    },
    InitError(Vec<u8>),
}

#[derive(Clone)]
struct Runtime {
    events: Arc<Mutex<mpsc::UnboundedReceiver<Vec<u8>>>>,
    seen: mpsc::UnboundedSender<Seen>,
}

async fn next(State(rt): State<Runtime>) -> (HeaderMap, Vec<u8>) {
    let _ = rt.seen.send(Seen::Next(Instant::now()));
    let event = rt.events.lock().await.recv().await;
    // No more events: hold the request open, as Lambda does until it
    // freezes or stops the environment.
    let Some(event) = event else {
        std::future::pending::<()>().await;
        unreachable!()
    };
    let id = uuid::Uuid::new_v4().to_string();
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() + 30_000)
        .unwrap_or_default();
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = value.parse() {
            headers.insert(name, value);
        }
    };
    set("lambda-runtime-aws-request-id", id);
    set("lambda-runtime-deadline-ms", deadline.to_string());
    set(
        "lambda-runtime-invoked-function-arn",
        format!("arn:aws:lambda:{REGION}:123456789012:function:pipeline-bench"),
    );
    set(
        "lambda-runtime-trace-id",
        "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=1".into(),
    );
    set("content-type", "application/json".into());
    (headers, event)
}

/// An invocation's answer, to `.../response` or (`error`) `.../error`.
async fn answer(rt: Runtime, body: axum::body::Bytes, error: bool) -> StatusCode {
    let _ = rt.seen.send(Seen::Answer {
        at: Instant::now(),
        body: body.to_vec(),
        error,
    });
    StatusCode::ACCEPTED
}

async fn init_error(State(rt): State<Runtime>, body: axum::body::Bytes) -> StatusCode {
    let _ = rt.seen.send(Seen::InitError(body.to_vec()));
    StatusCode::ACCEPTED
}

/// A function's task directory: the bootstrap with what its zip ships.
pub struct Task {
    pub function: &'static str,
    pub dir: PathBuf,
    pub bootstrap_bytes: u64,
}

/// An invocation's answer.
pub struct Answer {
    pub at: Instant,
    pub body: Value,
    /// Posted to `.../error` rather than `.../response`.
    pub error: bool,
}

/// One execution environment: a runtime interface on its own port and the
/// bootstrap started against it.
pub struct Start {
    child: tokio::process::Child,
    /// Just before the exec.
    pub started: Instant,
    events: mpsc::UnboundedSender<Vec<u8>>,
    seen: mpsc::UnboundedReceiver<Seen>,
    server: tokio::task::JoinHandle<()>,
    log: PathBuf,
}

impl Start {
    pub async fn new(task: &Task, env: &BTreeMap<String, String>) -> Result<Start, Fail> {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (seen_tx, seen_rx) = mpsc::unbounded_channel();
        let runtime = Runtime {
            events: Arc::new(Mutex::new(events_rx)),
            seen: seen_tx,
        };
        let app = axum::Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(|State(rt): State<Runtime>, body| answer(rt, body, false)),
            )
            .route(
                "/2018-06-01/runtime/invocation/{id}/error",
                post(|State(rt): State<Runtime>, body| answer(rt, body, true)),
            )
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(runtime);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let log = task.dir.join("log.txt");
        let out = std::fs::File::create(&log)?;
        let mut command = tokio::process::Command::new(task.dir.join("bootstrap"));
        command
            .current_dir(&task.dir)
            .env_clear()
            .envs(env)
            .env("AWS_LAMBDA_RUNTIME_API", address.to_string())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true);
        let started = Instant::now();
        let child = command.spawn()?;
        Ok(Start {
            child,
            started,
            events: events_tx,
            seen: seen_rx,
            server,
            log,
        })
    }

    /// The next thing the runtime interface sees; an error if the
    /// bootstrap exits first or nothing comes within [`STEP`].
    async fn seen(&mut self) -> Result<Seen, Fail> {
        enum Outcome {
            Seen(Option<Seen>),
            Exited(std::io::Result<std::process::ExitStatus>),
            Late,
        }
        let outcome = tokio::select! {
            seen = self.seen.recv() => Outcome::Seen(seen),
            status = self.child.wait() => Outcome::Exited(status),
            () = tokio::time::sleep(STEP) => Outcome::Late,
        };
        match outcome {
            Outcome::Seen(Some(Seen::InitError(body))) => Err(format!(
                "init failed: {}\n{}",
                String::from_utf8_lossy(&body),
                self.log_text()
            )
            .into()),
            Outcome::Seen(Some(seen)) => Ok(seen),
            Outcome::Seen(None) => Err("the runtime interface stopped".into()),
            Outcome::Exited(status) => {
                Err(format!("the bootstrap exited ({status:?})\n{}", self.log_text()).into())
            }
            Outcome::Late => Err(format!("nothing within {STEP:?}\n{}", self.log_text()).into()),
        }
    }

    /// Waits for the bootstrap to exit (within [`STEP`]): its status and
    /// what it wrote, and whether it ever asked for an event.
    pub async fn exited(&mut self) -> Result<(std::process::ExitStatus, String, bool), Fail> {
        let status = tokio::time::timeout(STEP, self.child.wait())
            .await
            .map_err(|_| format!("still running after {STEP:?}"))??;
        let asked = self.seen.try_recv().is_ok();
        Ok((status, self.log_text(), asked))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn ready(&mut self) -> Result<Instant, Fail> {
        match self.seen().await? {
            Seen::Next(at) => Ok(at),
            _ => Err("an answer before the first request for an event".into()),
        }
    }

    /// Sends an event: its answer, as posted to `response` or `error`.
    pub async fn send(&mut self, event: &Value) -> Result<Answer, Fail> {
        self.events.send(serde_json::to_vec(event)?)?;
        match self.seen().await? {
            Seen::Answer { at, body, error } => Ok(Answer {
                at,
                body: serde_json::from_slice(&body)?,
                error,
            }),
            _ => Err("a request for an event before the answer".into()),
        }
    }

    /// Sends an event that must succeed: when its answer came, and the answer.
    pub async fn invoke(&mut self, event: &Value) -> Result<(Instant, Value), Fail> {
        let answer = self.send(event).await?;
        if answer.error {
            return Err(format!(
                "the invocation failed: {}\n{}",
                answer.body,
                self.log_text()
            )
            .into());
        }
        Ok((answer.at, answer.body))
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
        self.server.abort();
    }
}

/// The environment Lambda gives a `provided.al2023` function, and the
/// variables the app template sets for it.
fn environment(function: &str, task: &Path, moto: &str, db: &str) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = [
        (
            "AWS_LAMBDA_FUNCTION_NAME",
            format!("pipeline-bench-{function}"),
        ),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512".into()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "1".into()),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/pipeline-bench-{function}"),
        ),
        (
            "AWS_LAMBDA_LOG_STREAM_NAME",
            "2026/12/03/[1]0123456789abcdef".into(),
        ),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".into()),
        ("AWS_REGION", REGION.into()),
        ("AWS_DEFAULT_REGION", REGION.into()),
        ("AWS_ACCESS_KEY_ID", "ASIATESTING".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_SESSION_TOKEN", "testing".into()),
        ("AWS_EXECUTION_ENV", "AWS_Lambda_provided.al2023".into()),
        ("LAMBDA_TASK_ROOT", task.display().to_string()),
        ("_HANDLER", "bootstrap".into()),
        ("TZ", ":UTC".into()),
        ("LANG", "en_US.UTF-8".into()),
        ("PATH", "/usr/local/bin:/usr/bin/:/bin:/opt/bin".into()),
        // Not in AWS: the endpoint of the S3 and SQS stand-in.
        ("AWS_ENDPOINT_URL", moto.into()),
        // The app template's variables.
        ("PIPELINE_PROJECT", "pipeline".into()),
        ("PIPELINE_ENV", "dev".into()),
        ("RUST_LOG", "info".into()),
        ("DB_PORT", "5432".into()),
        ("DB_NAME", db.into()),
        ("DB_USER", "postgres".into()),
        // The local server's certificate is for localhost.
        ("DB_HOSTS", "localhost".into()),
        ("RAW_BUCKET", BUCKET.into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    // Lambda sets neither; given here, they model another image's CA layout
    // for the SDK's native root store (provided.al2023 has one bundle, this
    // machine a bundle and a directory of single certificates).
    for name in ["SSL_CERT_FILE", "SSL_CERT_DIR"] {
        if let Ok(value) = std::env::var(name) {
            env.insert(name.into(), value);
        }
    }
    match function {
        "ingest" => {
            env.insert("MAX_INLINE_BATCH_BYTES".into(), (6080 * 1024).to_string());
        }
        "loader" => {
            env.insert(
                "QUEUE_URL".into(),
                format!("{moto}/123456789012/pipeline-bench-queue"),
            );
        }
        "migrate" => {
            env.insert("DB_SECRET_ARN".into(), SECRET.into());
        }
        _ => {}
    }
    env
}

pub fn fixture(name: &str) -> Result<Value, Fail> {
    let path = pipeline_testkit::repo().join("tests/fixtures").join(name);
    Ok(serde_json::from_str(&std::fs::read_to_string(path)?)?)
}

/// A POST of a two-record batch (a `view` of user 7 and a `click` of user
/// 8) with its own event ids and idempotency key.
pub fn post_batch(template: &Value) -> Value {
    let mut event = template.clone();
    let key = uuid::Uuid::new_v4().simple().to_string();
    let body: String = [("view", 7), ("click", 8)]
        .into_iter()
        .map(|(kind, user)| {
            json!({
                "event_id": uuid::Uuid::new_v4(),
                "occurred_at": "2024-01-31T12:00:00Z",
                "source": "web",
                "kind": kind,
                "user_id": user,
            })
            .to_string()
                + "\n"
        })
        .collect();
    event["body"] = Value::String(body);
    event["headers"]["Idempotency-Key"] = Value::String(key.clone());
    event["multiValueHeaders"]["Idempotency-Key"] = json!([key]);
    event
}

/// The SQS event of the S3 notification of one object.
pub fn sqs_event(template: &Value, key: &str) -> Result<Value, Fail> {
    let mut event = template.clone();
    let records = event["Records"]
        .as_array_mut()
        .ok_or("the SQS fixture has no records")?;
    records.truncate(1);
    let body = records[0]["body"]
        .as_str()
        .ok_or("the SQS fixture's body is not text")?
        .replace("OBJECT_KEY", key)
        .replace("pipeline-dev-raw-123456789012-eu-west-1", BUCKET);
    records[0]["body"] = Value::String(body);
    records[0]["messageId"] = Value::String(uuid::Uuid::new_v4().to_string());
    Ok(event)
}

/// The task directory of a function, and the size of its zip as
/// `pipeline build` would package it.
/// The functions the app template makes, each with the executable it
/// runs: the migrations' function runs the loader's package.
const FUNCTIONS: [(&str, &str); 4] = [
    ("ingest", "ingest"),
    ("loader", "loader"),
    ("query", "query"),
    ("migrate", "loader"),
];

fn task(
    (function, executable): (&'static str, &str),
    binaries: &Path,
    work: &Path,
    datasets: &[u8],
    ca: &[u8],
) -> Result<Task, Fail> {
    let dir = work.join(function);
    std::fs::create_dir_all(&dir)?;
    let bootstrap = dir.join("bootstrap");
    // A link where it can be (a debug executable is large), else a copy;
    // not a symbolic link, or the files beside it would be looked for
    // beside its target.
    if std::fs::hard_link(binaries.join(executable), &bootstrap).is_err() {
        std::fs::copy(binaries.join(executable), &bootstrap)?;
    }
    std::fs::write(dir.join("datasets.json"), datasets)?;
    std::fs::write(dir.join("rds-ca.pem"), ca)?;
    std::fs::write(
        dir.join("amazon-root-ca.pem"),
        pipeline_cli::deploy::assets::AMAZON_ROOT_CAS,
    )?;
    Ok(Task {
        function,
        bootstrap_bytes: std::fs::metadata(&bootstrap)?.len(),
        dir,
    })
}

impl Task {
    /// The size of the function's zip as `pipeline build` packages it.
    pub fn zip_bytes(&self) -> Result<u64, Fail> {
        let read = |name: &str| std::fs::read(self.dir.join(name));
        let package = pipeline_cli::deploy::assets::package(
            self.function,
            std::env::consts::ARCH,
            &self.dir.join("bootstrap"),
            &read("datasets.json")?,
            Some(&read("rds-ca.pem")?),
            &self.dir.with_extension("zip"),
        )?;
        Ok(package.bytes)
    }
}

/// The CA bundle beside the bootstraps: the local server's certificate
/// among the system's CAs, so that loading it costs about what the RDS
/// global bundle (about a hundred certificates) costs.
fn ca_bundle(postgres_cert: &Path) -> Result<Vec<u8>, Fail> {
    let mut bundle = std::fs::read("/etc/ssl/certs/ca-certificates.crt").unwrap_or_default();
    bundle.extend(std::fs::read(postgres_cert)?);
    Ok(bundle)
}

/// What the bootstraps run against: moto with the raw bucket and the
/// database's secret, and a task directory per function.
pub struct Lab {
    pub moto: pipeline_testkit::moto::Moto,
    pub db: String,
    pub tasks: BTreeMap<&'static str, Task>,
    _work: tempfile::TempDir,
}

impl Lab {
    /// `binaries` holds the `ingest`, `loader` and `query` executables; the
    /// database `db` exists (empty) on the local Postgres, reached as
    /// `admin`.
    pub async fn new(
        binaries: &Path,
        admin: &tokio_postgres::Client,
        db: &str,
    ) -> Result<Lab, Fail> {
        let moto = pipeline_testkit::moto::start();
        let config = pipeline_cli::aws::config_loader()
            .region(aws_config::Region::new(REGION))
            .endpoint_url(&moto.url)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "testing", "testing", None, None, "lab",
            ))
            .load()
            .await;
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&config)
                .force_path_style(true)
                .build(),
        );
        s3.create_bucket()
            .bucket(BUCKET)
            .create_bucket_configuration(
                aws_sdk_s3::types::CreateBucketConfiguration::builder()
                    .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::EuWest1)
                    .build(),
            )
            .send()
            .await?;
        // The database's secret, as RDS keeps it: the migrate action
        // connects with it as the administrator.
        aws_sdk_secretsmanager::Client::new(&config)
            .create_secret()
            .name(SECRET)
            .secret_string(
                json!({"username": "postgres", "password": "unused", "host": "localhost", "port": 5432})
                    .to_string(),
            )
            .send()
            .await?;
        let environment =
            pipeline_cli::spec::Loader::new(Some(pipeline_testkit::repo().join("environments")))
                .load("dev")
                .map_err(|e| format!("the dev environment: {e:?}"))?;
        let datasets = serde_json::to_vec(&environment.spec.datasets)?;
        let cert: String = admin.query_one("SHOW ssl_cert_file", &[]).await?.get(0);
        let ca = ca_bundle(Path::new(&cert))?;
        let work = tempfile::tempdir()?;
        let mut tasks = BTreeMap::new();
        for function in FUNCTIONS {
            tasks.insert(
                function.0,
                task(function, binaries, work.path(), &datasets, &ca)?,
            );
        }
        Ok(Lab {
            moto,
            db: db.into(),
            tasks,
            _work: work,
        })
    }

    pub fn task(&self, function: &str) -> Result<&Task, Fail> {
        self.tasks
            .get(function)
            .ok_or_else(|| format!("no function {function}").into())
    }

    /// The function's environment as Lambda and the app template set it.
    pub fn env(&self, function: &str) -> Result<BTreeMap<String, String>, Fail> {
        let task = self.task(function)?;
        Ok(environment(
            task.function,
            &task.dir,
            &self.moto.url,
            &self.db,
        ))
    }

    /// A cold start of the function, with `change` applied to its
    /// environment.
    pub async fn start_with(
        &self,
        function: &str,
        change: impl FnOnce(&mut BTreeMap<String, String>),
    ) -> Result<Start, Fail> {
        let mut env = self.env(function)?;
        change(&mut env);
        Start::new(self.task(function)?, &env).await
    }

    pub async fn start(&self, function: &str) -> Result<Start, Fail> {
        self.start_with(function, |_| {}).await
    }

    /// Creates the tables as the deploy does: the migrate action, given to
    /// the migrations' function.
    pub async fn migrate(&self) -> Result<Value, Fail> {
        let mut start = self.start("migrate").await?;
        start.ready().await?;
        let answer = start.invoke(&json!({"action": "migrate"})).await;
        start.stop().await;
        Ok(answer?.1)
    }
}
