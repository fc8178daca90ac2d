//! Batch bookkeeping: recording, finding and forgetting batches.

use super::*;

/// A batch as the database keeps it: what `GET /v1/batches/{id}` answers,
/// and what only the pipeline sees.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub answer: pipeline_contract::Batch,
    pub object_key: String,
    pub idempotency_key: Option<String>,
    pub sha256: Option<String>,
}

const BATCH_COLUMNS: &str = "batch_id, dataset, status, object_key, idempotency_key, sha256, records, inserted, duplicates, \
                             received_at, loaded_at, error_line, error_column, error_reason";

fn batch_from_row(row: &tokio_postgres::Row) -> Result<Batch, DbError> {
    let error_line: Option<i64> = row.get(11);
    Ok(Batch {
        answer: pipeline_contract::Batch {
            batch_id: row.get(0),
            dataset: row.get(1),
            status: status_of(row.get(2))?,
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
            // A reason without a line is the load's, not a record's.
            failure: match error_line {
                Some(_) => None,
                None => row.get(13),
            },
        },
        object_key: row.get(3),
        idempotency_key: row.get(4),
        sha256: row.get(5),
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
    /// The revision of the dataset's definition the batch is checked
    /// against ([`revision`]): the loader decodes it with that one.
    pub dataset_revision: Option<&'a str>,
}

/// Records a received batch. With an idempotency key already used for the
/// dataset, nothing is recorded and the earlier batch is returned as `Err`.
pub async fn insert_batch(
    client: &impl GenericClient,
    new: &NewBatch<'_>,
) -> Result<Result<Batch, Batch>, DbError> {
    let sql = format!(
        "INSERT INTO pipeline.batches (batch_id, dataset, object_key, status, idempotency_key, records, sha256, size_bytes, dataset_revision)
         VALUES ($1, $2, $3, 'received', $4, $5, $6, $7, $8)
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
                &new.dataset_revision,
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

/// How long [`give_up`] waits for a load that holds the batch.
const GIVE_UP_LOCK_TIMEOUT: &str = "5s";

/// Marks an unfinished batch `failed` for a reason that is no record's (its
/// message's deliveries are spent, say): nothing of it is in its table, its
/// chunks still pending are skipped and its staging table is dropped (or,
/// when its merge had begun, kept for [`undo_slices`]), in one transaction. Waits at most [`GIVE_UP_LOCK_TIMEOUT`] for a load that
/// holds the batch (an error then). Returns whether the batch was unfinished.
pub async fn give_up(
    client: &mut Client,
    batch_id: uuid::Uuid,
    reason: &str,
) -> Result<bool, DbError> {
    let tx = client.transaction().await?;
    tx.batch_execute(&format!(
        "SET LOCAL lock_timeout = '{GIVE_UP_LOCK_TIMEOUT}'"
    ))
    .await?;
    let changed = tx
        .execute(
            "UPDATE pipeline.batches SET status = 'failed', inserted = 0, duplicates = 0, loaded_at = now(),
             error_line = NULL, error_column = NULL, error_reason = $2
             WHERE batch_id = $1 AND status IN ('received', 'loading')",
            &[&batch_id, &reason],
        )
        .await?;
    if changed > 0 {
        tx.execute(
            "UPDATE pipeline.batch_chunks SET status = 'skipped' WHERE batch_id = $1 AND status = 'pending'",
            &[&batch_id],
        )
        .await?;
        // A merge begun leaves its staging table to undo its slices by.
        if to_undo(&tx, batch_id).await?.is_none() {
            tx.batch_execute(&format!("DROP TABLE IF EXISTS {}", staging(batch_id)))
                .await?;
        }
    }
    tx.commit().await?;
    Ok(changed > 0)
}

/// A batch's status and the size of its object as declared: the body's for
/// an inline batch, `size_bytes` for an upload. `None`: no such batch.
pub async fn declared_size(
    client: &impl GenericClient,
    batch_id: uuid::Uuid,
) -> Result<Option<(BatchStatus, Option<i64>)>, DbError> {
    let row = client
        .query_opt(
            "SELECT status, size_bytes FROM pipeline.batches WHERE batch_id = $1",
            &[&batch_id],
        )
        .await?;
    row.map(|r| Ok((status_of(r.get(0))?, r.get(1))))
        .transpose()
}
