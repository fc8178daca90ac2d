//! `pipeline local`: the whole pipeline on this machine, on the same handler
//! code as in Lambda.
//!
//! An HTTP server on 127.0.0.1 serves the API through the ingest and query
//! handlers, with the environment's auth. Objects go to a local directory;
//! storing one puts an S3-style notification on a queue kept in Postgres
//! (so a batch accepted before a crash is loaded after a restart), which a
//! pool of workers hands to the loader handler as SQS events, with the
//! spec's retry and dead-letter behaviour.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use pipeline_shared::api::Context;
use pipeline_shared::chunks::{ChunkBody, ChunkMessage, ChunkQueue};
use pipeline_shared::runtime::DEFAULT_CHUNK_BYTES;
use pipeline_shared::store::{
    DEFAULT_UPLOAD_PART_BYTES, LocalStore, Notify, Signer, Store, UploadTarget, hex,
};
use serde::Serialize;
use tokio::sync::watch;

use super::Cli;
use super::{Selection, load_error};
use crate::spec::load::Loader;
use crate::spec::model::AuthMode;
use crate::{Error, output::Ui};

/// The largest request body the local server takes, as API Gateway (10 MB).
const MAX_REQUEST_BYTES: usize = 10 * 1024 * 1024;
/// Locally, a failed message is retried after at most this long.
const MAX_LOCAL_RETRY: Duration = Duration::from_secs(30);
/// How often idle workers look for messages they were not told about.
const POLL: Duration = Duration::from_millis(500);
/// Test hook, not a setting: with `PIPELINE_LOCAL_TEST_PAUSE_AFTER_CHUNKS=N`
/// this process's workers hand at most N chunk messages to the loader, one
/// message at a time; a worker that receives one more keeps it (and the rest
/// of what it received) leased and waits until the process is killed. Tests
/// use it to kill `pipeline local` with some chunks of a batch loaded and
/// others leased by the dead process.
const PAUSE_AFTER_CHUNKS: &str = "PIPELINE_LOCAL_TEST_PAUSE_AFTER_CHUNKS";
/// Chunk messages handed to the loader by this process (for the test hook).
static CHUNKS_HANDED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Environment whose datasets, auth and queue settings to use.
    #[arg(short, long = "env", value_name = "ENV", default_value = "dev")]
    pub env: String,
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Where objects and the API key are kept [default: .pipeline/<env>].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Postgres to use; the database `pipeline_<env>` is created in it if missing.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub database_url: String,
    /// Loader workers running at once.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Seconds before a failed or abandoned message is delivered again
    /// [default: the queue's visibility timeout, at most 30].
    #[arg(long, value_name = "SECONDS")]
    pub retry_after: Option<u64>,
    /// NDJSON objects larger than this many bytes load in parallel chunks of
    /// about this size (0: never).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_CHUNK_BYTES)]
    pub chunk_size: u64,
    /// Uploads larger than this many bytes are multipart uploads, in parts of
    /// this size.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_UPLOAD_PART_BYTES,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub upload_part_size: u64,
}

/// Printed once the server listens.
#[derive(Debug, Serialize)]
struct Listening {
    event: &'static str,
    url: String,
    environment: String,
    database: String,
    data_dir: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    api_key: Option<String>,
}

impl std::fmt::Display for Listening {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "pipeline local: {} listening on {}",
            self.environment, self.url
        )?;
        writeln!(f, "  database: {}", self.database)?;
        writeln!(f, "  objects:  {}", self.data_dir)?;
        if let Some(key) = &self.api_key {
            writeln!(f, "  API key:  {key}  (send it as the x-api-key header)")?;
        }
        writeln!(f, "  OpenAPI:  {}/openapi.json", self.url)?;
        writeln!(
            f,
            "Ctrl-C stops accepting requests, lets loads in flight finish, and exits."
        )
    }
}

/// An error of local mode: what failed, and why.
fn local_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Local {
        message: format!("{what}: {e}"),
    }
}

/// An error and its causes on one line, as "error: cause: cause".
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

pub fn run(cli: &Cli, args: &Args, ui: &Ui) -> Result<(), Error> {
    let mut loader = Loader::new(cli.environments.clone());
    let selection = Selection {
        envs: vec![args.env.clone()],
        all: false,
    };
    let names = selection.names(&loader, false)?;
    let outcomes = super::load_each(&mut loader, &names, ui)?;
    if let Some(error) = super::invalid_summary(&outcomes) {
        return Err(error);
    }
    let env = match outcomes.into_iter().next().map(|o| o.result) {
        Some(Ok(env)) => env,
        _ => {
            return Err(load_error(
                crate::spec::LoadError::BadName {
                    name: args.env.clone(),
                },
                &loader,
            ));
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| local_error("cannot start the async runtime", e))?;
    runtime.block_on(serve(env, args, ui))
}

/// Connects to `DATABASE_URL`, creating the environment's database if needed.
async fn database(url: &str, env: &str) -> Result<(deadpool_postgres::Pool, String), Error> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| local_error("DATABASE_URL is not a Postgres URL", e))?;
    let name = format!("pipeline_{}", env.replace('-', "_"));
    let (client, connection) = config.connect(tokio_postgres::NoTls).await.map_err(|e| {
        local_error(
            &format!("cannot connect to Postgres at {url} (set DATABASE_URL)"),
            with_causes(&e),
        )
    })?;
    let task = tokio::spawn(connection);
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .map_err(|e| local_error("cannot list databases", e))?
        .is_some();
    if !exists {
        // The name is `pipeline_` and a validated environment name.
        if let Err(e) = client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
        {
            // Another process may have created it meanwhile.
            if e.code() != Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) {
                return Err(local_error(&format!("cannot create database {name}"), e));
            }
        }
    }
    drop(client);
    let _ = task.await;
    config.dbname(&name);
    let manager = deadpool_postgres::Manager::from_config(
        config,
        tokio_postgres::NoTls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    let pool = deadpool_postgres::Pool::builder(manager)
        .max_size(16)
        .build()
        .map_err(|e| local_error("cannot build the connection pool", e))?;
    Ok((pool, name))
}

const QUEUE: &str = r#"
CREATE TABLE IF NOT EXISTS pipeline.local_queue (
    id bigserial PRIMARY KEY,
    body text NOT NULL,
    object_key text NOT NULL,
    receives integer NOT NULL DEFAULT 0,
    visible_at timestamptz NOT NULL DEFAULT now(),
    dead boolean NOT NULL DEFAULT false,
    sent_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS local_queue_visible_idx ON pipeline.local_queue (visible_at) WHERE NOT dead;
-- The chunk a message carries (none for an S3 notification), and the run of
-- `pipeline local` that received it last (see `RUN_LOCK`).
ALTER TABLE pipeline.local_queue ADD COLUMN IF NOT EXISTS chunk integer;
ALTER TABLE pipeline.local_queue ADD COLUMN IF NOT EXISTS leased_by integer;
"#;

/// Each run of `pipeline local` holds the advisory lock (this, its run
/// number) for as long as it lives, so that another run can tell the leases
/// of a dead run (its lock is free) from those of a live one.
const RUN_LOCK: &str = "hashtext('pipeline.local_queue')";

/// The S3 notification S3 would send for a stored object, field for field.
fn s3_event(key: &str, size: u64) -> String {
    let now = chrono::Utc::now();
    serde_json::json!({
        "Records": [{
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": "local",
            "eventTime": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "eventName": "ObjectCreated:Put",
            "userIdentity": {"principalId": "local"},
            "requestParameters": {"sourceIPAddress": "127.0.0.1"},
            "responseElements": {"x-amz-request-id": "local", "x-amz-id-2": "local"},
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": "raw-batches",
                "bucket": {"name": "local", "ownerIdentity": {"principalId": "local"}, "arn": "arn:aws:s3:::local"},
                "object": {"key": key, "size": size, "eTag": "", "sequencer": format!("{:016X}", now.timestamp_micros())},
            },
        }]
    })
    .to_string()
}

/// Puts a notification on the local queue when an object is stored.
struct QueueNotify {
    pool: deadpool_postgres::Pool,
    wake: Arc<tokio::sync::Notify>,
}

impl Notify for QueueNotify {
    fn stored(&self, key: &str, size: u64) -> BoxFuture<'_, Result<(), String>> {
        let key = key.to_string();
        Box::pin(async move {
            let client = self.pool.get().await.map_err(|e| e.to_string())?;
            client
                .execute(
                    "INSERT INTO pipeline.local_queue (body, object_key) VALUES ($1, $2)",
                    &[&s3_event(&key, size), &key],
                )
                .await
                .map_err(|e| e.to_string())?;
            self.wake.notify_waiters();
            Ok(())
        })
    }
}

impl ChunkQueue for QueueNotify {
    /// Queues the messages at once, leaving out those of chunks that have a
    /// message on the queue already (a batch's notification delivered again
    /// asks for the chunks still pending, often still queued).
    fn send(&self, messages: Vec<ChunkMessage>) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let mut client = self.pool.get().await.map_err(|e| e.to_string())?;
            let tx = client.transaction().await.map_err(|e| e.to_string())?;
            for message in messages {
                let body = serde_json::to_string(&ChunkBody {
                    chunk: message.clone(),
                })
                .map_err(|e| e.to_string())?;
                let chunk = message.chunk as i32;
                tx.execute(
                    "INSERT INTO pipeline.local_queue (body, object_key, chunk) SELECT $1, $2, $3
                     WHERE NOT EXISTS (SELECT 1 FROM pipeline.local_queue WHERE object_key = $2 AND chunk = $3 AND NOT dead)",
                    &[&body, &message.key, &chunk],
                )
                .await
                .map_err(|e| e.to_string())?;
            }
            tx.commit().await.map_err(|e| e.to_string())?;
            self.wake.notify_waiters();
            Ok(())
        })
    }
}

/// After a crash: batches accepted but neither loaded nor with their
/// notification on the queue get it again. The chunks of a batch may be
/// queued, but not all of them (a chunk's message can be dead) nor its merge
/// (due after the last chunk's load): the notification makes the loader send
/// the messages of the chunks still pending, or merge the batch.
async fn recover(ctx: &Context) -> Result<usize, Error> {
    let client = ctx
        .pool
        .get()
        .await
        .map_err(|e| local_error("database", e))?;
    let batches = pipeline_shared::db::unfinished(&**client)
        .await
        .map_err(|e| local_error("cannot read unfinished batches", e))?;
    let mut requeued = 0;
    for batch in batches {
        // A batch in chunks has a message per chunk: one row or more.
        let queued: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pipeline.local_queue WHERE object_key = $1 AND chunk IS NULL AND NOT dead)",
                &[&batch.object_key],
            )
            .await
            .map_err(|e| local_error("cannot read the queue", e))?
            .get(0);
        if queued {
            continue;
        }
        let Ok(Some(info)) = ctx.store.head(&batch.object_key).await else {
            continue;
        };
        client
            .execute(
                "INSERT INTO pipeline.local_queue (body, object_key) VALUES ($1, $2)",
                &[&s3_event(&batch.object_key, info.size), &batch.object_key],
            )
            .await
            .map_err(|e| local_error("cannot write the queue", e))?;
        requeued += 1;
    }
    Ok(requeued)
}

/// After a crash: the messages that a dead run had received (a worker's
/// lease) are visible again at once rather than when their lease ends. A
/// message of a live run is left alone; one delivered twice would be a no-op.
async fn reclaim(ctx: &Context, run: i32) -> Result<u64, Error> {
    let client = ctx
        .pool
        .get()
        .await
        .map_err(|e| local_error("database", e))?;
    client
        .execute(
            &format!(
                "UPDATE pipeline.local_queue SET visible_at = now()
                 WHERE NOT dead AND visible_at > now() AND leased_by IS DISTINCT FROM $1
                   AND (leased_by IS NULL OR pg_try_advisory_xact_lock({RUN_LOCK}, leased_by))"
            ),
            &[&run],
        )
        .await
        .map_err(|e| local_error("cannot reclaim the queue's leases", e))
}

/// Queue settings from the spec.
#[derive(Debug, Clone, Copy)]
struct QueueSettings {
    /// This run's number (see [`RUN_LOCK`]).
    run: i32,
    batch_size: i64,
    max_receives: i32,
    retry_after: Duration,
    /// The test hook [`PAUSE_AFTER_CHUNKS`].
    pause_after_chunks: Option<usize>,
}

/// One worker: receives messages as SQS would and hands them to the loader.
async fn worker(
    ctx: Context,
    settings: QueueSettings,
    wake: Arc<tokio::sync::Notify>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        let handled = match receive_and_load(&ctx, settings).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "local queue");
                0
            }
        };
        if handled == 0 {
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

async fn receive_and_load(ctx: &Context, settings: QueueSettings) -> Result<usize, String> {
    let client = ctx.pool.get().await.map_err(|e| e.to_string())?;
    let retry = settings.retry_after.as_secs_f64();
    let rows = client
        .query(
            "UPDATE pipeline.local_queue SET receives = receives + 1, visible_at = now() + make_interval(secs => $2), leased_by = $3
             WHERE id IN (SELECT id FROM pipeline.local_queue WHERE NOT dead AND visible_at <= now()
                          ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
             RETURNING id, body, receives",
            &[&settings.batch_size, &retry, &settings.run],
        )
        .await
        .map_err(|e| e.to_string())?;
    drop(client);
    if rows.is_empty() {
        return Ok(0);
    }
    let mut event = SqsEvent::default();
    for row in &rows {
        let mut message = SqsMessage::default();
        message.message_id = Some(row.get::<_, i64>(0).to_string());
        message.body = Some(row.get(1));
        event.records.push(message);
    }
    let response = match settings.pause_after_chunks {
        None => loader::handle(ctx, event).await,
        Some(limit) => handle_until_paused(ctx, event, limit).await,
    };
    let failed: Vec<i64> = response
        .batch_item_failures
        .iter()
        .filter_map(|f| f.item_identifier.parse().ok())
        .collect();
    let client = ctx.pool.get().await.map_err(|e| e.to_string())?;
    for row in &rows {
        let id: i64 = row.get(0);
        let receives: i32 = row.get(2);
        if !failed.contains(&id) {
            client
                .execute("DELETE FROM pipeline.local_queue WHERE id = $1", &[&id])
                .await
                .map_err(|e| e.to_string())?;
        } else if receives >= settings.max_receives {
            tracing::error!(
                message_id = id,
                receives,
                "message moved to the dead-letter queue"
            );
            client
                .execute(
                    "UPDATE pipeline.local_queue SET dead = true WHERE id = $1",
                    &[&id],
                )
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(rows.len())
}

/// The test hook [`PAUSE_AFTER_CHUNKS`]: hands the messages to the loader one
/// by one, and waits forever instead of handing over one chunk too many.
async fn handle_until_paused(ctx: &Context, event: SqsEvent, limit: usize) -> SqsBatchResponse {
    use std::sync::atomic::Ordering;
    let mut response = SqsBatchResponse::default();
    for message in event.records {
        let chunk = message
            .body
            .as_deref()
            .is_some_and(|b| serde_json::from_str::<ChunkBody>(b).is_ok());
        if chunk && CHUNKS_HANDED.fetch_add(1, Ordering::SeqCst) >= limit {
            tracing::warn!("{PAUSE_AFTER_CHUNKS}: {limit} chunks handed over, pausing");
            std::future::pending::<()>().await;
        }
        let mut single = SqsEvent::default();
        single.records.push(message);
        let handled = loader::handle(ctx, single).await;
        response
            .batch_item_failures
            .extend(handled.batch_item_failures);
    }
    response
}

/// State of the HTTP server.
#[derive(Clone)]
struct Server {
    ctx: Context,
    /// The object store, for uploads through presigned URLs.
    objects: LocalStore,
    uploads_dir: PathBuf,
    api_key: Option<String>,
    openapi: Bytes,
}

async fn dispatch(
    axum::extract::State(server): axum::extract::State<Server>,
    request: axum::extract::Request,
) -> axum::response::Response {
    let (parts, body) = request.into_parts();
    let respond = |r: http::Response<Bytes>| {
        let (parts, body) = r.into_parts();
        axum::response::Response::from_parts(parts, axum::body::Body::from(body))
    };
    if let Some(key) = parts.uri.path().strip_prefix("/local-uploads/") {
        let key = key.to_string();
        return respond(upload(&server, &key, parts.uri.query(), parts.method.clone(), body).await);
    }
    if parts.uri.path() == "/openapi.json" {
        return respond(
            http::Response::builder()
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(server.openapi.clone())
                .unwrap_or_default(),
        );
    }
    if let Some(expected) = &server.api_key {
        let given = parts.headers.get("x-api-key").and_then(|v| v.to_str().ok());
        if given != Some(expected.as_str()) {
            // API Gateway answers a missing or wrong key with 403.
            return respond(pipeline_shared::api::error(
                http::StatusCode::FORBIDDEN,
                "forbidden",
                "a valid x-api-key header is required",
            ));
        }
    }
    let body = match axum::body::to_bytes(body, MAX_REQUEST_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return respond(pipeline_shared::api::error(
                http::StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "requests are limited to {MAX_REQUEST_BYTES} bytes, as in API Gateway; use an upload"
                ),
            ));
        }
    };
    let request = http::Request::from_parts(parts, body);
    let response = if request.method() == http::Method::POST {
        ingest::handle(&server.ctx, request).await
    } else {
        ::query::handle(&server.ctx, request).await
    };
    respond(response)
}

/// `PUT /local-uploads/<key>?[uploadId=..&partNumber=..&]expires=..&signature=..`:
/// what a presigned S3 PUT of an object or of a part does, streamed to a
/// file; an object is then stored whole, a part kept until its upload
/// completes. The answer's `ETag` is the SHA-256 of the body.
async fn upload(
    server: &Server,
    key: &str,
    query: Option<&str>,
    method: http::Method,
    body: axum::body::Body,
) -> http::Response<Bytes> {
    use futures_util::StreamExt;
    use pipeline_shared::api::error;
    use sha2::Digest;
    use tokio::io::AsyncWriteExt;
    if method != http::Method::PUT {
        return error(
            http::StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "upload URLs take PUT",
        );
    }
    let mut expires = 0i64;
    let mut signature = String::new();
    let mut upload_id = None;
    let mut part_number = 0u32;
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "expires" => expires = v.parse().unwrap_or(0),
            "signature" => signature = v.into_owned(),
            "uploadId" => upload_id = Some(v.into_owned()),
            "partNumber" => part_number = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    let target = match &upload_id {
        Some(upload_id) => UploadTarget::Part {
            upload_id,
            part_number,
        },
        None => UploadTarget::Whole,
    };
    if !server.objects.verify_upload(
        key,
        target,
        expires,
        &signature,
        chrono::Utc::now().timestamp(),
    ) {
        return error(
            http::StatusCode::FORBIDDEN,
            "forbidden",
            "the upload URL is not valid or has expired",
        );
    }
    let Some((dataset, batch_id)) = pipeline_shared::api::parse_object_key(key) else {
        return error(
            http::StatusCode::FORBIDDEN,
            "forbidden",
            "not an upload key",
        );
    };
    let tmp = server
        .uploads_dir
        .join(format!("{}.part", uuid::Uuid::new_v4()));
    let mut file = match tokio::fs::File::create(&tmp).await {
        Ok(f) => f,
        Err(e) => return pipeline_shared::api::unavailable("local storage", &e),
    };
    let mut stream = body.into_data_stream();
    let mut hash = sha2::Sha256::new();
    while let Some(chunk) = stream.next().await {
        let written = match chunk {
            Ok(bytes) => {
                hash.update(&bytes);
                file.write_all(&bytes).await
            }
            Err(e) => Err(std::io::Error::other(e.to_string())),
        };
        if let Err(e) = written {
            let _ = tokio::fs::remove_file(&tmp).await;
            return error(
                http::StatusCode::BAD_REQUEST,
                "incomplete",
                format!("the upload was cut short: {e}"),
            );
        }
    }
    if let Err(e) = file.sync_all().await {
        return pipeline_shared::api::unavailable("local storage", &e);
    }
    drop(file);
    let sha256 = hex(&hash.finalize());
    let stored = match target {
        UploadTarget::Part {
            upload_id,
            part_number,
        } => {
            server
                .objects
                .put_part(key, upload_id, part_number, &tmp)
                .await
        }
        UploadTarget::Whole => {
            let metadata = std::collections::BTreeMap::from([
                ("batch-id".to_string(), batch_id.to_string()),
                ("dataset".to_string(), dataset.to_string()),
                ("sha256".to_string(), sha256.clone()),
            ]);
            server.objects.put_file(key, &tmp, &metadata).await
        }
    };
    match stored {
        Ok(()) => {}
        Err(pipeline_shared::store::StoreError::InvalidUpload(reason)) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            return error(http::StatusCode::NOT_FOUND, "no_such_upload", reason);
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            return pipeline_shared::api::unavailable("local storage", &e);
        }
    }
    http::Response::builder()
        .header(http::header::ETAG, format!("\"{sha256}\""))
        .body(Bytes::new())
        .unwrap_or_default()
}

async fn serve(env: crate::spec::Environment, args: &Args, ui: &Ui) -> Result<(), Error> {
    let spec = &env.spec;
    let (pool, db_name) = database(&args.database_url, &env.name).await?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(".pipeline").join(&env.name));
    tokio::fs::create_dir_all(&data_dir)
        .await
        .map_err(|e| local_error(&format!("cannot create {}", data_dir.display()), e))?;

    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], args.port)))
        .await
        .map_err(|e| local_error(&format!("cannot listen on 127.0.0.1:{}", args.port), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| local_error("listener", e))?;
    let uploads_dir = data_dir.join("uploads");
    tokio::fs::create_dir_all(&uploads_dir)
        .await
        .map_err(|e| local_error(&format!("cannot create {}", uploads_dir.display()), e))?;

    let wake = Arc::new(tokio::sync::Notify::new());
    let notify = Arc::new(QueueNotify {
        pool: pool.clone(),
        wake: wake.clone(),
    });
    let queue: Arc<dyn ChunkQueue> = notify.clone();
    let objects = LocalStore::new(data_dir.join("objects"))
        .with_notify(notify)
        .with_signer(Signer {
            base_url: format!("http://{addr}"),
            secret: uuid::Uuid::new_v4().as_bytes().to_vec(),
        });
    let ctx = Context {
        env: env.name.clone(),
        datasets: spec.datasets.clone(),
        store: Store::Local(objects.clone()),
        pool: pool.clone(),
        max_inline_bytes: spec.api.max_inline_batch_kib as usize * 1024,
        chunk_bytes: args.chunk_size,
        upload_part_bytes: args.upload_part_size,
        chunk_queue: Some(queue),
    };
    let report = loader::migrate(&ctx)
        .await
        .map_err(|e| local_error("migration failed", e))?;
    for statement in &report.statements {
        ui.info(format_args!("migrated: {statement}"));
    }
    {
        let client = pool.get().await.map_err(|e| local_error("database", e))?;
        client
            .batch_execute(QUEUE)
            .await
            .map_err(|e| local_error("cannot create the local queue", e))?;
    }
    // This run's lock, held by a connection kept until the process ends.
    let run_lock = pool.get().await.map_err(|e| local_error("database", e))?;
    let run = loop {
        let run = uuid::Uuid::new_v4().as_u128() as i32;
        let locked: bool = run_lock
            .query_one(
                &format!("SELECT pg_try_advisory_lock({RUN_LOCK}, $1)"),
                &[&run],
            )
            .await
            .map_err(|e| local_error("cannot lock the local queue", e))?
            .get(0);
        if locked {
            break run;
        }
    };
    let reclaimed = reclaim(&ctx, run).await?;
    if reclaimed > 0 {
        ui.info(format_args!(
            "{reclaimed} messages received before the last stop are delivered again"
        ));
    }
    let requeued = recover(&ctx).await?;
    if requeued > 0 {
        ui.info(format_args!(
            "requeued {requeued} batches accepted before the last stop"
        ));
    }

    let api_key = match spec.api.auth {
        AuthMode::ApiKey => Some(local_api_key(&data_dir).await?),
        AuthMode::Iam | AuthMode::None => None,
    };
    // The document served here names this server, so clients and API
    // fuzzers pointed at it test this server.
    let mut document = crate::synth::openapi::document(&env.name, spec, false);
    document["servers"] = serde_json::json!([{"url": format!("http://{addr}")}]);
    let openapi = serde_json::to_vec_pretty(&document).unwrap_or_default();

    let (stop_tx, stop_rx) = watch::channel(false);
    let settings = QueueSettings {
        run,
        batch_size: i64::from(spec.queue.batch_size),
        max_receives: spec.queue.max_receives as i32,
        retry_after: match args.retry_after {
            Some(seconds) => Duration::from_secs(seconds),
            None => Duration::from_secs(u64::from(spec.queue.visibility_timeout_seconds))
                .min(MAX_LOCAL_RETRY),
        },
        pause_after_chunks: std::env::var(PAUSE_AFTER_CHUNKS)
            .ok()
            .and_then(|v| v.parse().ok()),
    };
    let workers: Vec<_> = (0..args.workers.max(1))
        .map(|_| tokio::spawn(worker(ctx.clone(), settings, wake.clone(), stop_rx.clone())))
        .collect();

    let app = axum::Router::new().fallback(dispatch).with_state(Server {
        ctx,
        objects,
        uploads_dir,
        api_key: api_key.clone(),
        openapi: Bytes::from(openapi),
    });
    ui.event(&Listening {
        event: "listening",
        url: format!("http://{addr}"),
        environment: env.name.clone(),
        database: db_name,
        data_dir: data_dir.display().to_string(),
        api_key,
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| local_error("the HTTP server failed", e))?;
    // Requests are done; let loads in flight finish.
    let _ = stop_tx.send(true);
    for w in workers {
        let _ = w.await;
    }
    drop(run_lock);
    ui.info("stopped");
    Ok(())
}

/// The local API key, kept in the data directory so that it survives restarts.
async fn local_api_key(data_dir: &std::path::Path) -> Result<String, Error> {
    let path = data_dir.join("api-key");
    match tokio::fs::read_to_string(&path).await {
        Ok(key) if !key.trim().is_empty() => Ok(key.trim().to_string()),
        _ => {
            let key = format!("local-{}", uuid::Uuid::new_v4().simple());
            tokio::fs::write(&path, &key)
                .await
                .map_err(|e| local_error(&format!("cannot write {}", path.display()), e))?;
            Ok(key)
        }
    }
}

/// Ctrl-C, or SIGTERM as sent by process managers.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
