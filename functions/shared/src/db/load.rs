//! Loading a batch exactly once: COPY into a staging table, then a merge.

use super::*;

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

/// Where a COPY's time went: waiting for the object's bytes, decoding and
/// checking them into COPY rows, and waiting for Postgres to take the rows
/// (the COPY itself, as seen from here). Logged with each load, for the
/// benchmark and for an operator asking why a load was slow.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CopyTimes {
    pub read: std::time::Duration,
    pub decode: std::time::Duration,
    pub copy: std::time::Duration,
}

impl CopyTimes {
    pub(crate) fn ms(d: std::time::Duration) -> u64 {
        d.as_millis() as u64
    }
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
    times: &mut CopyTimes,
) -> Result<Copied, DbError> {
    let sql = format!("COPY {into} ({}) FROM STDIN", column_list(dataset));
    copy_decoded(client, &sql, Decoder::new(dataset), stream, times).await
}

/// Streams an object through a decoder into a COPY. On an invalid record the
/// COPY is aborted (its sink dropped unfinished) before this returns.
///
/// Decoding runs ahead of the COPY, up to [`COPY_AHEAD`] pieces: while
/// Postgres takes one piece (the COPY's pace on a busy server), the next
/// ones are decoded, so the decoding costs no time of its own.
pub(crate) async fn copy_decoded(
    client: &Transaction<'_>,
    sql: &str,
    mut decoder: Decoder<'_>,
    mut stream: ByteStream,
    times: &mut CopyTimes,
) -> Result<Copied, DbError> {
    use std::time::{Duration, Instant};
    let started = Instant::now();
    let sink = client.copy_in::<_, Bytes>(sql).await?;
    times.copy += started.elapsed();
    futures_util::pin_mut!(sink);
    let (pieces, mut ready) = tokio::sync::mpsc::channel::<Bytes>(COPY_AHEAD);
    // What the decoding side ends with: the records, an invalid record, a
    // store error, or nothing when the COPY side stopped first.
    let produce = async {
        let (mut read, mut decode) = (Duration::ZERO, Duration::ZERO);
        let mut out = Vec::with_capacity(COPY_PIECE + 64 * 1024);
        let end = loop {
            let waited = Instant::now();
            let chunk = stream.next().await;
            read += waited.elapsed();
            let chunk = match chunk {
                None => break None,
                Some(Ok(chunk)) => chunk,
                // A compressed object that cannot be decoded fails its batch
                // where decoding stopped; the COPY is aborted with the sink.
                Some(Err(StoreError::Corrupt(reason))) => {
                    break Some(Ok(Copied::Invalid(RecordError {
                        line: decoder.line(),
                        column: None,
                        reason,
                    })));
                }
                Some(Err(e)) => break Some(Err(DbError::from(e))),
            };
            let decoding = Instant::now();
            decoder.feed(&chunk, &mut out);
            decode += decoding.elapsed();
            if let Some(first) = decoder.errors().first() {
                break Some(Ok(Copied::Invalid(first.clone())));
            }
            if out.len() >= COPY_PIECE {
                let piece = std::mem::replace(&mut out, Vec::with_capacity(COPY_PIECE + 64 * 1024));
                if pieces.send(Bytes::from(piece)).await.is_err() {
                    break Some(Ok(Copied::Rows(0)));
                }
            }
        };
        let end = match end {
            Some(end) => end,
            None => {
                let decoding = Instant::now();
                let summary = decoder.finish(&mut out);
                decode += decoding.elapsed();
                match summary.errors.first() {
                    Some(first) => Ok(Copied::Invalid(first.clone())),
                    None => {
                        if !out.is_empty() {
                            // A closed channel: the COPY side says why.
                            let _ = pieces.send(Bytes::from(out)).await;
                        }
                        Ok(Copied::Rows(summary.records))
                    }
                }
            }
        };
        drop(pieces);
        (end, read, decode)
    };
    let consume = async {
        let mut copy = Duration::ZERO;
        while let Some(piece) = ready.recv().await {
            let sending = Instant::now();
            let sent = sink.send(piece).await;
            copy += sending.elapsed();
            if let Err(e) = sent {
                // The decoding side stops at its next piece.
                ready.close();
                return (Err(e), copy);
            }
        }
        (Ok(()), copy)
    };
    let ((end, read, decode), (sent, copy)) = futures_util::future::join(produce, consume).await;
    times.read += read;
    times.decode += decode;
    times.copy += copy;
    let conflict = |e: tokio_postgres::Error| -> Result<Copied, DbError> {
        if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
            Ok(Copied::KeyConflict)
        } else {
            Err(e.into())
        }
    };
    if let Err(e) = sent {
        return conflict(e);
    }
    match end? {
        // Dropping the sink unfinished aborts the COPY.
        Copied::Rows(records) => {
            let finishing = Instant::now();
            let finished = sink.finish().await;
            times.copy += finishing.elapsed();
            match finished {
                Ok(_) => Ok(Copied::Rows(records)),
                Err(e) => conflict(e),
            }
        }
        other => Ok(other),
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
    let started = std::time::Instant::now();
    let mut times = CopyTimes::default();
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
    let copying = std::time::Instant::now();
    let mut merged = std::time::Duration::ZERO;
    let copied = copy_object(&tx, &table(name), dataset, open().await?, &mut times).await?;
    let copied_in = copying.elapsed();
    let merged_or_invalid = match copied {
        Copied::Rows(n) => {
            tx.batch_execute("RELEASE SAVEPOINT direct").await?;
            Ok((n, n))
        }
        Copied::Invalid(error) => {
            tx.batch_execute("ROLLBACK TO SAVEPOINT direct").await?;
            Err(error)
        }
        Copied::KeyConflict => {
            tx.batch_execute("ROLLBACK TO SAVEPOINT direct").await?;
            let merging = std::time::Instant::now();
            // A key conflict can stop the COPY before the decoder reaches
            // an invalid record further on: the merge finds it then.
            let result = merge(&tx, name, dataset, open().await?, &mut times).await?;
            merged = merging.elapsed();
            result
        }
    };
    let (records, inserted) = match merged_or_invalid {
        Ok(counts) => counts,
        Err(error) => {
            mark_invalid(&tx, batch_id, &error).await?;
            tx.commit().await?;
            return Ok(LoadOutcome::Invalid { error });
        }
    };
    mark_loaded(&tx, batch_id, records as i64, inserted as i64).await?;
    tx.commit().await?;
    let total = started.elapsed();
    tracing::info!(
        batch_id = %batch_id,
        dataset = name,
        records,
        total_ms = CopyTimes::ms(total),
        read_ms = CopyTimes::ms(times.read),
        decode_ms = CopyTimes::ms(times.decode),
        copy_ms = CopyTimes::ms(times.copy),
        merge_ms = CopyTimes::ms(merged),
        bookkeeping_ms = CopyTimes::ms(total.saturating_sub(copied_in + merged)),
        "load timings"
    );
    Ok(LoadOutcome::Loaded {
        records,
        inserted,
        duplicates: records - inserted,
    })
}

/// Marks a batch `failed` for its first invalid record.
pub(crate) async fn mark_invalid(
    tx: &Transaction<'_>,
    batch_id: uuid::Uuid,
    error: &RecordError,
) -> Result<(), DbError> {
    let line = error.line as i64;
    tx.execute(
        "UPDATE pipeline.batches SET status = 'failed', inserted = 0, duplicates = 0, loaded_at = now(),
         error_line = $2, error_column = $3, error_reason = $4 WHERE batch_id = $1",
        &[&batch_id, &line, &error.column, &error.reason],
    )
    .await?;
    Ok(())
}

/// Marks a batch `loaded` with its counts (which, for a batch merged in
/// slices, shows its load: see `merge_slices`).
pub(crate) async fn mark_loaded(
    tx: &Transaction<'_>,
    batch_id: uuid::Uuid,
    records: i64,
    inserted: i64,
) -> Result<(), DbError> {
    tx.execute(
        "UPDATE pipeline.batches SET status = 'loaded', records = $2, inserted = $3, duplicates = $2::bigint - $3::bigint,
         loaded_at = now(), error_line = NULL, error_column = NULL, error_reason = NULL WHERE batch_id = $1",
        &[&batch_id, &records, &inserted],
    )
    .await?;
    Ok(())
}

/// The records a batch's chunks staged.
pub(crate) async fn staged_records(
    tx: &Transaction<'_>,
    batch_id: uuid::Uuid,
) -> Result<i64, DbError> {
    Ok(tx
        .query_one(
            "SELECT coalesce(sum(records), 0)::bigint FROM pipeline.batch_chunks WHERE batch_id = $1",
            &[&batch_id],
        )
        .await?
        .get(0))
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
/// (records, inserted), or the first invalid record.
async fn merge(
    tx: &Transaction<'_>,
    name: &str,
    dataset: &Dataset,
    stream: ByteStream,
    times: &mut CopyTimes,
) -> Result<Result<(u64, u64), RecordError>, DbError> {
    tx.batch_execute(&format!(
        "SAVEPOINT merge;
         CREATE TEMP TABLE IF NOT EXISTS pipeline_stage (LIKE {} INCLUDING DEFAULTS) ON COMMIT DROP;
         ALTER TABLE pipeline_stage ADD COLUMN pipeline_seq bigserial",
        table(name)
    ))
    .await?;
    let records = match copy_object(tx, "pipeline_stage", dataset, stream, times).await? {
        Copied::Rows(n) => n,
        Copied::Invalid(error) => {
            // Undoes the aborted COPY and the staging table.
            tx.batch_execute("ROLLBACK TO SAVEPOINT merge").await?;
            return Ok(Err(error));
        }
        Copied::KeyConflict => 0,
    };
    let inserted = merge_stage(tx, name, dataset, "pipeline_stage", &["pipeline_seq"]).await?;
    tx.batch_execute("DROP TABLE pipeline_stage").await?;
    Ok(Ok((records, inserted)))
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
