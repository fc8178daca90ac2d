//! Postgres: the pipeline's own schema, migrations that follow the datasets,
//! batch bookkeeping, and loading a batch exactly once.
//!
//! Tables of datasets live in `public`, named after the dataset. The
//! pipeline's bookkeeping lives in the `pipeline` schema.

use std::collections::BTreeMap;
use std::future::Future;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, GenericClient, Transaction};

use crate::dataset::{ColumnType, Dataset, OnConflict};
use crate::records::{Decoder, RecordError};
use crate::store::{ByteStream, StoreError};

/// Rows are sent to Postgres in pieces of about this size.
const COPY_PIECE: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database: {}", describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("migrating dataset `{dataset}` needs changes that can lose data: {changes}")]
    Destructive { dataset: String, changes: String },
    #[error("table `{0}` exists but was not created by the pipeline")]
    Foreign(String),
    #[error("no batch {0}")]
    NoBatch(uuid::Uuid),
    /// A status the schema's CHECK constraint does not allow: the table was
    /// changed by hand.
    #[error("pipeline.batches holds {0}")]
    BadStatus(#[from] BatchStatusError),
}

pub use pipeline_contract::{BatchStatus, UnknownStatus as BatchStatusError};

/// A status column as the schema writes it.
pub(crate) fn status_of(text: &str) -> Result<BatchStatus, DbError> {
    Ok(text.parse()?)
}

/// A Postgres error with its cause: tokio-postgres shows only "db error"
/// for errors the server sends.
fn describe(e: &tokio_postgres::Error) -> String {
    match (e.as_db_error(), std::error::Error::source(e)) {
        (Some(db), _) => format!("{} ({})", db.message(), db.code().code()),
        (None, Some(cause)) => format!("{e}: {cause}"),
        (None, None) => e.to_string(),
    }
}

impl DbError {
    /// Whether trying again later may succeed (a lost connection, a deadlock),
    /// as opposed to a problem with the batch or the spec.
    pub fn is_retryable(&self) -> bool {
        match self {
            DbError::Postgres(e) => e.as_db_error().is_none_or(|db| {
                let code = db.code();
                *code == SqlState::T_R_DEADLOCK_DETECTED
                    || *code == SqlState::T_R_SERIALIZATION_FAILURE
                    || *code == SqlState::ADMIN_SHUTDOWN
                    || *code == SqlState::TOO_MANY_CONNECTIONS
            }),
            DbError::Store(StoreError::NotFound(_)) => false,
            DbError::Store(_) => true,
            _ => false,
        }
    }
}

/// `"name"`: dataset and column names are validated identifiers
/// (lower case letters, digits and `_`), so quoting them is enough.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{name}\"")
}

fn table(dataset: &str) -> String {
    format!("public.{}", ident(dataset))
}

pub(crate) fn column_list(dataset: &Dataset) -> String {
    dataset
        .columns
        .iter()
        .map(|c| ident(&c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

// ------------------------------------------------------------------ schema

const BOOKKEEPING: &str = r#"
CREATE SCHEMA IF NOT EXISTS pipeline;
CREATE TABLE IF NOT EXISTS pipeline.datasets (
    name text PRIMARY KEY,
    definition jsonb NOT NULL,
    version integer NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS pipeline.migrations (
    id bigserial PRIMARY KEY,
    dataset text NOT NULL,
    version integer NOT NULL,
    statement text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS pipeline.batches (
    batch_id uuid PRIMARY KEY,
    dataset text NOT NULL,
    object_key text NOT NULL,
    status text NOT NULL CHECK (status IN ('received', 'loading', 'loaded', 'failed')),
    idempotency_key text,
    records bigint,
    inserted bigint,
    duplicates bigint,
    sha256 text,
    size_bytes bigint,
    error_line bigint,
    error_column text,
    error_reason text,
    received_at timestamptz NOT NULL DEFAULT now(),
    loaded_at timestamptz,
    UNIQUE (dataset, idempotency_key)
);
CREATE TABLE IF NOT EXISTS pipeline.batch_chunks (
    batch_id uuid NOT NULL REFERENCES pipeline.batches ON DELETE CASCADE,
    chunk integer NOT NULL,
    start_byte bigint NOT NULL,
    end_byte bigint NOT NULL,
    status text NOT NULL CHECK (status IN ('pending', 'loaded', 'failed', 'skipped')),
    records bigint,
    error_line bigint,
    error_column text,
    error_reason text,
    PRIMARY KEY (batch_id, chunk)
);
CREATE INDEX IF NOT EXISTS batches_status_idx ON pipeline.batches (status) WHERE status IN ('received', 'loading');
"#;

/// What a migration did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MigrationReport {
    /// Statements run, in order.
    pub statements: Vec<String>,
}

fn create_table(name: &str, dataset: &Dataset) -> Vec<String> {
    let columns: Vec<String> = dataset
        .columns
        .iter()
        .map(|c| {
            format!(
                "{} {}{}",
                ident(&c.name),
                c.kind.postgres(),
                if c.nullable { "" } else { " NOT NULL" }
            )
        })
        .collect();
    let key: Vec<String> = dataset.primary_key.iter().map(|k| ident(k)).collect();
    let mut out = vec![format!(
        "CREATE TABLE {} ({}, PRIMARY KEY ({}))",
        table(name),
        columns.join(", "),
        key.join(", ")
    )];
    for column in &dataset.filterable {
        out.push(create_index(name, column));
    }
    out
}

fn index_name(dataset: &str, column: &str) -> String {
    let name = format!("{dataset}_{column}_idx");
    name.chars().take(63).collect()
}

/// An index for a filterable column. (Appending the key would serve the
/// records endpoint's key order from one range scan, but with random keys
/// it costs loads far more than it saves reads: measured with bench-e2e.)
fn create_index(dataset: &str, column: &str) -> String {
    format!(
        "CREATE INDEX IF NOT EXISTS {} ON {} ({})",
        ident(&index_name(dataset, column)),
        table(dataset),
        ident(column)
    )
}

/// The statements that take a table from `old` to `new`, and the changes
/// among them that can lose data.
fn diff(name: &str, old: &Dataset, new: &Dataset) -> (Vec<String>, Vec<String>) {
    let t = table(name);
    let mut statements = Vec::new();
    let mut destructive = Vec::new();
    for column in &old.columns {
        if new.column(&column.name).is_none() {
            destructive.push(format!("drop column `{}`", column.name));
            statements.push(format!(
                "ALTER TABLE {t} DROP COLUMN {}",
                ident(&column.name)
            ));
        }
    }
    for column in &new.columns {
        let c = ident(&column.name);
        match old.column(&column.name) {
            None => {
                if !column.nullable {
                    destructive.push(format!("add column `{}` that is not nullable", column.name));
                }
                statements.push(format!(
                    "ALTER TABLE {t} ADD COLUMN {c} {}{}",
                    column.kind.postgres(),
                    if column.nullable { "" } else { " NOT NULL" }
                ));
            }
            Some(before) => {
                if before.kind != column.kind {
                    destructive.push(format!(
                        "change column `{}` from {} to {}",
                        column.name,
                        before.kind.postgres(),
                        column.kind.postgres()
                    ));
                    statements.push(format!(
                        "ALTER TABLE {t} ALTER COLUMN {c} TYPE {} USING {c}::{}",
                        column.kind.postgres(),
                        column.kind.postgres()
                    ));
                }
                if before.nullable && !column.nullable {
                    destructive.push(format!("make column `{}` not nullable", column.name));
                    statements.push(format!("ALTER TABLE {t} ALTER COLUMN {c} SET NOT NULL"));
                } else if !before.nullable && column.nullable {
                    statements.push(format!("ALTER TABLE {t} ALTER COLUMN {c} DROP NOT NULL"));
                }
            }
        }
    }
    if old.primary_key != new.primary_key {
        destructive.push(format!(
            "change the primary key from ({}) to ({})",
            old.primary_key.join(", "),
            new.primary_key.join(", ")
        ));
        let key: Vec<String> = new.primary_key.iter().map(|k| ident(k)).collect();
        statements.push(format!(
            "ALTER TABLE {t} DROP CONSTRAINT {}",
            ident(&format!("{name}_pkey"))
        ));
        statements.push(format!(
            "ALTER TABLE {t} ADD PRIMARY KEY ({})",
            key.join(", ")
        ));
    }
    for column in &old.filterable {
        if !new.filterable.contains(column) {
            statements.push(format!(
                "DROP INDEX IF EXISTS public.{}",
                ident(&index_name(name, column))
            ));
        }
    }
    for column in &new.filterable {
        if !old.filterable.contains(column) {
            statements.push(create_index(name, column));
        }
    }
    (statements, destructive)
}

/// The functions' database users: each may do what its function does and no
/// more. In RDS they log in with IAM tokens (the `rds_iam` role); the
/// statements are safe to run again.
fn grants(datasets: &BTreeMap<String, Dataset>) -> String {
    const USERS: [&str; 3] = ["pipeline_ingest", "pipeline_loader", "pipeline_query"];
    let mut sql = String::from("DO $$ BEGIN\n");
    for user in USERS {
        sql.push_str(&format!(
            "  BEGIN CREATE ROLE {user} LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END;\n"
        ));
    }
    sql.push_str(&format!(
        "  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rds_iam') THEN GRANT rds_iam TO {}; END IF;\nEND $$;\n",
        USERS.join(", ")
    ));
    sql.push_str(&format!(
        "GRANT USAGE ON SCHEMA pipeline, public TO {};\n",
        USERS.join(", ")
    ));
    sql.push_str(
        "GRANT SELECT, INSERT, DELETE ON pipeline.batches TO pipeline_ingest;
         GRANT SELECT, UPDATE ON pipeline.batches TO pipeline_loader;
         GRANT SELECT, INSERT, UPDATE ON pipeline.batch_chunks TO pipeline_loader;
         GRANT CREATE ON SCHEMA pipeline TO pipeline_loader;
         GRANT SELECT ON pipeline.batches TO pipeline_query;\n",
    );
    for name in datasets.keys() {
        let t = table(name);
        sql.push_str(&format!(
            "GRANT SELECT, INSERT, UPDATE ON {t} TO pipeline_loader;\nGRANT SELECT ON {t} TO pipeline_query;\n"
        ));
    }
    sql
}

/// Brings the database in line with the datasets, in one transaction under
/// an advisory lock so that concurrent migrations wait for each other.
/// Additive changes apply; changes that can lose data are refused unless the
/// dataset allows them.
pub async fn migrate(
    client: &mut Client,
    datasets: &BTreeMap<String, Dataset>,
) -> Result<MigrationReport, DbError> {
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('pipeline.migrate'))",
        &[],
    )
    .await?;
    tx.batch_execute(BOOKKEEPING).await?;
    let mut report = MigrationReport::default();
    for (name, dataset) in datasets {
        let stored = tx
            .query_opt(
                "SELECT definition, version FROM pipeline.datasets WHERE name = $1",
                &[name],
            )
            .await?;
        let (statements, version) = match stored {
            None => {
                let exists: bool = tx
                    .query_one(
                        "SELECT to_regclass($1) IS NOT NULL",
                        &[&format!("public.{}", ident(name))],
                    )
                    .await?
                    .get(0);
                if exists {
                    return Err(DbError::Foreign(name.clone()));
                }
                (create_table(name, dataset), 1)
            }
            Some(row) => {
                let definition: serde_json::Value = row.get(0);
                let version: i32 = row.get(1);
                let old: Dataset = serde_json::from_value(definition)
                    .map_err(|_| DbError::Foreign(name.clone()))?;
                let (statements, destructive) = diff(name, &old, dataset);
                if !destructive.is_empty() && !dataset.allow_destructive_changes {
                    return Err(DbError::Destructive {
                        dataset: name.clone(),
                        changes: destructive.join("; "),
                    });
                }
                (statements, version + 1)
            }
        };
        if statements.is_empty() {
            continue;
        }
        for statement in &statements {
            tx.batch_execute(statement).await?;
            tx.execute(
                "INSERT INTO pipeline.migrations (dataset, version, statement) VALUES ($1, $2, $3)",
                &[name, &version, statement],
            )
            .await?;
        }
        let definition = serde_json::to_value(dataset).unwrap_or_default();
        tx.execute(
            "INSERT INTO pipeline.datasets (name, definition, version) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET definition = EXCLUDED.definition, version = EXCLUDED.version, updated_at = now()",
            &[name, &definition, &version],
        )
        .await?;
        report.statements.extend(statements);
    }
    tx.batch_execute(&grants(datasets)).await?;
    tx.commit().await?;
    Ok(report)
}

// ------------------------------------------------------------------ batches

/// A batch as `GET /v1/batches/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Batch {
    pub batch_id: uuid::Uuid,
    pub dataset: String,
    pub status: BatchStatus,
    #[serde(skip)]
    pub object_key: String,
    #[serde(skip)]
    pub idempotency_key: Option<String>,
    #[serde(skip)]
    pub sha256: Option<String>,
    pub records: Option<i64>,
    pub inserted: Option<i64>,
    pub duplicates: Option<i64>,
    pub received_at: chrono::DateTime<chrono::Utc>,
    pub loaded_at: Option<chrono::DateTime<chrono::Utc>>,
    pub error: Option<RecordError>,
}

const BATCH_COLUMNS: &str = "batch_id, dataset, status, object_key, idempotency_key, sha256, records, inserted, duplicates, \
                             received_at, loaded_at, error_line, error_column, error_reason";

fn batch_from_row(row: &tokio_postgres::Row) -> Result<Batch, DbError> {
    let error_line: Option<i64> = row.get(11);
    Ok(Batch {
        batch_id: row.get(0),
        dataset: row.get(1),
        status: status_of(row.get(2))?,
        object_key: row.get(3),
        idempotency_key: row.get(4),
        sha256: row.get(5),
        records: row.get(6),
        inserted: row.get(7),
        duplicates: row.get(8),
        received_at: row.get(9),
        loaded_at: row.get(10),
        error: error_line.map(|line| RecordError {
            line: line.max(0) as u64,
            column: row.get(12),
            reason: row.get::<_, Option<String>>(13).unwrap_or_default(),
        }),
    })
}

/// A batch to record as received.
#[derive(Debug, Clone)]
pub struct NewBatch<'a> {
    pub batch_id: uuid::Uuid,
    pub dataset: &'a str,
    pub object_key: &'a str,
    pub idempotency_key: Option<&'a str>,
    pub records: Option<i64>,
    pub sha256: Option<&'a str>,
    pub size_bytes: Option<i64>,
}

/// Records a received batch. With an idempotency key already used for the
/// dataset, nothing is recorded and the earlier batch is returned as `Err`.
pub async fn insert_batch(
    client: &impl GenericClient,
    new: &NewBatch<'_>,
) -> Result<Result<Batch, Batch>, DbError> {
    let sql = format!(
        "INSERT INTO pipeline.batches (batch_id, dataset, object_key, status, idempotency_key, records, sha256, size_bytes)
         VALUES ($1, $2, $3, 'received', $4, $5, $6, $7)
         ON CONFLICT (dataset, idempotency_key) DO NOTHING
         RETURNING {BATCH_COLUMNS}"
    );
    let inserted = client
        .query_opt(
            &sql,
            &[
                &new.batch_id,
                &new.dataset,
                &new.object_key,
                &new.idempotency_key,
                &new.records,
                &new.sha256,
                &new.size_bytes,
            ],
        )
        .await?;
    if let Some(row) = inserted {
        return Ok(Ok(batch_from_row(&row)?));
    }
    let sql = format!(
        "SELECT {BATCH_COLUMNS} FROM pipeline.batches WHERE dataset = $1 AND idempotency_key = $2"
    );
    let row = client
        .query_one(&sql, &[&new.dataset, &new.idempotency_key])
        .await?;
    Ok(Err(batch_from_row(&row)?))
}

/// The batch, if there is one with this id.
pub async fn batch(
    client: &impl GenericClient,
    batch_id: uuid::Uuid,
) -> Result<Option<Batch>, DbError> {
    let sql = format!("SELECT {BATCH_COLUMNS} FROM pipeline.batches WHERE batch_id = $1");
    client
        .query_opt(&sql, &[&batch_id])
        .await?
        .map(|r| batch_from_row(&r))
        .transpose()
}

/// The batch stored under an object key, if any.
pub async fn batch_by_key(
    client: &impl GenericClient,
    key: &str,
) -> Result<Option<Batch>, DbError> {
    let sql = format!("SELECT {BATCH_COLUMNS} FROM pipeline.batches WHERE object_key = $1");
    client
        .query_opt(&sql, &[&key])
        .await?
        .map(|r| batch_from_row(&r))
        .transpose()
}

/// Batches accepted but not yet loaded, oldest first (for recovery after a restart).
pub async fn unfinished(client: &impl GenericClient) -> Result<Vec<Batch>, DbError> {
    let sql = format!(
        "SELECT {BATCH_COLUMNS} FROM pipeline.batches WHERE status IN ('received', 'loading') ORDER BY received_at"
    );
    client
        .query(&sql, &[])
        .await?
        .iter()
        .map(batch_from_row)
        .collect()
}

/// Forgets a batch whose object could not be stored.
pub async fn delete_batch(
    client: &impl GenericClient,
    batch_id: uuid::Uuid,
) -> Result<(), DbError> {
    client
        .execute(
            "DELETE FROM pipeline.batches WHERE batch_id = $1 AND status = 'received'",
            &[&batch_id],
        )
        .await?;
    Ok(())
}

// ------------------------------------------------------------------ loading

/// What loading a batch did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum LoadOutcome {
    /// Loaded now: rows read, rows inserted, rows that were already there.
    Loaded {
        records: u64,
        inserted: u64,
        duplicates: u64,
    },
    /// Loaded or failed before: a redelivery, which changes nothing.
    AlreadyDone { status: BatchStatus },
    /// The object is invalid; the batch is marked failed and nothing is loaded.
    Invalid { error: RecordError },
}

/// Outcome of streaming an object into a COPY.
pub(crate) enum Copied {
    Rows(u64),
    Invalid(RecordError),
    KeyConflict,
}

async fn copy_object(
    client: &Transaction<'_>,
    into: &str,
    dataset: &Dataset,
    stream: ByteStream,
) -> Result<Copied, DbError> {
    let sql = format!("COPY {into} ({}) FROM STDIN", column_list(dataset));
    copy_decoded(client, &sql, Decoder::new(dataset), stream).await
}

/// Streams an object through a decoder into a COPY. On an invalid record the
/// COPY is aborted (its sink dropped unfinished) before this returns.
pub(crate) async fn copy_decoded(
    client: &Transaction<'_>,
    sql: &str,
    mut decoder: Decoder<'_>,
    mut stream: ByteStream,
) -> Result<Copied, DbError> {
    let sink = client.copy_in::<_, Bytes>(sql).await?;
    futures_util::pin_mut!(sink);
    let mut out = Vec::with_capacity(COPY_PIECE + 64 * 1024);
    let conflict = |e: tokio_postgres::Error| -> Result<Copied, DbError> {
        if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
            Ok(Copied::KeyConflict)
        } else {
            Err(e.into())
        }
    };
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        decoder.feed(&chunk, &mut out);
        if let Some(first) = decoder.errors().first() {
            // Dropping the sink unfinished aborts the COPY.
            return Ok(Copied::Invalid(first.clone()));
        }
        if out.len() >= COPY_PIECE {
            let piece = Bytes::from(std::mem::replace(
                &mut out,
                Vec::with_capacity(COPY_PIECE + 64 * 1024),
            ));
            if let Err(e) = sink.send(piece).await {
                return conflict(e);
            }
        }
    }
    let summary = decoder.finish(&mut out);
    if let Some(first) = summary.errors.first() {
        return Ok(Copied::Invalid(first.clone()));
    }
    if !out.is_empty()
        && let Err(e) = sink.send(Bytes::from(out)).await
    {
        return conflict(e);
    }
    match sink.finish().await {
        Ok(_) => Ok(Copied::Rows(summary.records)),
        Err(e) => conflict(e),
    }
}

/// Loads a batch exactly once.
///
/// Everything happens in one transaction that first locks the batch's row:
/// a concurrent delivery waits, then finds the batch done and changes
/// nothing; a loader that dies mid-load leaves nothing behind. Rows are
/// copied straight into the table; only when a key is already there (or
/// repeated in the batch) are they copied again into a staging table and
/// merged with the dataset's conflict rule. `open` gives the object's bytes
/// (called a second time for that fallback).
pub async fn load<F, Fut>(
    client: &mut Client,
    name: &str,
    dataset: &Dataset,
    batch_id: uuid::Uuid,
    open: F,
) -> Result<LoadOutcome, DbError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<ByteStream, StoreError>>,
{
    // Visible progress, outside the transaction; harmless if repeated.
    client
        .execute(
            "UPDATE pipeline.batches SET status = 'loading' WHERE batch_id = $1 AND status = 'received'",
            &[&batch_id],
        )
        .await?;
    let tx = client.transaction().await?;
    if let Some(status) = lock_batch(&tx, batch_id).await? {
        return Ok(LoadOutcome::AlreadyDone { status });
    }
    tx.batch_execute("SAVEPOINT direct").await?;
    let (records, inserted) = match copy_object(&tx, &table(name), dataset, open().await?).await? {
        Copied::Rows(n) => {
            tx.batch_execute("RELEASE SAVEPOINT direct").await?;
            (n, n)
        }
        Copied::Invalid(error) => {
            tx.batch_execute("ROLLBACK TO SAVEPOINT direct").await?;
            let line = error.line as i64;
            tx.execute(
                "UPDATE pipeline.batches SET status = 'failed', inserted = 0, duplicates = 0, loaded_at = now(),
                 error_line = $2, error_column = $3, error_reason = $4 WHERE batch_id = $1",
                &[&batch_id, &line, &error.column, &error.reason],
            )
            .await?;
            tx.commit().await?;
            return Ok(LoadOutcome::Invalid { error });
        }
        Copied::KeyConflict => {
            tx.batch_execute("ROLLBACK TO SAVEPOINT direct").await?;
            merge(&tx, name, dataset, open().await?).await?
        }
    };
    let (records_i, inserted_i) = (records as i64, inserted as i64);
    tx.execute(
        "UPDATE pipeline.batches SET status = 'loaded', records = $2, inserted = $3, duplicates = $2::bigint - $3::bigint, loaded_at = now(),
         error_line = NULL, error_column = NULL, error_reason = NULL WHERE batch_id = $1",
        &[&batch_id, &records_i, &inserted_i],
    )
    .await?;
    tx.commit().await?;
    Ok(LoadOutcome::Loaded {
        records,
        inserted,
        duplicates: records - inserted,
    })
}

/// Locks the batch's row for the rest of the transaction. Returns its status
/// when the batch is already loaded or failed, `None` while it is open.
pub(crate) async fn lock_batch(
    tx: &Transaction<'_>,
    batch_id: uuid::Uuid,
) -> Result<Option<BatchStatus>, DbError> {
    let status: Option<String> = tx
        .query_opt(
            "SELECT status FROM pipeline.batches WHERE batch_id = $1 FOR UPDATE",
            &[&batch_id],
        )
        .await?
        .map(|r| r.get(0));
    match status.as_deref().map(status_of).transpose()? {
        None => Err(DbError::NoBatch(batch_id)),
        Some(s) if s.is_final() => Ok(Some(s)),
        Some(_) => Ok(None),
    }
}

/// Copies into a staging table and merges with the conflict rule. Returns
/// (records, inserted).
async fn merge(
    tx: &Transaction<'_>,
    name: &str,
    dataset: &Dataset,
    stream: ByteStream,
) -> Result<(u64, u64), DbError> {
    tx.batch_execute(&format!(
        "CREATE TEMP TABLE IF NOT EXISTS pipeline_stage (LIKE {} INCLUDING DEFAULTS) ON COMMIT DROP;
         ALTER TABLE pipeline_stage ADD COLUMN pipeline_seq bigserial",
        table(name)
    ))
    .await?;
    let records = match copy_object(tx, "pipeline_stage", dataset, stream).await? {
        Copied::Rows(n) => n,
        // The object read the same the first time; it cannot be invalid now.
        Copied::Invalid(e) => {
            return Err(DbError::Store(StoreError::Io {
                key: name.to_string(),
                source: std::io::Error::other(format!("the object changed while loading: {e}")),
            }));
        }
        Copied::KeyConflict => 0,
    };
    let inserted = merge_stage(tx, name, dataset, "pipeline_stage", &["pipeline_seq"]).await?;
    tx.batch_execute("DROP TABLE pipeline_stage").await?;
    Ok((records, inserted))
}

/// Inserts a staging table's rows into the dataset's table with the
/// conflict rule; among rows of one key, the first in `order` wins for
/// `ignore` and the last for `update`. Returns the rows inserted.
pub(crate) async fn merge_stage(
    tx: &Transaction<'_>,
    name: &str,
    dataset: &Dataset,
    stage: &str,
    order: &[&str],
) -> Result<u64, DbError> {
    let columns = column_list(dataset);
    let key: Vec<String> = dataset.primary_key.iter().map(|k| ident(k)).collect();
    let key = key.join(", ");
    let t = table(name);
    match dataset.on_conflict {
        OnConflict::Ignore => {
            let order = order.join(", ");
            Ok(tx
                .execute(
                    &format!(
                        "INSERT INTO {t} ({columns}) SELECT DISTINCT ON ({key}) {columns} FROM {stage}
                         ORDER BY {key}, {order} ON CONFLICT ({key}) DO NOTHING"
                    ),
                    &[],
                )
                .await?)
        }
        OnConflict::Update => {
            let order: Vec<String> = order.iter().map(|o| format!("{o} DESC")).collect();
            let order = order.join(", ");
            let updates: Vec<String> = dataset
                .columns
                .iter()
                .filter(|c| !dataset.primary_key.contains(&c.name))
                .map(|c| format!("{0} = EXCLUDED.{0}", ident(&c.name)))
                .collect();
            let action = if updates.is_empty() {
                "DO NOTHING".to_string()
            } else {
                format!("DO UPDATE SET {}", updates.join(", "))
            };
            let rows = tx
                .query(
                    &format!(
                        "INSERT INTO {t} ({columns}) SELECT DISTINCT ON ({key}) {columns} FROM {stage}
                         ORDER BY {key}, {order} ON CONFLICT ({key}) {action} RETURNING (xmax = 0)"
                    ),
                    &[],
                )
                .await?;
            Ok(rows.iter().filter(|r| r.get::<_, bool>(0)).count() as u64)
        }
    }
}

// ------------------------------------------------------------------ reading

/// A filter of the records endpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Eq(String, String),
    Gte(String, String),
    Lt(String, String),
}

/// One page of records, as JSON objects, and the key of the last one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page {
    pub records: Vec<serde_json::Value>,
    /// Key values of the last record when more may follow.
    #[serde(skip)]
    pub last_key: Option<Vec<serde_json::Value>>,
}

/// The Postgres type a text parameter is cast to for comparison.
fn cast(kind: ColumnType) -> &'static str {
    kind.postgres()
}

/// Reads a page of records in key order, after `after` (the previous page's
/// last key), with equality and range filters. Values travel as text
/// parameters cast to the column's type: never spliced into the SQL.
pub async fn records(
    client: &impl GenericClient,
    name: &str,
    dataset: &Dataset,
    filters: &[Filter],
    after: Option<&[String]>,
    limit: u32,
) -> Result<Page, DbError> {
    let mut clauses = Vec::new();
    let mut params: Vec<String> = Vec::new();
    for filter in filters {
        let (column, op, value) = match filter {
            Filter::Eq(c, v) => (c, "=", v),
            Filter::Gte(c, v) => (c, ">=", v),
            Filter::Lt(c, v) => (c, "<", v),
        };
        let Some(col) = dataset.column(column) else {
            continue;
        };
        params.push(value.clone());
        clauses.push(format!(
            "{} {op} ${}::text::{}",
            ident(column),
            params.len(),
            cast(col.kind)
        ));
    }
    let key_cols: Vec<&crate::dataset::Column> = dataset
        .primary_key
        .iter()
        .filter_map(|k| dataset.column(k))
        .collect();
    if let Some(after) = after {
        let mut placeholders = Vec::new();
        for (col, value) in key_cols.iter().zip(after) {
            params.push(value.clone());
            placeholders.push(format!("${}::text::{}", params.len(), cast(col.kind)));
        }
        let key: Vec<String> = key_cols.iter().map(|c| ident(&c.name)).collect();
        clauses.push(format!(
            "({}) > ({})",
            key.join(", "),
            placeholders.join(", ")
        ));
    }
    let where_sql = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    let order: Vec<String> = key_cols.iter().map(|c| ident(&c.name)).collect();
    params.push((limit + 1).to_string());
    // Numerics travel as strings so that no precision is lost in JSON.
    let select: Vec<String> = dataset
        .columns
        .iter()
        .map(|c| match c.kind {
            ColumnType::Numeric => format!("{0}::text AS {0}", ident(&c.name)),
            _ => ident(&c.name),
        })
        .collect();
    let sql = format!(
        "SELECT row_to_json(t)::text FROM (SELECT {} FROM {} {where_sql} ORDER BY {} LIMIT ${}::text::bigint) t",
        select.join(", "),
        table(name),
        order.join(", "),
        params.len()
    );
    let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
        .iter()
        .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect();
    let rows = client.query(&sql, &refs).await?;
    let mut records: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| serde_json::from_str(r.get::<_, &str>(0)).unwrap_or(serde_json::Value::Null))
        .collect();
    let more = records.len() > limit as usize;
    records.truncate(limit as usize);
    let last_key = if more {
        records
            .last()
            .map(|r| key_cols.iter().map(|c| r[&c.name].clone()).collect())
    } else {
        None
    };
    Ok(Page { records, last_key })
}

/// Whether the database answers.
pub async fn ping(client: &impl GenericClient) -> Result<(), DbError> {
    client.query_one("SELECT 1", &[]).await?;
    Ok(())
}
