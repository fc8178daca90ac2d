//! Building a function's [`Context`] from its environment, once per process.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::api::Context;
use crate::chunks::{ChunkQueue, SqsChunkQueue};
use crate::dataset::Dataset;
use crate::store::{DEFAULT_UPLOAD_PART_BYTES, LocalStore, S3Store, Store};

/// Size of the chunks large batches are cut into: 64 MiB.
pub const DEFAULT_CHUNK_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {0} is not set")]
    Missing(&'static str),
    #[error("{what}: {detail}")]
    Invalid { what: String, detail: String },
}

fn var(name: &'static str) -> Result<String, ConfigError> {
    std::env::var(name).map_err(|_| ConfigError::Missing(name))
}

/// The datasets: `PIPELINE_DATASETS` (JSON), or the file `PIPELINE_DATASETS_FILE`
/// (default: `datasets.json` beside the executable, as the package ships it).
pub fn datasets() -> Result<BTreeMap<String, Dataset>, ConfigError> {
    let invalid = |what: String, e: &dyn std::fmt::Display| ConfigError::Invalid {
        what,
        detail: e.to_string(),
    };
    if let Ok(json) = std::env::var("PIPELINE_DATASETS") {
        return serde_json::from_str(&json).map_err(|e| invalid("PIPELINE_DATASETS".into(), &e));
    }
    let path = match std::env::var("PIPELINE_DATASETS_FILE") {
        Ok(p) => PathBuf::from(p),
        Err(_) => std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|d| d.join("datasets.json")))
            .unwrap_or_else(|| PathBuf::from("datasets.json")),
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| invalid(format!("cannot read {}", path.display()), &e))?;
    serde_json::from_str(&text)
        .map_err(|e| invalid(format!("{} is not a datasets file", path.display()), &e))
}

/// A connection pool from `DATABASE_URL`. With `sslmode=require` in the URL
/// the connections use TLS and check the server's certificate and name
/// against the CA certificates in the PEM file `PGSSLROOTCERT` (for RDS, the
/// RDS CA bundle shipped with the function); there is no unverified TLS.
pub fn pool(url: &str, size: usize) -> Result<deadpool_postgres::Pool, ConfigError> {
    pool_with_roots(
        url,
        size,
        std::env::var_os("PGSSLROOTCERT").map(PathBuf::from),
    )
}

/// [`pool`], with the CA file given rather than read from the environment.
pub fn pool_with_roots(
    url: &str,
    size: usize,
    roots: Option<PathBuf>,
) -> Result<deadpool_postgres::Pool, ConfigError> {
    let config: tokio_postgres::Config =
        url.parse()
            .map_err(|e: tokio_postgres::Error| ConfigError::Invalid {
                what: "DATABASE_URL".into(),
                detail: e.to_string(),
            })?;
    config_pool(config, size, roots, "DATABASE_URL")
}

fn manager_config() -> deadpool_postgres::ManagerConfig {
    deadpool_postgres::ManagerConfig {
        recycling_method: deadpool_postgres::RecyclingMethod::Fast,
    }
}

/// A pool for a connection configuration: `sslmode=require` means verified
/// TLS here; without it (`disable`, or the default `prefer`), plain
/// connections, as to a local server.
fn config_pool(
    config: tokio_postgres::Config,
    size: usize,
    roots: Option<PathBuf>,
    what: &str,
) -> Result<deadpool_postgres::Pool, ConfigError> {
    let manager = match config.get_ssl_mode() {
        tokio_postgres::config::SslMode::Require => {
            deadpool_postgres::Manager::from_config(config, tls(roots)?, manager_config())
        }
        _ => {
            deadpool_postgres::Manager::from_config(config, tokio_postgres::NoTls, manager_config())
        }
    };
    build(manager, size, what)
}

/// The longest a request waits for a free connection of a pool: a full
/// pool answers 503 with `Retry-After` after this, instead of holding the
/// request (and whatever it holds) until a connection frees up.
pub const POOL_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// The longest making a new connection may take (TCP, TLS, authentication).
pub const CONNECT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The longest a pooled connection is reused after its last use; an older
/// one is closed and a new one made. A Lambda execution environment is
/// frozen between invocations, so a connection that RDS Proxy closed for
/// idleness (its `IdleClientTimeout`, 30 minutes by default and in the
/// templates), or that a middlebox on its path forgot (AWS's knowledge
/// center on Lambda VPC timeouts gives 350 s for idle TCP flows through its
/// load balancers and NAT gateways), still looks open when the environment
/// thaws, and the first request after a quiet spell would fail on it.
/// Below both.
pub const POOL_IDLE_LIMIT: std::time::Duration = std::time::Duration::from_secs(240);

/// A pool of at most `size` connections whose waits are bounded
/// ([`POOL_WAIT`], [`CONNECT_WAIT`]): nothing waits for a connection forever,
/// and a connection idle for longer than `idle_limit` ([`POOL_IDLE_LIMIT`]
/// outside tests) is replaced rather than reused.
pub fn bounded_pool(
    manager: deadpool_postgres::Manager,
    size: usize,
    idle_limit: std::time::Duration,
) -> Result<deadpool_postgres::Pool, deadpool_postgres::BuildError> {
    deadpool_postgres::Pool::builder(manager)
        .max_size(size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(POOL_WAIT))
        .create_timeout(Some(CONNECT_WAIT))
        .recycle_timeout(Some(CONNECT_WAIT))
        .pre_recycle(deadpool_postgres::Hook::sync_fn(move |_, metrics| {
            if metrics.last_used() > idle_limit {
                return Err(deadpool_postgres::HookError::message("idle for too long"));
            }
            Ok(())
        }))
        .build()
}

fn build(
    manager: deadpool_postgres::Manager,
    size: usize,
    what: &str,
) -> Result<deadpool_postgres::Pool, ConfigError> {
    bounded_pool(manager, size, POOL_IDLE_LIMIT).map_err(|e| ConfigError::Invalid {
        what: what.into(),
        detail: e.to_string(),
    })
}

/// A pool of IAM-authenticated TLS connections: each new connection signs a
/// fresh token with `credentials` as its password.
pub fn iam_pool(
    host: &str,
    port: u16,
    dbname: &str,
    user: &str,
    connect: crate::iam::IamConnect,
    size: usize,
) -> Result<deadpool_postgres::Pool, ConfigError> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(host)
        .port(port)
        .dbname(dbname)
        .user(user)
        .ssl_mode(tokio_postgres::config::SslMode::Require);
    let manager = deadpool_postgres::Manager::from_connect(config, connect, manager_config());
    build(manager, size, "the database pool")
}

/// The host one process reads from, of the comma-separated `DB_HOSTS`,
/// chosen at random: Lambda's execution environments all start their
/// process with the same PID, so a choice by PID sent every read to one
/// replica. `RandomState` is seeded from the OS's randomness.
fn choose_host<'a>(hosts: &[&'a str]) -> Option<&'a str> {
    use std::hash::{BuildHasher, Hasher};
    if hosts.is_empty() {
        return None;
    }
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    hosts.get((random % hosts.len() as u64) as usize).copied()
}

/// The pool the templates configure: `DB_HOSTS` (one is chosen at random
/// per process when there are several replicas), `DB_PORT`, `DB_NAME`, `DB_USER`, IAM
/// authentication with the function's credentials, and TLS checked against
/// `PGSSLROOTCERT` (default: `rds-ca.pem` beside the executable).
async fn aws_pool(config: &aws_config::SdkConfig) -> Result<deadpool_postgres::Pool, ConfigError> {
    let hosts = var("DB_HOSTS")?;
    let hosts: Vec<&str> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect();
    let host = choose_host(&hosts).ok_or(ConfigError::Missing("DB_HOSTS"))?;
    let port = var("DB_PORT")?
        .parse()
        .map_err(|e: std::num::ParseIntError| ConfigError::Invalid {
            what: "DB_PORT".into(),
            detail: e.to_string(),
        })?;
    let roots = roots_for(host);
    let credentials = config
        .credentials_provider()
        .ok_or(ConfigError::Missing("AWS credentials"))?;
    let region = config
        .region()
        .map(|r| r.to_string())
        .ok_or(ConfigError::Missing("AWS_REGION"))?;
    let connect = crate::iam::IamConnect {
        credentials,
        region,
        tls: tls(roots)?,
    };
    iam_pool(host, port, &var("DB_NAME")?, &var("DB_USER")?, connect, 4)
}

/// The administrator's credentials, as the database's secret holds them
/// (RDS adds the primary's `host` and `port` to it).
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
pub struct AdminSecret {
    pub username: String,
    pub password: String,
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
}

/// Shows everything but the password, so that no log can leak it.
impl std::fmt::Debug for AdminSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSecret")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish()
    }
}

fn default_port() -> u16 {
    5432
}

/// Reads the administrator's credentials from Secrets Manager.
pub async fn admin_secret(
    client: &aws_sdk_secretsmanager::Client,
    secret_id: &str,
) -> Result<AdminSecret, ConfigError> {
    let invalid = |e: &dyn std::fmt::Display| ConfigError::Invalid {
        what: format!("the database secret {secret_id}"),
        detail: e.to_string(),
    };
    let out = client
        .get_secret_value()
        .secret_id(secret_id)
        .send()
        .await
        .map_err(|e| invalid(&aws_sdk_secretsmanager::error::DisplayErrorContext(e)))?;
    let text = out
        .secret_string()
        .ok_or_else(|| invalid(&"holds no string"))?;
    serde_json::from_str(text).map_err(|e| invalid(&e))
}

/// A pool connected as the administrator (for migrations), with the
/// credentials of `DB_SECRET_ARN`, over the same verified TLS.
pub async fn admin_pool(
    config: &aws_config::SdkConfig,
) -> Result<deadpool_postgres::Pool, ConfigError> {
    let secret = admin_secret(
        &aws_sdk_secretsmanager::Client::new(config),
        &var("DB_SECRET_ARN")?,
    )
    .await?;
    let mut pg = tokio_postgres::Config::new();
    pg.host(&secret.host)
        .port(secret.port)
        .user(&secret.username)
        .password(&secret.password)
        .dbname(&var("DB_NAME")?)
        .ssl_mode(tokio_postgres::config::SslMode::Require);
    config_pool(pg, 1, root_file(), "the administrator's pool")
}

/// The context for the `migrate` action: connected as the administrator when
/// `DB_SECRET_ARN` names the database's secret, else the function's own.
pub async fn admin_context(ctx: &Context) -> Result<Context, ConfigError> {
    if std::env::var_os("DB_SECRET_ARN").is_none() {
        return Ok(ctx.clone());
    }
    let config = aws_config().await;
    Ok(Context {
        pool: admin_pool(&config).await?,
        ..ctx.clone()
    })
}

/// Whether a host is an RDS Proxy endpoint
/// (`<proxy>.proxy-<id>.<region>.rds.amazonaws.com`, or a custom endpoint
/// `<endpoint>.endpoint.proxy-<id>...`).
pub fn is_proxy_endpoint(host: &str) -> bool {
    let labels: Vec<&str> = host.split('.').collect();
    labels.contains(&"rds") && labels.iter().skip(1).any(|l| l.starts_with("proxy-"))
}

/// The trust roots of a database host. RDS Proxy presents certificates from
/// ACM, which chain to the Amazon Root CAs ("Using TLS/SSL with RDS Proxy"):
/// `PGSSLROOTCERT_PROXY`, or `amazon-root-ca.pem` beside the executable.
/// DB instances present RDS CA certificates: [`root_file`].
fn roots_for(host: &str) -> Option<PathBuf> {
    if !is_proxy_endpoint(host) {
        return root_file();
    }
    std::env::var_os("PGSSLROOTCERT_PROXY")
        .map(PathBuf::from)
        .or_else(|| beside_executable("amazon-root-ca.pem"))
}

fn beside_executable(name: &str) -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(name)))
}

/// `PGSSLROOTCERT`, or `rds-ca.pem` beside the executable.
fn root_file() -> Option<PathBuf> {
    std::env::var_os("PGSSLROOTCERT")
        .map(PathBuf::from)
        .or_else(|| beside_executable("rds-ca.pem"))
}

/// TLS that trusts only the CA certificates of a PEM file.
pub fn tls(
    root_file: Option<PathBuf>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, ConfigError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let invalid = |what: String, e: &dyn std::fmt::Display| ConfigError::Invalid {
        what,
        detail: e.to_string(),
    };
    let path = root_file.ok_or(ConfigError::Missing("PGSSLROOTCERT"))?;
    let pem =
        std::fs::read(&path).map_err(|e| invalid(format!("cannot read {}", path.display()), &e))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| invalid(format!("{} is not PEM", path.display()), &e))?;
        roots
            .add(cert)
            .map_err(|e| invalid(format!("a certificate of {}", path.display()), &e))?;
    }
    if roots.is_empty() {
        return Err(invalid(
            format!("{}", path.display()),
            &"holds no certificate",
        ));
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("TLS".into(), &e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// The HTTPS client of the functions' AWS clients: rustls with ring, the
/// TLS provider their Postgres connections use too, so that a package links
/// one TLS library.
pub fn https_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    use aws_smithy_http_client::tls;
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// Makes ring the process's default rustls crypto provider, for the
/// clients that take the default (reqwest built without a provider of its
/// own); the SDK's clients and the database's TLS name ring themselves.
/// Calling it again does nothing.
pub fn install_crypto_provider() {
    // Err only when a provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The standard AWS configuration (region, credentials,
/// `AWS_ENDPOINT_URL`), with [`https_client`].
pub async fn aws_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(https_client())
        .load()
        .await
}

/// The context of a function process: `PIPELINE_ENV`, the datasets, the
/// database, and the objects in the S3 bucket `RAW_BUCKET` (with the
/// standard AWS configuration: region, credentials, `AWS_ENDPOINT_URL`) or,
/// outside AWS, in the directory `PIPELINE_OBJECTS_DIR`. In AWS, objects
/// above `CHUNK_BYTES` (default 64 MiB) are loaded in chunks sent to the
/// queue `QUEUE_URL`, and without `DATABASE_URL` the database is reached
/// with IAM authentication over TLS (see [`aws_pool`]).
pub async fn context_from_env() -> Result<Context, ConfigError> {
    let env = var("PIPELINE_ENV")?;
    let datasets = datasets()?;
    let aws = match std::env::var("RAW_BUCKET") {
        Ok(_) => Some(aws_config().await),
        Err(_) => None,
    };
    let pool = match (std::env::var("DATABASE_URL"), &aws) {
        (Ok(url), _) => pool(&url, 4)?,
        (Err(_), Some(config)) => aws_pool(config).await?,
        (Err(_), None) => return Err(ConfigError::Missing("DATABASE_URL")),
    };
    let store = match (&aws, std::env::var("RAW_BUCKET")) {
        (Some(config), Ok(bucket)) => {
            Store::S3(S3Store::new(aws_sdk_s3::Client::new(config), bucket))
        }
        _ => Store::Local(LocalStore::new(var("PIPELINE_OBJECTS_DIR")?)),
    };
    // The loader sends chunks of large batches to its own queue.
    let chunk_queue: Option<std::sync::Arc<dyn ChunkQueue>> =
        match (&aws, std::env::var("QUEUE_URL")) {
            (Some(config), Ok(url)) => Some(std::sync::Arc::new(SqsChunkQueue::new(
                aws_sdk_sqs::Client::new(config),
                url,
            ))),
            _ => None,
        };
    let chunk_bytes = std::env::var("CHUNK_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CHUNK_BYTES);
    // S3 takes parts of 5 MiB to 5 GiB.
    let upload_part_bytes = std::env::var("UPLOAD_PART_BYTES")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(DEFAULT_UPLOAD_PART_BYTES, |b| b.clamp(5 << 20, 5 << 30));
    let max_inline_bytes = std::env::var("MAX_INLINE_BATCH_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6080 * 1024);
    let merge_slice_rows = std::env::var("MERGE_SLICE_ROWS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(crate::db::DEFAULT_SLICE_ROWS, |n| n.max(1));
    let max_decoded_ratio = std::env::var("MAX_DECODED_RATIO")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(crate::compression::DEFAULT_DECODED_RATIO, |n| n.max(1));
    let max_receives = std::env::var("MAX_RECEIVES")
        .ok()
        .and_then(|v| v.parse().ok());
    Ok(Context {
        env,
        datasets,
        store,
        pool,
        max_inline_bytes,
        chunk_bytes,
        upload_part_bytes,
        merge_slice_rows,
        max_decoded_ratio,
        chunk_queue,
        max_receives,
        definitions: Default::default(),
    })
}

/// [`context_from_env`] for a function's `main`: when the environment is
/// wrong, the reason goes to the log as an error and the process exits
/// with status 1 before asking for an event (Lambda then reports
/// `Runtime.ExitError` with that log line).
pub async fn context_or_exit() -> Context {
    match context_from_env().await {
        Ok(ctx) => ctx,
        Err(error) => {
            tracing::error!(%error, "init failed");
            std::process::exit(1)
        }
    }
}

/// JSON log lines for CloudWatch, filtered by `RUST_LOG` (see
/// [`log_filter`]).
pub fn init_logs() {
    let directives = std::env::var("RUST_LOG").unwrap_or_default();
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(log_filter(&directives))
        .with_current_span(false)
        .without_time()
        .init();
}

/// The filter of the functions' logs: `directives` (`RUST_LOG`, an
/// environment's `log_level`), except that tokio-postgres never logs below
/// `info`: at `debug` it logs each statement with its parameter values,
/// which are the batches' data and have no place in CloudWatch.
pub fn log_filter(directives: &str) -> tracing_subscriber::EnvFilter {
    let quiet: tracing_subscriber::filter::Directive = "tokio_postgres=info"
        .parse()
        .unwrap_or_else(|_| tracing_subscriber::filter::LevelFilter::INFO.into());
    tracing_subscriber::EnvFilter::new(directives).add_directive(quiet)
}

#[cfg(test)]
mod tests {
    /// At `debug`, the functions' own lines are kept and tokio-postgres's
    /// (statements with their parameter values) are not.
    #[test]
    fn debug_logs_leave_out_the_statements_and_their_values() {
        #[derive(Clone, Default)]
        struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                if let Ok(mut lines) = self.0.lock() {
                    lines.extend_from_slice(buf);
                }
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(super::log_filter("debug"))
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!(target: "tokio_postgres::query", "executing statement s1 with parameters: [\"secret\"]");
            tracing::debug!(target: "loader", "merged a slice");
            tracing::info!(target: "tokio_postgres::connection", "NOTICE: relation exists");
        });
        let text = String::from_utf8(lines.0.lock().map(|l| l.clone()).unwrap_or_default())
            .unwrap_or_default();
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("merged a slice"), "{text}");
        assert!(text.contains("NOTICE: relation exists"), "{text}");
    }

    #[test]
    fn proxy_endpoints_are_checked_against_the_amazon_root_cas() {
        use super::{is_proxy_endpoint, roots_for};
        for proxy in [
            "pipeline-prod.proxy-c1x2y3z4.eu-west-1.rds.amazonaws.com",
            "reads.endpoint.proxy-c1x2y3z4.eu-west-1.rds.amazonaws.com",
        ] {
            assert!(is_proxy_endpoint(proxy), "{proxy}");
            let file = roots_for(proxy).unwrap_or_default();
            assert_eq!(
                file.file_name().and_then(|f| f.to_str()),
                Some("amazon-root-ca.pem")
            );
        }
        for instance in [
            "pipeline-prod.c1x2y3z4.eu-west-1.rds.amazonaws.com",
            "pipeline-prod-replica-1.c1x2y3z4.eu-west-1.rds.amazonaws.com",
            "127.0.0.1",
        ] {
            assert!(!is_proxy_endpoint(instance), "{instance}");
            let file = roots_for(instance).unwrap_or_default();
            assert_eq!(
                file.file_name().and_then(|f| f.to_str()),
                Some("rds-ca.pem")
            );
        }
        // The shipped Amazon Root CAs load as trust roots.
        let shipped =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../certs/amazon-root-ca.pem");
        assert!(super::tls(Some(shipped)).is_ok());
    }

    use super::*;

    #[test]
    fn every_replica_gets_picked() {
        let hosts = ["replica-1", "replica-2"];
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            seen.insert(choose_host(&hosts).expect("a host"));
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), hosts);
        assert_eq!(choose_host(&["only"]), Some("only"));
        assert_eq!(choose_host(&[]), None);
    }
}
