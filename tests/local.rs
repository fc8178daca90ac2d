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
    /// What it printed after its banner, a JSON value a line.
    events: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
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
            events: Default::default(),
            env,
            dir,
            http: pipeline_cli::http::client(),
        };
        local.read_banner();
        local
    }

    /// Reads the banner, then keeps what the process prints after it.
    fn read_banner(&mut self) {
        if let Ok(mut events) = self.events.lock() {
            events.clear();
        }
        let stdout = self.child.stdout.take().expect("stdout");
        let mut reader = std::io::BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).expect("banner");
        let banner: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("banner {line:?}: {e}"));
        self.url = banner["url"].as_str().expect("url").to_string();
        self.api_key = banner["api_key"].as_str().unwrap_or_default().to_string();
        let events = self.events.clone();
        std::thread::spawn(move || {
            for line in reader.lines().map_while(Result::ok) {
                if let (Ok(value), Ok(mut events)) =
                    (serde_json::from_str::<Value>(&line), events.lock())
                {
                    events.push(value);
                }
            }
        });
    }

    /// Waits (up to 120 s) for a printed event that `wanted` picks.
    async fn event(&self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let found = self
                .events
                .lock()
                .ok()
                .and_then(|events| events.iter().find(|e| wanted(e)).cloned());
            if let Some(event) = found {
                return event;
            }
            let printed = self.events.lock().map(|e| e.clone()).unwrap_or_default();
            assert!(
                Instant::now() < deadline,
                "no event {what} was printed; printed: {printed:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// An access token of one of the spec's clients (`auth: cognito`),
    /// from the local token endpoint, with the id and secret `pipeline
    /// local` keeps in its data directory.
    async fn token(&self, client: &str) -> String {
        let file: Value = serde_json::from_slice(
            &std::fs::read(self.dir.path().join("data").join("clients.json"))
                .expect("clients.json"),
        )
        .expect("json");
        let client = &file["clients"][client];
        let response = self
            .http
            .post(format!("{}/oauth2/token", self.url))
            .basic_auth(
                client["client_id"].as_str().expect("id"),
                client["client_secret"].as_str(),
            )
            .header("content-type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials")
            .send()
            .await
            .expect("token endpoint");
        assert_eq!(response.status(), 200);
        let answer: Value = response.json().await.expect("json");
        assert_eq!(answer["token_type"], "Bearer");
        answer["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
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

    /// PUTs `body` to an upload answer's single `url` with the `headers`
    /// it asks for: the answer's status.
    async fn put_upload(&self, upload: &Value, body: impl Into<reqwest::Body>) -> u16 {
        let mut request = self.http.put(upload["url"].as_str().expect("upload url"));
        for (name, value) in upload["headers"].as_object().into_iter().flatten() {
            request = request.header(name.as_str(), value.as_str().unwrap_or_default());
        }
        let put = request.body(body).send().await.expect("PUT");
        put.status().as_u16()
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
        common::drop_database(&self.database());
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

mod access;
mod burst;
mod chunks;
mod compressed;
mod deliveries;
mod dialects;
mod inline;
mod rollouts;
mod smoke;
mod uploads;
