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

/// The server's maintenance database, for creating and dropping others.
pub const ADMIN: &str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres";

pub async fn connect(config: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(config, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
}

/// A database of its own, dropped when the test ends, passed or not.
pub struct Scratch {
    pub name: String,
}

impl Scratch {
    /// A database `pipeline_<what>_<random>`.
    pub async fn new(what: &str) -> Scratch {
        let name = format!("pipeline_{what}_{}", uuid::Uuid::new_v4().simple());
        connect(ADMIN)
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        Scratch { name }
    }

    /// Its libpq connection string.
    pub fn config(&self) -> String {
        format!(
            "host=127.0.0.1 port=5432 user=postgres dbname={}",
            self.name
        )
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        drop_database(&self.name);
    }
}

/// Drops a test's database, its sessions with it, from a thread of its own
/// (a test's runtime may be shutting down when this runs).
pub fn drop_database(name: &str) {
    let name = name.to_string();
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let _ = connect(ADMIN)
                .await
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
        });
    })
    .join();
}

/// The functions' context as a test runs their handlers: `datasets`, the
/// scratch database reached through `url_options` (`?...`, or empty) on a
/// pool of `pool_size`, objects in `objects`, no chunks, messages
/// dead-lettered after 5 deliveries.
pub fn handlers_context(
    db: &Scratch,
    url_options: &str,
    pool_size: usize,
    datasets: std::collections::BTreeMap<String, pipeline_shared::Dataset>,
    objects: &Path,
) -> pipeline_shared::api::Context {
    let url = format!(
        "postgres://postgres@127.0.0.1:5432/{}{url_options}",
        db.name
    );
    pipeline_shared::api::Context {
        env: "dev".into(),
        datasets,
        store: pipeline_shared::store::Store::Local(pipeline_shared::store::LocalStore::new(
            objects,
        )),
        pool: pipeline_shared::runtime::pool(&url, pool_size).expect("pool"),
        max_inline_bytes: 1 << 20,
        chunk_bytes: 0,
        upload_part_bytes: pipeline_shared::store::DEFAULT_UPLOAD_PART_BYTES,
        merge_slice_rows: pipeline_shared::db::DEFAULT_SLICE_ROWS,
        max_decoded_ratio: pipeline_shared::compression::DEFAULT_DECODED_RATIO,
        chunk_queue: None,
        max_receives: Some(5),
        definitions: Default::default(),
    }
}

/// A dataset as dev ships it.
pub fn dev_dataset(name: &str) -> pipeline_shared::Dataset {
    let mut loader = pipeline_cli::spec::Loader::new(Some(repo().join("environments")));
    let env = loader.load("dev").expect("dev");
    env.spec.datasets[name].clone()
}

/// The chunk messages the loader sends, kept for the test to deliver.
#[derive(Default)]
pub struct Sent(std::sync::Mutex<Vec<pipeline_shared::chunks::ChunkMessage>>);

impl pipeline_shared::chunks::ChunkQueue for Sent {
    fn send(
        &self,
        messages: Vec<pipeline_shared::chunks::ChunkMessage>,
    ) -> futures_util::future::BoxFuture<'_, Result<(), String>> {
        self.0.lock().expect("lock").extend(messages);
        Box::pin(async { Ok(()) })
    }
}

impl Sent {
    pub fn take(&self) -> Vec<pipeline_shared::chunks::ChunkMessage> {
        std::mem::take(&mut *self.0.lock().expect("lock"))
    }
}

/// Posts a batch to ingest's handler, which must accept it: its id and
/// object key.
pub async fn post_batch(
    ingest: &pipeline_shared::api::Context,
    dataset: &str,
    content_type: &str,
    body: bytes::Bytes,
) -> (uuid::Uuid, String) {
    let request = http::Request::post(format!("/v1/datasets/{dataset}/batches"))
        .header("content-type", content_type)
        .extension(pipeline_shared::api::Access::Any)
        .body(body)
        .expect("request");
    let response = ingest::handle(ingest, request).await;
    let answer: serde_json::Value = serde_json::from_slice(response.body()).expect("json");
    assert_eq!(response.status(), 202, "{answer}");
    let batch_id: uuid::Uuid = answer["batch_id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("batch id");
    let client = ingest.pool.get().await.expect("client");
    let key = pipeline_shared::db::batch(&**client, batch_id)
        .await
        .expect("batch")
        .expect("recorded")
        .object_key;
    (batch_id, key)
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
