//! End to end over HTTP: `pipeline local` (the real binary) on the real
//! Postgres at 127.0.0.1:5432. Each test runs its own environment, so its own
//! database `pipeline_<env>`, dropped at the end.

use crate::common;

use pipeline_testkit::{Service, require};

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const ADMIN: &str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres";

/// A running `pipeline local`.
struct Local {
    child: Child,
    url: String,
    api_key: String,
    env: String,
    dir: tempfile::TempDir,
    http: reqwest::Client,
    args: Vec<String>,
    /// Environment variables for the next (re)start.
    vars: Vec<(String, String)>,
}

impl Local {
    /// Starts an environment that extends dev with `extra` YAML.
    async fn start(extra: &str) -> Local {
        Local::start_with(extra, &[]).await
    }

    /// Starts with extra arguments for `pipeline local`.
    async fn start_with(extra: &str, args: &[&str]) -> Local {
        let env = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let dir = common::workspace(&[(&format!("{env}.yaml"), &format!("extends: dev\n{extra}"))]);
        let mut local = Local {
            child: spawn(dir.path(), &env, args, &[]),
            args: args.iter().map(|a| a.to_string()).collect(),
            vars: Vec::new(),
            url: String::new(),
            api_key: String::new(),
            env,
            dir,
            http: reqwest::Client::new(),
        };
        local.read_banner();
        local
    }

    fn read_banner(&mut self) {
        let stdout = self.child.stdout.take().expect("stdout");
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("banner");
        let banner: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("banner {line:?}: {e}"));
        self.url = banner["url"].as_str().expect("url").to_string();
        self.api_key = banner["api_key"].as_str().unwrap_or_default().to_string();
    }

    /// Kills the process without warning, as a crash would.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the same environment again on the same data.
    fn restart(&mut self) {
        self.kill();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.child = spawn(self.dir.path(), &self.env, &args, &self.vars);
        self.read_banner();
    }

    fn database(&self) -> String {
        format!("pipeline_{}", self.env)
    }

    async fn db(&self) -> tokio_postgres::Client {
        connect(&format!(
            "host=127.0.0.1 port=5432 user=postgres dbname={}",
            self.database()
        ))
        .await
    }

    async fn post(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        self.post_with(path, content_type, body, &[]).await
    }

    async fn post_with(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut request = self
            .http
            .post(format!("{}{path}", self.url))
            .header("x-api-key", &self.api_key)
            .header("content-type", content_type)
            .body(body);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request.send().await.expect("POST");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .header("x-api-key", &self.api_key)
            .send()
            .await
            .expect("GET");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Polls the batch until it is loaded or failed (or 60 s pass).
    async fn settled(&self, batch_id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, batch) = self.get(&format!("/v1/batches/{batch_id}")).await;
            assert_eq!(status, 200, "{batch}");
            if batch["status"] == "loaded" || batch["status"] == "failed" {
                return batch;
            }
            assert!(
                Instant::now() < deadline,
                "batch {batch_id} did not settle: {batch}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        self.kill();
        let name = self.database();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let admin = connect(ADMIN).await;
                let _ = admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await;
            });
        })
        .join();
    }
}

fn spawn(dir: &Path, env: &str, extra: &[&str], vars: &[(String, String)]) -> Child {
    let data: PathBuf = dir.join("data");
    Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .args([
            "--output",
            "json",
            "local",
            "--env",
            env,
            "--port",
            "0",
            "--retry-after",
            "1",
            "--data-dir",
        ])
        .arg(&data)
        .args(extra)
        .envs(vars.iter().map(|(k, v)| (k, v)))
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env(
            "DATABASE_URL",
            "postgres://postgres@127.0.0.1:5432/postgres",
        )
        .stdout(Stdio::piped())
        .stderr(if std::env::var_os("PIPELINE_TEST_LOGS").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .expect("start pipeline local")
}

/// `SELECT count(*) ...`: the one number it answers.
async fn count(db: &tokio_postgres::Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).await.expect(sql).get(0)
}

async fn connect(config: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(config, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
}

fn event(id: u32, kind: &str) -> String {
    format!(
        "{{\"event_id\":\"00000000-0000-4000-8000-{id:012}\",\"occurred_at\":\"2024-01-31T12:00:{:02}Z\",\"source\":\"web\",\"kind\":\"{kind}\",\"user_id\":{id},\"amount\":\"{id}.25\",\"payload\":{{\"n\":{id}}}}}\n",
        id % 60
    )
}

#[tokio::test]
async fn push_wait_and_read_back_the_exact_records() {
    require!(Service::Postgres);
    let local = Local::start("").await;
    let body: String = (1..=3)
        .map(|i| event(i, if i == 2 { "view" } else { "click" }))
        .collect();
    let (status, accepted) = local
        .post("/v1/datasets/events/batches", "application/x-ndjson", body)
        .await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["records"], 3);
    let batch_id = accepted["batch_id"].as_str().expect("batch id").to_string();
    assert_eq!(accepted["status_url"], format!("/v1/batches/{batch_id}"));
    let batch = local.settled(&batch_id).await;
    assert_eq!(
        (
            batch["status"].clone(),
            batch["inserted"].clone(),
            batch["duplicates"].clone()
        ),
        (json!("loaded"), json!(3), json!(0))
    );

    let (status, page) = local
        .get("/v1/datasets/events/records?kind=click&limit=1")
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        page["records"],
        json!([{
            "event_id": "00000000-0000-4000-8000-000000000001",
            "occurred_at": "2024-01-31T12:00:01+00:00",
            "source": "web",
            "kind": "click",
            "user_id": 1,
            "amount": "1.25",
            "payload": {"n": 1},
        }])
    );
    let cursor = page["next_cursor"].as_str().expect("more pages");
    let (_, page) = local
        .get(&format!(
            "/v1/datasets/events/records?kind=click&limit=1&cursor={cursor}"
        ))
        .await;
    assert_eq!(page["records"][0]["user_id"], 3);
    assert_eq!(page["next_cursor"], Value::Null);
    let (_, page) = local
        .get("/v1/datasets/events/records?user_id.gte=2&user_id.lt=3")
        .await;
    assert_eq!(page["records"].as_array().map(Vec::len), Some(1));

    // CSV datasets too.
    let csv = "sensor_id,read_at,value,quality,valid,day\ns1,2024-01-31T12:00:00Z,1.5,3,true,2024-01-31\n";
    let (status, accepted) = local
        .post(
            "/v1/datasets/readings/batches",
            "text/csv; charset=utf-8",
            csv,
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    local
        .settled(accepted["batch_id"].as_str().expect("id"))
        .await;
    let (_, page) = local
        .get("/v1/datasets/readings/records?sensor_id=s1")
        .await;
    assert_eq!(
        page["records"],
        json!([{"sensor_id": "s1", "read_at": "2024-01-31T12:00:00+00:00", "value": 1.5, "quality": 3, "valid": true, "day": "2024-01-31"}])
    );
}

#[tokio::test]
async fn an_idempotency_key_returns_the_first_batch_and_stores_nothing_new() {
    require!(Service::Postgres);
    let local = Local::start("").await;
    let key = [("idempotency-key", "order-42")];
    let (s1, first) = local
        .post_with(
            "/v1/datasets/events/batches",
            "application/x-ndjson",
            event(1, "a"),
            &key,
        )
        .await;
    let (s2, second) = local
        .post_with(
            "/v1/datasets/events/batches",
            "application/x-ndjson",
            event(1, "a"),
            &key,
        )
        .await;
    assert_eq!((s1, s2), (202, 202));
    assert_eq!(first["batch_id"], second["batch_id"]);
    local.settled(first["batch_id"].as_str().expect("id")).await;
    let db = local.db().await;
    let batches = count(&db, "SELECT count(*) FROM pipeline.batches").await;
    assert_eq!(batches, 1);
    let objects = std::fs::read_dir(local.dir.path().join("data/objects/raw/events"))
        .expect("objects")
        .count();
    assert_eq!(objects, 1);
}

#[tokio::test]
async fn a_batch_delivered_twice_loads_once() {
    require!(Service::Postgres);
    let local = Local::start("").await;
    let body: String = (1..=5).map(|i| event(i, "a")).collect();
    let (_, accepted) = local
        .post("/v1/datasets/events/batches", "application/x-ndjson", body)
        .await;
    let batch_id = accepted["batch_id"].as_str().expect("id").to_string();
    local.settled(&batch_id).await;
    // Deliver the same S3 notification again, as SQS may.
    let db = local.db().await;
    let (body, key): (String, String) = {
        let object = db
            .query_one(
                "SELECT object_key FROM pipeline.batches WHERE batch_id = $1::text::uuid",
                &[&batch_id],
            )
            .await
            .expect("batch");
        let key: String = object.get(0);
        (
            format!(
                "{{\"Records\":[{{\"eventVersion\":\"2.1\",\"eventSource\":\"aws:s3\",\"awsRegion\":\"local\",\"eventTime\":\"2024-01-01T00:00:00.000Z\",\"eventName\":\"ObjectCreated:Put\",\"userIdentity\":{{\"principalId\":\"x\"}},\"requestParameters\":{{\"sourceIPAddress\":\"127.0.0.1\"}},\"responseElements\":{{}},\"s3\":{{\"s3SchemaVersion\":\"1.0\",\"configurationId\":\"x\",\"bucket\":{{\"name\":\"local\",\"ownerIdentity\":{{\"principalId\":\"x\"}},\"arn\":\"arn:aws:s3:::local\"}},\"object\":{{\"key\":\"{key}\",\"size\":1}}}}}}]}}"
            ),
            key,
        )
    };
    db.execute(
        "INSERT INTO pipeline.local_queue (body, object_key) VALUES ($1, $2)",
        &[&body, &key],
    )
    .await
    .expect("enqueue");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = count(&db, "SELECT count(*) FROM pipeline.local_queue").await;
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the redelivery was not consumed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rows = count(&db, "SELECT count(*) FROM public.events").await;
    assert_eq!(rows, 5);
    let (_, batch) = local.get(&format!("/v1/batches/{batch_id}")).await;
    assert_eq!(
        (batch["inserted"].clone(), batch["duplicates"].clone()),
        (json!(5), json!(0))
    );
}

#[tokio::test]
async fn malformed_input_is_refused_with_line_and_reason_and_nothing_is_loaded() {
    require!(Service::Postgres);
    let local = Local::start("api:\n  max_inline_batch_kib: 2048\n").await;
    let post = |body: Vec<u8>, content_type: &'static str| {
        let local = &local;
        async move {
            local
                .post("/v1/datasets/events/batches", content_type, body)
                .await
        }
    };
    let ndjson = "application/x-ndjson";
    let good = event(1, "a");

    let type_error = good.replace("\"user_id\":1", "\"user_id\":\"one\"");
    let (status, body) = post(format!("{good}{type_error}").into_bytes(), ndjson).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error": "invalid_batch", "truncated": false,
               "message": "1 of 2 records are invalid; nothing was stored",
               "errors": [{"line": 2, "column": "user_id", "reason": "expected a number, found a string"}]})
    );

    let missing = good.replace("\"source\":\"web\",", "");
    let (status, body) = post(missing.into_bytes(), ndjson).await;
    assert_eq!(
        (status, body["errors"][0].clone()),
        (
            400,
            json!({"line": 1, "column": "source", "reason": "missing value"})
        )
    );

    let unknown = good.replace(
        "\"source\":\"web\"",
        "\"source\":\"web\",\"colour\":\"red\"",
    );
    let (status, body) = post(unknown.into_bytes(), ndjson).await;
    assert_eq!(
        (status, body["errors"][0].clone()),
        (
            400,
            json!({"line": 1, "column": "colour", "reason": "unknown column"})
        )
    );

    let mut bad_utf8 = good.clone().into_bytes();
    bad_utf8.extend_from_slice(b"{\"kind\":\"\xff\"}\n");
    let (status, body) = post(bad_utf8, ndjson).await;
    assert_eq!(
        (status, body["errors"][0].clone()),
        (
            400,
            json!({"line": 2, "reason": "invalid UTF-8 at byte 10 of the line"})
        )
    );

    let long = format!("{good}{{\"source\":\"{}\"}}\n", "x".repeat(1024 * 1024 + 1));
    let (status, body) = post(long.into_bytes(), ndjson).await;
    assert_eq!(
        (status, body["errors"][0].clone()),
        (
            400,
            json!({"line": 2, "reason": "the record is longer than 1048576 bytes"})
        )
    );

    let (status, body) = post(Vec::new(), ndjson).await;
    assert_eq!(
        (status, body["errors"][0].clone()),
        (400, json!({"line": 1, "reason": "the batch is empty"}))
    );

    let (status, body) = post(good.clone().into_bytes(), "text/csv").await;
    assert_eq!(
        (status, body),
        (
            415,
            json!({"error": "unsupported_media_type", "message": "dataset `events` takes `application/x-ndjson`, found `text/csv`"})
        )
    );

    let (status, body) = local
        .post("/v1/datasets/nope/batches", ndjson, good.clone())
        .await;
    assert_eq!(
        (status, body),
        (
            404,
            json!({"error": "not_found", "message": "there is no dataset `nope`; the datasets are: events, readings"})
        )
    );

    let big = event(1, &"k".repeat(3 * 1024 * 1024));
    let (status, body) = post(big.into_bytes(), ndjson).await;
    assert_eq!(status, 413);
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .ends_with("send it through an upload: POST /v1/datasets/events/uploads"),
        "{body}"
    );

    let db = local.db().await;
    let batches = count(&db, "SELECT count(*) FROM pipeline.batches").await;
    let rows = count(&db, "SELECT count(*) FROM public.events").await;
    assert_eq!((batches, rows), (0, 0));
    assert!(!local.dir.path().join("data/objects/raw").exists());
}

#[tokio::test]
async fn a_loader_killed_mid_load_leaves_no_rows_and_loads_once_after_restart() {
    require!(Service::Postgres);
    let mut local = Local::start("").await;
    // Hold a lock that the loader's COPY waits for, so that the process can be
    // killed while its load transaction is open.
    let blocker = local.db().await;
    blocker
        .batch_execute("BEGIN; LOCK TABLE public.events IN SHARE MODE")
        .await
        .expect("lock");
    let body: String = (1..=1000).map(|i| event(i, "a")).collect();
    let (_, accepted) = local
        .post("/v1/datasets/events/batches", "application/x-ndjson", body)
        .await;
    let batch_id = accepted["batch_id"].as_str().expect("id").to_string();
    let db = local.db().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let waiting = count(&db, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'COPY%'").await;
        if waiting > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the loader never started copying"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    local.kill();
    blocker.batch_execute("ROLLBACK").await.expect("unlock");
    let rows = count(&db, "SELECT count(*) FROM public.events").await;
    assert_eq!(rows, 0);
    let status: String = db
        .query_one(
            "SELECT status FROM pipeline.batches WHERE batch_id = $1::text::uuid",
            &[&batch_id],
        )
        .await
        .expect("batch")
        .get(0);
    assert_eq!(status, "loading");

    local.restart();
    // The message was received by the killed process; it comes back when its
    // visibility timeout passes (1 s here).
    let batch = local.settled(&batch_id).await;
    assert_eq!(
        (batch["status"].clone(), batch["inserted"].clone()),
        (json!("loaded"), json!(1000))
    );
    let rows = count(&db, "SELECT count(*) FROM public.events").await;
    assert_eq!(rows, 1000);
}

#[tokio::test]
async fn serves_its_openapi_document_and_requires_the_api_key() {
    require!(Service::Postgres);
    let local = Local::start("").await;
    let doc: Value = reqwest::get(format!("{}/openapi.json", local.url))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(doc["info"]["title"], format!("pipeline-{}-api", local.env));
    assert!(doc["paths"]["/v1/datasets/events/batches"]["post"].is_object());
    assert_eq!(doc["servers"], json!([{"url": local.url}]));
    let response = reqwest::get(format!("{}/v1/health", local.url))
        .await
        .expect("get");
    assert_eq!(response.status().as_u16(), 403);
    let (status, health) = local.get("/v1/health").await;
    assert_eq!(
        (status, health),
        (200, json!({"status": "ok", "environment": local.env}))
    );
    // Every operation of the document reaches a handler: none is answered
    // by the router's 405 or its 404 for a path no function serves.
    let batch = uuid::Uuid::now_v7().to_string();
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            let path = path.replace("{batch_id}", &batch);
            let (status, answer) = match method.as_str() {
                "get" => local.get(&path).await,
                "post" => local.post(&path, "application/json", "{}").await,
                other => panic!("{other} {path}: an operation the router does not take"),
            };
            let message = answer["message"].as_str().unwrap_or_default();
            assert!(
                status != 405 && !message.starts_with("no route"),
                "{method} {path} answered {status}: {answer}"
            );
            operations += 1;
        }
    }
    assert!(
        operations >= pipeline_contract::ROUTES.len(),
        "{operations} operations"
    );
}

/// schemathesis, every check, against `pipeline local` for two minutes,
/// through its coverage, fuzzing and stateful phases: no failure. Its
/// settings (tests/schemathesis/) say where a schema-valid request may still
/// be refused, and why.
#[tokio::test]
async fn schemathesis_finds_no_failure_in_two_minutes() {
    require!(Service::Postgres, Service::Schemathesis);
    let local = Local::start("").await;
    // Every dataset of every shipped environment is in this one.
    let mut loader = pipeline_cli::spec::Loader::new(Some(common::repo().join("environments")));
    let here = loader.load("dev").expect("dev");
    for env in ["dit", "uat", "prod"] {
        let spec = loader.load(env).expect("spec");
        for dataset in spec.spec.datasets.keys() {
            assert!(here.spec.datasets.contains_key(dataset), "{env}: {dataset}");
        }
    }
    let settings = common::repo().join("tests").join("schemathesis");
    let out = Command::new(Service::Schemathesis.program())
        .arg("--config-file")
        .arg(settings.join("schemathesis.toml"))
        .args(["run", &format!("{}/openapi.json", local.url)])
        .args(["--header", &format!("x-api-key: {}", local.api_key)])
        .args(["--checks", "all", "--max-time", "120", "--workers", "2"])
        .args(["--seed", "20261201"])
        .env("PYTHONPATH", &settings)
        .env("SCHEMATHESIS_HOOKS", "pipeline_hooks")
        .env("NO_COLOR", "1")
        .current_dir(local.dir.path())
        .output()
        .expect("run schemathesis");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for phase in ["Coverage", "Fuzzing", "Stateful"] {
        assert!(
            text.contains(&format!("✅ {phase}")),
            "{phase} did not pass: {text}"
        );
    }
    assert!(!text.contains("failure"), "{text}");
}

#[tokio::test]
async fn ctrl_c_stops_cleanly() {
    require!(Service::Postgres);
    let mut local = Local::start("").await;
    let pid = local.child.id().to_string();
    let status = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill -INT");
    assert!(status.success());
    let exit = local.child.wait().expect("wait");
    assert_eq!(exit.code(), Some(0));
}

/// Runs a client command of the real binary against this local pipeline.
fn client(local: &Local, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .args(args)
        .args([
            "--env",
            &local.env,
            "--url",
            &local.url,
            "--api-key",
            &local.api_key,
        ])
        .current_dir(local.dir.path())
        .env("NO_COLOR", "1")
        .output()
        .expect("run pipeline")
}

#[tokio::test]
async fn push_goes_through_an_upload_when_large_and_query_reads_back() {
    require!(Service::Postgres);
    let local = Local::start("api:\n  max_inline_batch_kib: 1\n").await;
    let body: String = (1..=20).map(|i| event(i, "big")).collect();
    assert!(body.len() > 1024);
    std::fs::write(local.dir.path().join("batch.ndjson"), &body).expect("write batch");
    let out = client(&local, &["push", "-d", "events", "batch.ndjson", "--wait"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("loaded batch ")
            && stdout.ends_with(" into events: 20 records, 20 inserted, 0 duplicates\n"),
        "{stdout}"
    );

    let out = client(
        &local,
        &[
            "--output",
            "json",
            "query",
            "-d",
            "events",
            "-w",
            "user_id>=5",
            "-w",
            "user_id<8",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page: Value = serde_json::from_slice(&out.stdout).expect("json page");
    let ids: Vec<i64> = page["records"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["user_id"].as_i64())
        .collect();
    assert_eq!(ids, vec![5, 6, 7]);
}

/// Lambda's 6 MB applies to the event, where the body is a JSON string:
/// a body under the inline limit whose quotes and line breaks take it over
/// is a 413 from the API, and `push` sends it through an upload.
#[tokio::test]
async fn the_inline_limit_counts_the_body_as_escaped_in_the_lambda_event() {
    require!(Service::Postgres);
    let local = Local::start("api:\n  max_inline_batch_kib: 1\n").await;
    let body: String = (1..=6).map(|i| event(i, "q")).collect();
    let escaped = serde_json::to_string(&body).expect("json").len() - 2;
    assert!(
        body.len() <= 1024 && escaped > 1024,
        "{} {escaped}",
        body.len()
    );
    let (status, answer) = local
        .post(
            "/v1/datasets/events/batches",
            "application/x-ndjson",
            body.clone(),
        )
        .await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(
        answer["message"],
        format!(
            "the batch is {} bytes ({escaped} as a JSON string in the Lambda event), over the inline limit of 1024 bytes; send it through an upload: POST /v1/datasets/events/uploads",
            body.len()
        )
    );
    std::fs::write(local.dir.path().join("batch.ndjson"), &body).expect("write batch");
    let out = client(
        &local,
        &[
            "--output",
            "json",
            "push",
            "-d",
            "events",
            "batch.ndjson",
            "--wait",
        ],
    );
    let pushed: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(
        (pushed["via"].as_str(), pushed["status"].as_str()),
        (Some("upload"), Some("loaded"))
    );
}

/// An upload of more parts than one answer holds URLs for (Lambda answers
/// at most 6 MB): the first 1,000 come with the upload, the others from
/// `parts_url` a page at a time, and `push` uploads them all.
#[tokio::test]
async fn part_urls_beyond_the_first_thousand_come_a_page_at_a_time() {
    require!(Service::Postgres);
    let local = Local::start_with(
        "api:\n  max_inline_batch_kib: 1\n",
        &["--upload-part-size", "100"],
    )
    .await;
    let body: String = (1..=1000).map(|i| event(i, "paged")).collect();
    let parts = body.len().div_ceil(100);
    assert!(parts > 1000 && parts < 2000, "{parts}");
    let (status, upload) = local
        .post(
            "/v1/datasets/events/uploads",
            "application/json",
            json!({"size_bytes": body.len(), "content_type": "application/x-ndjson"}).to_string(),
        )
        .await;
    assert_eq!(status, 201, "{upload}");
    let listed = upload["parts"].as_array().expect("parts");
    assert_eq!(listed.len(), parts);
    let with_url = listed.iter().filter(|p| p["url"].is_string()).count();
    assert_eq!(with_url, 1000);
    let batch_id = upload["batch_id"].as_str().expect("batch id");
    assert_eq!(upload["parts_url"], format!("/v1/batches/{batch_id}/parts"));
    let (status, page) = local
        .post(
            &format!("/v1/batches/{batch_id}/parts"),
            "application/json",
            json!({"upload_id": upload["upload_id"], "part_numbers": [1001, 1002]}).to_string(),
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let numbers: Vec<u64> = page["parts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| p["part_number"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(numbers, vec![1001, 1002]);
    assert!(
        page["parts"][0]["url"]
            .as_str()
            .is_some_and(|u| u.contains("partNumber=1001")),
        "{page}"
    );

    std::fs::write(local.dir.path().join("batch.ndjson"), &body).expect("write batch");
    let out = client(
        &local,
        &[
            "--output",
            "json",
            "push",
            "-d",
            "events",
            "batch.ndjson",
            "--wait",
        ],
    );
    let pushed: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(pushed["batch"]["inserted"], 1000, "{pushed}");
    let db = local.db().await;
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM public.events WHERE kind = 'paged'"
        )
        .await,
        1000
    );
}

#[tokio::test]
async fn a_batch_above_the_part_size_goes_up_in_parts_and_loads_once() {
    require!(Service::Postgres);
    let local = Local::start_with(
        "api:\n  max_inline_batch_kib: 1\n",
        &["--upload-part-size", "1000"],
    )
    .await;
    let body: String = (1..=100).map(|i| event(i, "multi")).collect();
    assert!(body.len() > 5000);
    std::fs::write(local.dir.path().join("batch.ndjson"), &body).expect("write batch");
    let out = client(
        &local,
        &[
            "--output",
            "json",
            "push",
            "-d",
            "events",
            "batch.ndjson",
            "--wait",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pushed: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(pushed["via"], "upload");
    assert_eq!(pushed["batch"]["inserted"], 100);
    let db = local.db().await;
    let rows = count(
        &db,
        "SELECT count(*) FROM public.events WHERE kind = 'multi'",
    )
    .await;
    assert_eq!(rows, 100);
    // The joined object is the file, byte for byte, and no part is left over.
    let batch_id = pushed["batch_id"].as_str().expect("batch id");
    let objects = local.dir.path().join("data").join("objects");
    let stored = walk(&objects);
    let object = stored
        .iter()
        .find(|p| p.to_string_lossy().contains(batch_id) && !p.to_string_lossy().contains(".meta"))
        .expect("object stored");
    assert!(std::fs::read_to_string(object).expect("read") == body);
    assert!(
        stored
            .iter()
            .all(|p| !p.to_string_lossy().contains(".multipart")),
        "{stored:?}"
    );
}

#[tokio::test]
async fn a_multipart_completion_with_a_missing_part_is_refused() {
    require!(Service::Postgres);
    let local = Local::start_with("", &["--upload-part-size", "100"]).await;
    let body: String = (1..=5).map(|i| event(i, "gap")).collect();
    let upload = json!({"size_bytes": body.len(), "content_type": "application/x-ndjson"});
    let (status, started) = local
        .post(
            "/v1/datasets/events/uploads",
            "application/json",
            serde_json::to_vec(&upload).expect("json"),
        )
        .await;
    assert_eq!(status, 201, "{started}");
    assert!(started.get("url").is_none(), "{started}");
    let parts = started["parts"].as_array().expect("parts");
    assert_eq!(parts.len(), body.len().div_ceil(100));
    let http = reqwest::Client::new();
    let first = &parts[0];
    let response = http
        .put(first["url"].as_str().expect("url"))
        .body(body[..100].to_string())
        .send()
        .await
        .expect("PUT part");
    assert_eq!(response.status(), 200);
    let etag = response.headers()["etag"]
        .to_str()
        .expect("etag")
        .to_string();
    let batch_id = started["batch_id"].as_str().expect("batch id");
    let complete = json!({
        "upload_id": started["upload_id"],
        "parts": [{"part_number": 1, "etag": etag}, {"part_number": 2, "etag": "\"x\""}],
    });
    let (status, answer) = local
        .post(
            &format!("/v1/batches/{batch_id}/complete"),
            "application/json",
            serde_json::to_vec(&complete).expect("json"),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"], "invalid_upload");
    assert_eq!(answer["message"], "part 2 was not uploaded");
    let (status, batch) = local.get(&format!("/v1/batches/{batch_id}")).await;
    assert_eq!((status, batch["status"].as_str()), (200, Some("received")));
}

/// Every file under a directory.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[tokio::test]
async fn an_invalid_upload_fails_its_batch_with_the_first_error() {
    require!(Service::Postgres);
    let local = Local::start("api:\n  max_inline_batch_kib: 1\n").await;
    let mut body: String = (1..=10).map(|i| event(i, "x")).collect();
    body.push_str(&event(11, "x").replace("\"user_id\":11", "\"user_id\":true"));
    std::fs::write(local.dir.path().join("batch.ndjson"), &body).expect("write batch");
    let out = client(&local, &["push", "-d", "events", "batch.ndjson", "--wait"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(
        stdout
            .ends_with(" failed: line 11, column `user_id`: expected a number, found a boolean\n"),
        "{stdout}"
    );
    let db = local.db().await;
    let rows = count(&db, "SELECT count(*) FROM public.events").await;
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn a_rejected_inline_push_lists_file_line_and_reason() {
    require!(Service::Postgres);
    let local = Local::start("").await;
    std::fs::write(local.dir.path().join("bad.ndjson"), "{\"event_id\":1}\n").expect("write");
    let out = client(&local, &["push", "-d", "events", "bad.ndjson"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "  × the batch was rejected, nothing was stored:
  │   bad.ndjson:1: column `event_id`: expected a string, found a number
  │   bad.ndjson:1: column `occurred_at`: missing value
  │   bad.ndjson:1: column `source`: missing value
  │   bad.ndjson:1: column `kind`: missing value

"
    );
}

#[tokio::test]
async fn a_large_batch_loads_in_parallel_chunks_exactly_once() {
    require!(Service::Postgres);
    let local = Local::start_with("", &["--chunk-size", "20000", "--workers", "3"]).await;
    // 2000 records, about 330 kB: some 16 chunks. Record 5 comes back at the end.
    let mut body: String = (1..=1999).map(|i| event(i, "chunked")).collect();
    body.push_str(&event(5, "again"));
    let (status, accepted) = local
        .post("/v1/datasets/events/batches", "application/x-ndjson", body)
        .await;
    assert_eq!(status, 202, "{accepted}");
    let batch_id = accepted["batch_id"].as_str().expect("id").to_string();
    let batch = local.settled(&batch_id).await;
    assert_eq!(
        (
            batch["status"].clone(),
            batch["records"].clone(),
            batch["inserted"].clone(),
            batch["duplicates"].clone()
        ),
        (json!("loaded"), json!(2000), json!(1999), json!(1))
    );
    let db = local.db().await;
    let chunks: i64 = db
        .query_one("SELECT count(*) FROM pipeline.batch_chunks WHERE batch_id = $1::text::uuid AND status = 'loaded'", &[&batch_id])
        .await
        .expect("chunks")
        .get(0);
    assert!(chunks > 10, "{chunks} chunks");
    let kind: String = db
        .query_one("SELECT kind FROM public.events WHERE user_id = 5", &[])
        .await
        .expect("row")
        .get(0);
    assert_eq!(
        kind, "chunked",
        "the first occurrence wins under on_conflict: ignore"
    );
    let staging = count(
        &db,
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'pipeline' AND tablename LIKE 'stage_%'",
    )
    .await;
    assert_eq!(staging, 0);
}

/// Polls until `sql` (a count) is above zero, or fails after 30 s with `what`.
async fn wait_for(db: &tokio_postgres::Client, sql: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(db, sql).await == 0 {
        assert!(Instant::now() < deadline, "{what} never happened");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until a statement starting with `prefix` of `pipeline local` waits
/// for a lock the test holds.
async fn wait_for_lock(db: &tokio_postgres::Client, prefix: &str) {
    wait_for(
        db,
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock' AND query LIKE '{prefix}%'"
        ),
        &format!("a wait of `{prefix}...` for the test's lock"),
    )
    .await;
}

#[tokio::test]
async fn a_chunked_load_killed_at_each_step_loads_exactly_once_after_restarts() {
    require!(Service::Postgres);
    let mut local = Local::start_with("", &["--chunk-size", "20000", "--workers", "2"]).await;
    let db = local.db().await;
    let blocker = local.db().await;
    // 3000 records, about 500 kB: some 25 chunks.
    const RECORDS: i64 = 3000;
    let body: String = (1..=RECORDS as u32).map(|i| event(i, "crash")).collect();

    // 1. Killed while beginning: its staging table waits for the dataset's table.
    blocker
        .batch_execute("BEGIN; LOCK TABLE public.events IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let (status, accepted) = local
        .post("/v1/datasets/events/batches", "application/x-ndjson", body)
        .await;
    assert_eq!(status, 202, "{accepted}");
    let batch_id = accepted["batch_id"].as_str().expect("id").to_string();
    let stage = format!("pipeline.\"stage_{}\"", batch_id.replace('-', ""));
    let chunks_sql =
        format!("SELECT count(*) FROM pipeline.batch_chunks WHERE batch_id = '{batch_id}'");
    let loaded_sql = format!("{chunks_sql} AND status = 'loaded'");
    wait_for_lock(&db, "CREATE UNLOGGED TABLE").await;
    local.kill();
    blocker.batch_execute("ROLLBACK").await.expect("unlock");
    assert_eq!(count(&db, &chunks_sql).await, 0);

    // 2. Killed with some chunks loaded and others leased by the dead process.
    local.vars = vec![(
        "PIPELINE_LOCAL_TEST_PAUSE_AFTER_CHUNKS".to_string(),
        "4".to_string(),
    )];
    local.restart();
    wait_for(
        &db,
        &format!("SELECT count(*) FROM ({loaded_sql}) n WHERE count = 4"),
        "the load of the first 4 chunks",
    )
    .await;
    local.kill();
    let chunks = count(&db, &chunks_sql).await;
    assert!(chunks > 20, "{chunks} chunks");
    assert_eq!(count(&db, "SELECT count(*) FROM public.events").await, 0);

    // 3. Killed in the middle of chunks' COPY, which waits for the staging table.
    local.vars.clear();
    blocker
        .batch_execute(&format!("BEGIN; LOCK TABLE {stage} IN SHARE MODE"))
        .await
        .expect("lock");
    local.restart();
    wait_for_lock(&db, "COPY pipeline.").await;
    local.kill();
    blocker.batch_execute("ROLLBACK").await.expect("unlock");
    assert_eq!(count(&db, &loaded_sql).await, 4);

    // 4. Killed during the final merge, which waits for the dataset's table.
    blocker
        .batch_execute("BEGIN; LOCK TABLE public.events IN SHARE MODE")
        .await
        .expect("lock");
    local.restart();
    wait_for_lock(&db, "INSERT INTO public.\"events\"").await;
    local.kill();
    blocker.batch_execute("ROLLBACK").await.expect("unlock");
    assert_eq!(count(&db, &loaded_sql).await, chunks);
    assert_eq!(count(&db, "SELECT count(*) FROM public.events").await, 0);
    let status: String = db
        .query_one(
            "SELECT status FROM pipeline.batches WHERE batch_id = $1::text::uuid",
            &[&batch_id],
        )
        .await
        .expect("batch")
        .get(0);
    assert_eq!(status, "loading");

    // 5. Restarted once more: loaded, exactly once.
    local.restart();
    let batch = local.settled(&batch_id).await;
    assert_eq!(
        (
            batch["status"].clone(),
            batch["records"].clone(),
            batch["inserted"].clone(),
            batch["duplicates"].clone()
        ),
        (json!("loaded"), json!(RECORDS), json!(RECORDS), json!(0))
    );
    let rows = db
        .query_one(
            "SELECT count(*), count(DISTINCT event_id), count(DISTINCT user_id), min(user_id), max(user_id) FROM public.events",
            &[],
        )
        .await
        .expect("rows");
    let rows: Vec<i64> = (0..5).map(|i| rows.get(i)).collect();
    assert_eq!(rows, [RECORDS, RECORDS, RECORDS, 1, RECORDS]);
    let staging = count(
        &db,
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'pipeline' AND tablename LIKE 'stage_%'",
    )
    .await;
    assert_eq!(staging, 0);
}

#[tokio::test]
async fn an_invalid_record_in_a_chunk_fails_the_batch_with_its_line_in_the_whole_batch() {
    require!(Service::Postgres);
    let local = Local::start_with("", &["--chunk-size", "20000"]).await;
    let mut body: String = (1..=1499).map(|i| event(i, "x")).collect();
    body.push_str(&event(1500, "x").replace("\"user_id\":1500", "\"user_id\":\"many\""));
    body.extend((1501..=2000).map(|i| event(i, "x")));
    let (_, accepted) = local
        .post_with(
            "/v1/datasets/events/uploads",
            "application/json",
            serde_json::to_vec(
                &json!({"size_bytes": body.len(), "content_type": "application/x-ndjson"}),
            )
            .expect("json"),
            &[],
        )
        .await;
    let url = accepted["url"].as_str().expect("upload url");
    let put = local.http.put(url).body(body).send().await.expect("PUT");
    assert_eq!(put.status().as_u16(), 200);
    let batch = local
        .settled(accepted["batch_id"].as_str().expect("id"))
        .await;
    assert_eq!(batch["status"], "failed");
    assert_eq!(
        batch["error"],
        json!({"line": 1500, "column": "user_id", "reason": "expected a number, found a string"})
    );
    let db = local.db().await;
    let rows = count(&db, "SELECT count(*) FROM public.events").await;
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn an_idempotent_retry_stores_a_batch_its_first_request_did_not_and_refuses_another_body() {
    require!(Service::Postgres);
    let local = Local::start("").await;
    let body = event(1, "a");
    let sha256: String = {
        use sha2::Digest;
        sha2::Sha256::digest(body.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    // As if an ingest died after recording the batch, before storing it.
    let db = local.db().await;
    let batch_id = uuid::Uuid::now_v7();
    let key = format!("raw/events/2024-01-01/{batch_id}.ndjson");
    db.execute(
        "INSERT INTO pipeline.batches (batch_id, dataset, object_key, status, idempotency_key, records, sha256)
         VALUES ($1, 'events', $2, 'received', 'crash-1', 1, $3)",
        &[&batch_id, &key, &sha256],
    )
    .await
    .expect("insert");
    let key_header = [("idempotency-key", "crash-1")];
    let (status, accepted) = local
        .post_with(
            "/v1/datasets/events/batches",
            "application/x-ndjson",
            body.clone(),
            &key_header,
        )
        .await;
    assert_eq!(
        (status, accepted["batch_id"].clone()),
        (202, json!(batch_id.to_string()))
    );
    let batch = local.settled(&batch_id.to_string()).await;
    assert_eq!(
        (batch["status"].clone(), batch["inserted"].clone()),
        (json!("loaded"), json!(1))
    );

    let (status, refused) = local
        .post_with(
            "/v1/datasets/events/batches",
            "application/x-ndjson",
            event(2, "b"),
            &key_header,
        )
        .await;
    assert_eq!(status, 409);
    assert_eq!(refused["error"], "idempotency_conflict");
}

/// A CSV record whose sensor name holds a line break, so that it spans two lines.
fn reading(i: u32, value: &str, quality: &str) -> String {
    format!("\"sensor\n{i}\",2024-01-31T12:00:00Z,{value},{quality},true,2024-01-31\n")
}

#[tokio::test]
async fn a_large_csv_batch_loads_in_chunks_following_its_quotes() {
    require!(Service::Postgres);
    let local = Local::start_with("", &["--chunk-size", "8000", "--workers", "3"]).await;
    let mut body = String::from("sensor_id,read_at,value,quality,valid,day\n");
    body.extend((1..=2000).map(|i| reading(i, &format!("{i}.5"), "1")));
    body.push_str(&reading(7, "700.5", "9"));
    let (status, accepted) = local
        .post("/v1/datasets/readings/batches", "text/csv", body)
        .await;
    assert_eq!(status, 202, "{accepted}");
    let batch_id = accepted["batch_id"].as_str().expect("id").to_string();
    let batch = local.settled(&batch_id).await;
    assert_eq!(
        (
            batch["status"].clone(),
            batch["records"].clone(),
            batch["inserted"].clone(),
            batch["duplicates"].clone()
        ),
        (json!("loaded"), json!(2001), json!(2000), json!(1))
    );
    let db = local.db().await;
    let chunks = count(
        &db,
        &format!("SELECT count(*) FROM pipeline.batch_chunks WHERE batch_id = '{batch_id}'"),
    )
    .await;
    assert!(chunks > 5, "{chunks} chunks");
    let (value, quality): (f64, i32) = {
        let row = db
            .query_one(
                "SELECT value, quality FROM public.readings WHERE sensor_id = $1",
                &[&"sensor\n7"],
            )
            .await
            .expect("row");
        (row.get(0), row.get(1))
    };
    assert_eq!(
        (value, quality),
        (700.5, 9),
        "the last occurrence wins under on_conflict: update"
    );

    // An invalid record deep in the batch: its line counts the quoted line breaks.
    let mut body = String::from("sensor_id,read_at,value,quality,valid,day\n");
    body.extend((1..=2000).map(|i| reading(i, "1.5", if i == 1500 { "x" } else { "1" })));
    // Inline, the batch is refused whole; uploaded, the loader finds the record.
    let upload = json!({"size_bytes": body.len(), "content_type": "text/csv"});
    let (_, accepted) = local
        .post(
            "/v1/datasets/readings/uploads",
            "application/json",
            serde_json::to_vec(&upload).expect("json"),
        )
        .await;
    let put = local
        .http
        .put(accepted["url"].as_str().expect("url"))
        .body(body)
        .send()
        .await
        .expect("PUT");
    assert_eq!(put.status().as_u16(), 200);
    let batch = local
        .settled(accepted["batch_id"].as_str().expect("id"))
        .await;
    assert_eq!(batch["status"], "failed");
    assert_eq!(
        batch["error"],
        json!({"line": 3000, "column": "quality", "reason": "expected an integer from -2147483648 to 2147483647, found `x`"})
    );
}

const SMOKE: &str = "datasets:
  smoke:
    format: csv
    columns:
      - {name: id, type: uuid}
      - {name: at, type: timestamptz}
      - {name: note, type: text}
      - {name: n, type: bigint}
      - {name: extra, type: jsonb, nullable: true}
    primary_key: [id]
    on_conflict: ignore
";

#[tokio::test]
async fn smoke_checks_health_a_read_and_a_write_to_the_smoke_dataset_only() {
    require!(Service::Postgres);
    let local = Local::start(SMOKE).await;
    let out = client(&local, &["smoke"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<(&str, &str)> = stdout
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            Some((words.next()?, words.next()?))
        })
        .collect();
    assert_eq!(
        lines[..3],
        [("health", "ok"), ("read", "ok"), ("write", "ok")],
        "{stdout}"
    );
    assert!(stdout.ends_with(" passed its smoke checks\n"), "{stdout}");
    let db = local.db().await;
    assert_eq!(count(&db, "SELECT count(*) FROM public.smoke").await, 1);
    assert_eq!(count(&db, "SELECT count(*) FROM public.events").await, 0);
}

#[tokio::test]
async fn smoke_skips_the_write_without_a_smoke_dataset_and_fails_when_the_api_is_down() {
    require!(Service::Postgres);
    let mut local = Local::start("").await;
    let out = client(&local, &["--output", "json", "smoke"]);
    assert_eq!(out.status.code(), Some(0));
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["checks"][2]["result"], "skipped");
    assert_eq!(
        report["checks"][2]["detail"],
        "there is no dataset `smoke`: writes are checked only there, so that real data stays clean"
    );
    local.kill();
    let out = client(&local, &["smoke"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("health  failed"), "{stdout}");
    assert!(stdout.ends_with(" FAILED its smoke checks\n"), "{stdout}");
}
