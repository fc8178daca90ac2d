//! The whole pipeline on this machine (`pipeline local`), on the same
//! handler code as in Lambda.
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

use crate::spec::model::AuthMode;
use crate::{Error, output::Ui};

mod queue;
mod rollout;
mod server;
pub mod tokens;
mod versions;
mod watch;

use queue::*;
pub(crate) use rollout::{LocalAliases, LocalGates};
use server::*;
pub(crate) use versions::PgStore;
pub use watch::Reload;

/// The largest request body the local server takes, as API Gateway (10 MB).
const MAX_REQUEST_BYTES: usize = 10 * 1024 * 1024;
/// The most a compressed request body may decode to (as much as a plain
/// one may be); the ingest handler refuses a decoded body above the
/// environment's inline limit with its own 413.
const MAX_DECODED_BYTES: usize = 10 * 1024 * 1024;
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
/// Test hook, not a setting: with `PIPELINE_LOCAL_TEST_EXPIRED_URLS=N` the
/// first N upload URLs this process signs have expired already, as if their
/// client were slower than their lifetime (S3 then answers 403).
const EXPIRED_URLS: &str = "PIPELINE_LOCAL_TEST_EXPIRED_URLS";
/// Chunk messages handed to the loader by this process (for the test hook).
static CHUNKS_HANDED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How `pipeline local` runs an environment (its command-line options).
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
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
    /// Connections to Postgres for the API and the loader workers, and as
    /// many again for reads. A request that finds every connection in use
    /// waits up to 5 s, then gets 503 with `Retry-After`.
    #[arg(long, value_name = "N", default_value_t = 16,
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub pool_size: u16,
    /// Seconds each loader invocation may run, as Lambda's timeout: it is
    /// stopped then (its load rolled back, its connection closed), after
    /// stopping its own work a little before to record what it could not
    /// finish [default: the spec's `functions.loader.timeout_seconds`].
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub function_timeout: Option<u64>,
    /// Loader workers running at once.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Seconds before a failed or abandoned message is delivered again
    /// [default: the queue's visibility timeout, at most 30].
    #[arg(long, value_name = "SECONDS")]
    pub retry_after: Option<u64>,
    /// Objects (NDJSON or CSV) larger than this many bytes load in parallel
    /// chunks of about this size, merged in slices, so that no invocation's
    /// work grows with the batch (0: one stream, whatever the size)
    /// [default: 64 MiB].
    #[arg(long, value_name = "BYTES")]
    pub chunk_size: Option<u64>,
    /// Rows of a chunked batch merged into its table per transaction: each
    /// commits with its progress, and the batch's rows show once all are in.
    #[arg(long, value_name = "ROWS", default_value_t = pipeline_shared::db::DEFAULT_SLICE_ROWS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub merge_slice_rows: u64,
    /// Uploads larger than this many bytes are multipart uploads, in parts of
    /// this size.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_UPLOAD_PART_BYTES,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub upload_part_size: u64,
    /// Divides the times of rollouts (bakes, intervals, polls of the gates)
    /// by N: a changed spec rolls out as the environment's `rollout` says,
    /// N times faster.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=86400))]
    pub rollout_speed: u32,
}

impl Settings {
    /// The chunk size: the one given, else the functions' default.
    pub fn chunk_bytes(&self) -> u64 {
        self.chunk_size.unwrap_or(DEFAULT_CHUNK_BYTES)
    }
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
    /// With `auth: cognito`: the file of the clients' ids and secrets.
    #[serde(skip_serializing_if = "Option::is_none")]
    clients: Option<String>,
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
        if let Some(clients) = &self.clients {
            writeln!(
                f,
                "  clients:  {clients}  (tokens: POST {}/oauth2/token, client credentials)",
                self.url
            )?;
        }
        writeln!(f, "  OpenAPI:  {}/openapi.json", self.url)?;
        writeln!(
            f,
            "Ctrl-C stops accepting requests, lets loads in flight finish, and exits."
        )
    }
}

/// An error of local mode: what failed, and why.
pub fn local_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Local {
        message: format!("{what}: {e}"),
    }
}

/// A migration that failed; one refused for losing data is refused here
/// as by `deploy` (exit 2), nothing changed.
fn migration_error(e: loader::MessageError) -> Error {
    match e {
        loader::MessageError::Db(pipeline_shared::db::DbError::Destructive { .. }) => {
            Error::Refused {
                message: e.to_string(),
                help: Some(
                    "nothing was changed; the data and the previous tables are as they were".into(),
                ),
            }
        }
        e => local_error("migration failed", e),
    }
}

/// A pool on the database of `pipeline local`'s environment `env`, which
/// must exist (for `pipeline rollout --local`).
pub async fn environment_pool(url: &str, env: &str) -> Result<deadpool_postgres::Pool, Error> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| local_error("DATABASE_URL is not a Postgres URL", e))?;
    let name = format!("pipeline_{}", env.replace('-', "_"));
    config.dbname(&name);
    match config.connect(tokio_postgres::NoTls).await {
        Ok(_) => {}
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INVALID_CATALOG_NAME) => {
            return Err(Error::Rejected {
                message: format!(
                    "no `pipeline local` has run `{env}` on this Postgres (it has no database {name})"
                ),
            });
        }
        Err(e) => {
            return Err(local_error(
                &format!("cannot connect to Postgres at {url} (set DATABASE_URL)"),
                crate::chain::message_chain(&e),
            ));
        }
    }
    pool(config, 2)
}

/// The environment's database pools, made by [`database`].
struct Pools {
    /// For everything but reads.
    main: deadpool_postgres::Pool,
    /// For the query handler: each statement stopped after
    /// `READ_TIMEOUT_MS`, as the `pipeline_query` role's setting does in AWS.
    reads: deadpool_postgres::Pool,
    /// The database's name.
    name: String,
    /// How to connect to it, for the connection that holds the run's lock.
    config: tokio_postgres::Config,
}

fn pool(config: tokio_postgres::Config, size: usize) -> Result<deadpool_postgres::Pool, Error> {
    let manager = deadpool_postgres::Manager::from_config(
        config,
        tokio_postgres::NoTls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    pipeline_shared::runtime::bounded_pool(manager, size, pipeline_shared::runtime::POOL_IDLE_LIMIT)
        .map_err(|e| local_error("cannot build the connection pool", e))
}

/// Connects to `DATABASE_URL`, creating the environment's database if needed.
async fn database(url: &str, env: &str, size: usize) -> Result<Pools, Error> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| local_error("DATABASE_URL is not a Postgres URL", e))?;
    let name = format!("pipeline_{}", env.replace('-', "_"));
    let (client, connection) = config.connect(tokio_postgres::NoTls).await.map_err(|e| {
        local_error(
            &format!("cannot connect to Postgres at {url} (set DATABASE_URL)"),
            crate::chain::message_chain(&e),
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
    // A session whose client is gone (an invocation stopped at its
    // deadline closes its connection) is ended within a second, statement
    // and locks included, as the loader's role sets it in AWS.
    let options = config.get_options().unwrap_or_default().to_string();
    config.options(format!(
        "{options} -c client_connection_check_interval={}",
        pipeline_shared::db::CLIENT_CHECK_MS
    ));
    let mut reads = config.clone();
    let options = reads.get_options().unwrap_or_default().to_string();
    reads.options(format!(
        "{options} -c statement_timeout={}",
        pipeline_contract::READ_TIMEOUT_MS
    ));
    Ok(Pools {
        main: pool(config.clone(), size)?,
        reads: pool(reads, size)?,
        name,
        config,
    })
}

/// Runs the pipeline of `env` on this machine until Ctrl-C (or SIGTERM):
/// the API, the object store, the queue and the loader workers, on Postgres.
pub async fn serve(
    env: crate::spec::Environment,
    settings: &Settings,
    ui: &Ui,
    reload: Reload,
) -> Result<(), Error> {
    let spec = &env.spec;
    // Edits from now on are deployed, those made before the banner too.
    let seen = watch::stamps(&env.files);
    let Pools {
        main: pool,
        reads,
        name: db_name,
        config,
    } = database(
        &settings.database_url,
        &env.name,
        usize::from(settings.pool_size),
    )
    .await?;
    let data_dir = settings
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(".pipeline").join(&env.name));
    tokio::fs::create_dir_all(&data_dir)
        .await
        .map_err(|e| local_error(&format!("cannot create {}", data_dir.display()), e))?;

    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], settings.port)))
        .await
        .map_err(|e| local_error(&format!("cannot listen on 127.0.0.1:{}", settings.port), e))?;
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
        })
        .with_expired_urls(
            std::env::var(EXPIRED_URLS)
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
        );
    let ctx = Context {
        env: env.name.clone(),
        datasets: spec.datasets.clone(),
        store: Store::Local(objects.clone()),
        pool: pool.clone(),
        max_inline_bytes: spec.api.max_inline_batch_kib as usize * 1024,
        chunk_bytes: settings.chunk_bytes(),
        upload_part_bytes: settings.upload_part_size,
        merge_slice_rows: settings.merge_slice_rows,
        max_decoded_ratio: u64::from(spec.api.max_decoded_ratio),
        chunk_queue: Some(queue),
        max_receives: Some(spec.queue.max_receives),
        definitions: Default::default(),
    };
    {
        let client = pool.get().await.map_err(|e| local_error("database", e))?;
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS pipeline;{QUEUE}{}",
                versions::VERSIONS
            ))
            .await
            .map_err(|e| local_error("cannot create the local queue", e))?;
    }
    let router = Arc::new(versions::Router::new(
        ctx.clone(),
        reads,
        format!("http://{addr}"),
    ));
    router
        .refresh()
        .await
        .map_err(|e| local_error("cannot read the versions", e))?;
    let prepared = watch::prepare(&router, ui, spec).await?;
    watch::first(&router, prepared.to()).await?;
    // This run's lock, held by a connection of its own (outside the pool)
    // kept until the process ends.
    let (run_lock, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| local_error("database", e))?;
    let lock_task = tokio::spawn(connection);
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

    let auth = match spec.api.auth {
        AuthMode::ApiKey => LocalAuth::Key(local_api_key(&data_dir).await?),
        AuthMode::Cognito => LocalAuth::Tokens(
            tokens::Issuer::load(
                &data_dir,
                &spec.api.clients,
                spec.api.metering_keys,
                &format!("http://{addr}/oauth2/token"),
            )
            .await?,
        ),
        AuthMode::Iam | AuthMode::None => LocalAuth::Open,
    };
    let api_key = match &auth {
        LocalAuth::Key(key) => Some(key.clone()),
        _ => None,
    };
    let clients = matches!(auth, LocalAuth::Tokens(_))
        .then(|| data_dir.join(tokens::CLIENTS_FILE).display().to_string());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let queue = QueueSettings {
        run,
        batch_size: i64::from(spec.queue.batch_size),
        max_receives: spec.queue.max_receives as i32,
        retry_after: match settings.retry_after {
            Some(seconds) => Duration::from_secs(seconds),
            None => Duration::from_secs(u64::from(spec.queue.visibility_timeout_seconds))
                .min(MAX_LOCAL_RETRY),
        },
        function_timeout: Duration::from_secs(
            settings
                .function_timeout
                .unwrap_or(u64::from(spec.functions.loader.timeout_seconds)),
        ),
        pause_after_chunks: std::env::var(PAUSE_AFTER_CHUNKS)
            .ok()
            .and_then(|v| v.parse().ok()),
    };
    let workers: Vec<_> = (0..settings.workers.max(1))
        .map(|_| tokio::spawn(worker(router.clone(), queue, wake.clone(), stop_rx.clone())))
        .collect();
    let follower = tokio::spawn(watch::follow_aliases(router.clone(), stop_rx.clone()));

    let app = axum::Router::new().fallback(dispatch).with_state(Server {
        router: router.clone(),
        objects,
        uploads_dir,
        auth,
    });
    // Handlers in place before anyone is told where to send requests (or
    // signals): a Ctrl-C right after "listening" stops cleanly too.
    let shutdown = shutdown_signal().map_err(|e| local_error("cannot handle signals", e))?;
    ui.event(&Listening {
        event: "listening",
        url: format!("http://{addr}"),
        environment: env.name.clone(),
        database: db_name,
        data_dir: data_dir.display().to_string(),
        api_key,
        clients,
    });
    let deploys = tokio::spawn(watch::deploys(
        router,
        ui.clone(),
        rollout::Pace {
            speed: settings.rollout_speed,
        },
        reload,
        (env.files.clone(), seen),
        prepared,
        stop_rx.clone(),
    ));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| local_error("the HTTP server failed", e))?;
    // Requests are done; let loads in flight finish.
    let _ = stop_tx.send(true);
    for w in workers {
        let _ = w.await;
    }
    let _ = follower.await;
    let _ = deploys.await;
    drop(run_lock);
    let _ = lock_task.await;
    ui.info("stopped");
    Ok(())
}

/// The local API key, kept in the data directory so that it survives
/// restarts, in a file only its owner may read or write (0600; a file an
/// earlier version wrote with wider permissions is narrowed).
async fn local_api_key(data_dir: &std::path::Path) -> Result<String, Error> {
    use std::os::unix::fs::PermissionsExt;
    let path = data_dir.join("api-key");
    let failed = |e| local_error(&format!("cannot write {}", path.display()), e);
    if let Ok(key) = tokio::fs::read_to_string(&path).await
        && !key.trim().is_empty()
    {
        let owner_only = std::fs::Permissions::from_mode(0o600);
        tokio::fs::set_permissions(&path, owner_only)
            .await
            .map_err(failed)?;
        return Ok(key.trim().to_string());
    }
    let key = format!("local-{}", uuid::Uuid::new_v4().simple());
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .await
        .map_err(failed)?;
    tokio::io::AsyncWriteExt::write_all(&mut file, key.as_bytes())
        .await
        .map_err(failed)?;
    // Written once flushed (a tokio file writes on a background thread).
    tokio::io::AsyncWriteExt::flush(&mut file)
        .await
        .map_err(failed)?;
    Ok(key)
}

/// Ctrl-C (SIGINT), or SIGTERM as sent by process managers: the handlers
/// are installed at once, the returned future ends on the first signal.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}
