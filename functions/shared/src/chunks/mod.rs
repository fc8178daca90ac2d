//! Large batches, loaded in parallel chunks.
//!
//! An object above a threshold is cut into byte ranges that start on record
//! boundaries, a bounded step at a time (see [`plan`]). Each range is its
//! own message (SQS in AWS, the local queue on this machine), loaded by
//! whichever loader gets it into the
//! batch's staging table, in its own transaction; the chunk's row in
//! `pipeline.batch_chunks` makes a redelivered chunk a no-op. When the last
//! chunk is in, the staging table is merged into the dataset's table in
//! slices of bounded size, with the dataset's conflict rule, and shown to
//! readers at once (see `db::merge_slices`); a chunk with an invalid record
//! fails the whole batch, with the record's line in the whole object.
//!
//! A loader may die at any point, and every message may come again: the
//! chunks and the staging table are recorded in one transaction, once (a
//! notification delivered again finds them and asks for the messages of the
//! chunks still pending, or for the merge when none is); a chunk is loaded in
//! one transaction that holds its row, so a death mid-COPY leaves it pending
//! and a chunk loaded is never loaded again; each slice of the merge commits
//! with the position it reached, under the batch's lock, and the last step
//! marks the batch and drops the staging table together.

mod plan;

pub use plan::{Cut, Layout, Recorded, Span, header, is_rest, next_cut, record_cut};

use std::future::Future;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use crate::dataset::Dataset;
use crate::db::{
    Copied, CopyTimes, DbError, LoadOutcome, Merged, column_list, copy_decoded, ident, lock_batch,
    mark_invalid, mark_loaded, merge_slices, merge_stage, slice_index, sliceable, staged_records,
    staging, to_undo, undo_slices,
};
use crate::records::{Decoder, RecordError};
use crate::store::{ByteStream, StoreError};

/// One chunk to load: a message of the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkMessage {
    pub batch_id: uuid::Uuid,
    pub dataset: String,
    pub key: String,
    pub chunk: u32,
    pub start: u64,
    pub end: u64,
    /// The CSV header line, for the chunks after the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
}

impl ChunkMessage {
    /// The message that hands a batch's merge on to the next invocation: a
    /// message of its first chunk, which every version of the loader finds
    /// loaded and then goes on to the merge.
    pub fn merge(batch_id: uuid::Uuid, dataset: &str, key: &str) -> ChunkMessage {
        ChunkMessage {
            batch_id,
            dataset: dataset.to_string(),
            key: key.to_string(),
            chunk: 0,
            start: 0,
            end: 0,
            header: None,
        }
    }

    /// The message of another range of the same object (with its header).
    fn piece(&self, chunk: u32, start: u64, end: u64) -> ChunkMessage {
        ChunkMessage {
            chunk,
            start,
            end,
            ..self.clone()
        }
    }

    /// Whether this is a [`ChunkMessage::merge`] (an empty range) rather
    /// than a chunk to load.
    pub fn is_merge(&self) -> bool {
        self.start == self.end
    }
}

/// Where chunk messages go: the loader's own queue.
pub trait ChunkQueue: Send + Sync {
    fn send(&self, messages: Vec<ChunkMessage>) -> BoxFuture<'_, Result<(), String>>;
}

/// Chunk messages on the loader's SQS queue.
pub struct SqsChunkQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsChunkQueue {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> SqsChunkQueue {
        SqsChunkQueue {
            client,
            queue_url: queue_url.into(),
        }
    }
}

impl ChunkQueue for SqsChunkQueue {
    fn send(&self, messages: Vec<ChunkMessage>) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            // SQS takes at most 10 messages per batch.
            for group in messages.chunks(10) {
                let mut entries = Vec::with_capacity(group.len());
                for message in group {
                    let body = serde_json::to_string(&ChunkBody {
                        chunk: message.clone(),
                    })
                    .map_err(|e| e.to_string())?;
                    let entry = aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                        .id(format!("chunk-{}", message.chunk))
                        .message_body(body)
                        .build()
                        .map_err(|e| e.to_string())?;
                    entries.push(entry);
                }
                let out = self
                    .client
                    .send_message_batch()
                    .queue_url(&self.queue_url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string())?;
                if let Some(failed) = out.failed().first() {
                    return Err(format!(
                        "SQS refused chunk message {}: {}",
                        failed.id(),
                        failed.message().unwrap_or("")
                    ));
                }
            }
            Ok(())
        })
    }
}

/// The message body that carries a chunk.
#[derive(Debug, Serialize, Deserialize)]
pub struct ChunkBody {
    pub chunk: ChunkMessage,
}

/// What starting a chunked load found.
#[derive(Debug, PartialEq, Eq)]
pub enum Begin {
    /// The batch is loaded or failed already.
    Done { status: crate::db::BatchStatus },
    /// These chunks are still to load: send (or send again) their messages;
    /// `rest`, the part of the object still to cut, if any (see [`plan`]).
    Pending {
        chunks: Vec<ChunkMessage>,
        rest: Option<ChunkMessage>,
    },
}

/// Whether the chunks of a batch were recorded: such a batch is loaded in
/// those chunks to the end, whatever the chunk size is now.
pub async fn planned(client: &Client, batch_id: uuid::Uuid) -> Result<bool, DbError> {
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pipeline.batch_chunks WHERE batch_id = $1)",
            &[&batch_id],
        )
        .await?
        .get(0))
}

/// An object to load in chunks, and its first cut.
#[derive(Debug, Clone, Copy)]
pub struct Object<'a> {
    pub key: &'a str,
    pub size: u64,
    /// The object's first cut ([`next_cut`] from its start); for an object
    /// whose chunks were recorded before, only its header counts.
    pub first: &'a Cut,
}

/// Records the first chunk of a batch and the rest to cut, and creates its
/// staging table, once, in one transaction (a loader that dies meanwhile
/// leaves none of them behind); on a redelivery, keeps the chunks recorded
/// before and returns those still pending so that their messages are sent
/// again. None pending while the batch is open means that its merge is
/// still to do ([`finish`]).
pub async fn begin(
    client: &mut Client,
    name: &str,
    batch_id: uuid::Uuid,
    object: Object<'_>,
) -> Result<Begin, DbError> {
    let tx = client.transaction().await?;
    if let Some(status) = lock_batch(&tx, batch_id).await? {
        return Ok(Begin::Done { status });
    }
    let header = object.first.header.as_deref();
    let message = |chunk: u32, start: u64, end: u64, row_header: Option<String>| ChunkMessage {
        batch_id,
        dataset: name.to_string(),
        key: object.key.to_string(),
        chunk,
        start,
        end,
        // Rows recorded by the previous version hold no header.
        header: row_header.or_else(|| header.filter(|_| start > 0).map(str::to_string)),
    };
    let planned: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pipeline.batch_chunks WHERE batch_id = $1)",
            &[&batch_id],
        )
        .await?
        .get(0);
    if !planned {
        // Its index takes the merge's slices in order (see `db::merge_slices`).
        tx.batch_execute(&format!(
            "CREATE UNLOGGED TABLE IF NOT EXISTS {stage} (pipeline_chunk integer NOT NULL, pipeline_line bigint NOT NULL, LIKE public.{});
             CREATE INDEX IF NOT EXISTS {} ON {stage} (pipeline_chunk, pipeline_line)",
            ident(name),
            slice_index(batch_id),
            stage = staging(batch_id),
        ))
        .await?;
        let end = object.first.end.unwrap_or(object.size);
        plan::insert(&tx, &message(0, 0, end, None), true).await?;
        if end < object.size {
            plan::insert(&tx, &message(1, end, object.size, None), false).await?;
        }
        tx.execute(
            "UPDATE pipeline.batches SET status = 'loading' WHERE batch_id = $1",
            &[&batch_id],
        )
        .await?;
    }
    let rows = tx
        .query(
            "SELECT chunk, start_byte, end_byte, header, planned FROM pipeline.batch_chunks
             WHERE batch_id = $1 AND status = 'pending' ORDER BY chunk",
            &[&batch_id],
        )
        .await?;
    tx.commit().await?;
    let (mut chunks, mut rest) = (Vec::with_capacity(rows.len()), None);
    for r in &rows {
        let m = message(
            r.get::<_, i32>(0) as u32,
            r.get::<_, i64>(1) as u64,
            r.get::<_, i64>(2) as u64,
            r.get(3),
        );
        match r.get::<_, bool>(4) {
            true => chunks.push(m),
            false => rest = Some(m),
        }
    }
    Ok(Begin::Pending { chunks, rest })
}

/// What loading one chunk did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum ChunkOutcome {
    Loaded {
        records: u64,
    },
    Invalid {
        error: RecordError,
    },
    /// Done before (a redelivery), or skipped because an earlier chunk failed.
    Nothing,
}

/// Loads one chunk into the batch's staging table, once.
pub async fn load_chunk<F, Fut>(
    client: &mut Client,
    dataset: &Dataset,
    message: &ChunkMessage,
    open: F,
) -> Result<ChunkOutcome, DbError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<ByteStream, StoreError>>,
{
    let chunk = message.chunk as i32;
    let tx = client.transaction().await?;
    let status: Option<String> = tx
        .query_opt(
            "SELECT status FROM pipeline.batch_chunks WHERE batch_id = $1 AND chunk = $2 FOR UPDATE",
            &[&message.batch_id, &chunk],
        )
        .await?
        .map(|r| r.get(0));
    if status.as_deref() != Some("pending") {
        return Ok(ChunkOutcome::Nothing);
    }
    // A chunk after one that failed is skipped; one before it still loads,
    // as it may hold the batch's first error.
    let failed: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pipeline.batch_chunks WHERE batch_id = $1 AND status = 'failed' AND chunk < $2)",
            &[&message.batch_id, &chunk],
        )
        .await?
        .get(0);
    if failed {
        tx.execute(
            "UPDATE pipeline.batch_chunks SET status = 'skipped' WHERE batch_id = $1 AND chunk = $2",
            &[&message.batch_id, &chunk],
        )
        .await?;
        tx.commit().await?;
        return Ok(ChunkOutcome::Nothing);
    }
    let sql = format!(
        "COPY {} (pipeline_chunk, pipeline_line, {}) FROM STDIN",
        staging(message.batch_id),
        column_list(dataset)
    );
    let decoder = Decoder::new(dataset).for_chunk(message.chunk);
    // The chunk's line breaks, counted as its bytes go by (not the header's).
    let lines = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = lines.clone();
    let mut stream = open()
        .await?
        .inspect(move |piece| {
            if let Ok(piece) = piece {
                let n = memchr::memchr_iter(b'\n', piece).count() as u64;
                counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            }
        })
        .boxed();
    if let Some(header) = &message.header {
        // The header line, then the chunk's records: local line 1 is the header.
        let line = bytes::Bytes::from(format!("{header}\n"));
        stream = futures_util::stream::once(async move { Ok(line) })
            .chain(stream)
            .boxed();
    }
    let started = std::time::Instant::now();
    let mut times = CopyTimes::default();
    let error = match copy_decoded(&tx, &sql, decoder, stream, &mut times).await? {
        Copied::Rows(records) => {
            tracing::info!(
                batch_id = %message.batch_id,
                chunk = message.chunk,
                records,
                total_ms = CopyTimes::ms(started.elapsed()),
                read_ms = CopyTimes::ms(times.read),
                decode_ms = CopyTimes::ms(times.decode),
                copy_ms = CopyTimes::ms(times.copy),
                "chunk load timings"
            );
            let n = records as i64;
            let lines = lines.load(std::sync::atomic::Ordering::Relaxed) as i64;
            tx.execute(
                "UPDATE pipeline.batch_chunks SET status = 'loaded', records = $3, lines = $4 WHERE batch_id = $1 AND chunk = $2",
                &[&message.batch_id, &chunk, &n, &lines],
            )
            .await?;
            tx.commit().await?;
            return Ok(ChunkOutcome::Loaded { records });
        }
        Copied::Invalid(error) => error,
        // The staging table has no key: a conflict cannot happen.
        Copied::KeyConflict => RecordError {
            line: 0,
            column: None,
            reason: "unexpected key conflict in the staging table".into(),
        },
    };
    // The COPY was aborted: roll back, then record the chunk's error, with
    // its line counted in the chunk's own bytes (without a repeated header).
    tx.rollback().await?;
    let mut error = error;
    if message.header.is_some() {
        error.line = error.line.saturating_sub(1).max(1);
    }
    let line = error.line as i64;
    client
        .execute(
            "UPDATE pipeline.batch_chunks SET status = 'failed', error_line = $3, error_column = $4, error_reason = $5
             WHERE batch_id = $1 AND chunk = $2 AND status = 'pending'",
            &[&message.batch_id, &chunk, &line, &error.column, &error.reason],
        )
        .await?;
    Ok(ChunkOutcome::Invalid { error })
}

/// What [`finish`] came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Finished {
    /// Chunks are still loading.
    Pending,
    /// The batch failed (a chunk's invalid record), or, begun by the
    /// previous version, was merged in one statement.
    Outcome(LoadOutcome),
    /// The batch is merging in slices: loaded, or to go on elsewhere.
    Slices(Merged),
}

/// How far one invocation merges: rows per slice, the time after which it
/// starts no slice it may not finish, and whether it merges one slice
/// whatever the time left (it did nothing else).
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub slice_rows: u64,
    pub until: Option<std::time::Instant>,
    pub at_least_one: bool,
}

/// Once every chunk is in, merges the staging table into the dataset's
/// table in slices (or fails the batch with its first error), exactly once.
pub async fn finish<F, Fut>(
    client: &mut Client,
    name: &str,
    dataset: &Dataset,
    batch_id: uuid::Uuid,
    prefix: F,
    budget: Budget,
) -> Result<Finished, DbError>
where
    F: FnOnce(u64) -> Fut,
    Fut: Future<Output = Result<ByteStream, StoreError>>,
{
    let pending: i64 = client
        .query_one(
            "SELECT count(*) FROM pipeline.batch_chunks WHERE batch_id = $1 AND status = 'pending'",
            &[&batch_id],
        )
        .await?
        .get(0);
    if pending > 0 {
        return Ok(Finished::Pending);
    }
    let tx = client.transaction().await?;
    if let Some(status) = lock_batch(&tx, batch_id).await? {
        // A batch that failed while merging: its merged slices are undone.
        let undo =
            status == crate::db::BatchStatus::Failed && to_undo(&tx, batch_id).await?.is_some();
        tx.commit().await?;
        if !undo {
            return Ok(Finished::Slices(Merged::Done));
        }
        let (rows, until) = (budget.slice_rows, budget.until);
        let undone = undo_slices(client, name, dataset, batch_id, rows, until).await?;
        return Ok(Finished::Slices(undone));
    }
    let failed = tx
        .query_opt(
            "SELECT start_byte, error_line, error_column, error_reason, chunk FROM pipeline.batch_chunks
             WHERE batch_id = $1 AND status = 'failed' ORDER BY chunk LIMIT 1",
            &[&batch_id],
        )
        .await?;
    let outcome = if let Some(row) = failed {
        fail(&tx, batch_id, row, prefix).await?
    } else if sliceable(&tx, batch_id).await? {
        tx.commit().await?;
        let merged = merge_slices(
            client,
            name,
            dataset,
            batch_id,
            budget.slice_rows,
            budget.until,
            budget.at_least_one,
        )
        .await?;
        return Ok(Finished::Slices(merged));
    } else {
        merge_whole(&tx, name, dataset, batch_id).await?
    };
    tx.batch_execute(&format!("DROP TABLE IF EXISTS {}", staging(batch_id)))
        .await?;
    tx.commit().await?;
    Ok(Finished::Outcome(outcome))
}

/// Fails the batch with its first chunk's error (`row`), its line counted
/// in the whole object.
async fn fail<F, Fut>(
    tx: &tokio_postgres::Transaction<'_>,
    batch_id: uuid::Uuid,
    row: tokio_postgres::Row,
    prefix: F,
) -> Result<LoadOutcome, DbError>
where
    F: FnOnce(u64) -> Fut,
    Fut: Future<Output = Result<ByteStream, StoreError>>,
{
    // The line in the whole object: line breaks before the chunk, plus its own line.
    let start: i64 = row.get(0);
    let local: i64 = row.get(1);
    let before = match lines_before(tx, batch_id, row.get(4)).await? {
        Some(lines) => lines,
        None => {
            let mut stream = prefix(start as u64).await?;
            let mut before = 0i64;
            while let Some(piece) = stream.next().await {
                before += memchr::memchr_iter(b'\n', &piece?).count() as i64;
            }
            before
        }
    };
    let error = RecordError {
        line: (before + local) as u64,
        column: row.get(2),
        reason: row.get::<_, Option<String>>(3).unwrap_or_default(),
    };
    mark_invalid(tx, batch_id, &error).await?;
    Ok(LoadOutcome::Invalid { error })
}

/// The line breaks of the chunks before `chunk` (every one of them loaded,
/// since chunks before a failed one load), as they counted them; `None`
/// when one was loaded by the previous version, which did not count: the
/// object's bytes before the chunk are then read.
async fn lines_before(
    tx: &tokio_postgres::Transaction<'_>,
    batch_id: uuid::Uuid,
    chunk: i32,
) -> Result<Option<i64>, DbError> {
    Ok(tx
        .query_one(
            "SELECT CASE WHEN count(*) FILTER (WHERE lines IS NULL) = 0 THEN coalesce(sum(lines), 0)::bigint END
             FROM pipeline.batch_chunks WHERE batch_id = $1 AND chunk < $2 AND status <> 'split'",
            &[&batch_id, &chunk],
        )
        .await?
        .get(0))
}

/// Merges a staging table made by the previous version (without the index
/// slices need) in one statement.
async fn merge_whole(
    tx: &tokio_postgres::Transaction<'_>,
    name: &str,
    dataset: &Dataset,
    batch_id: uuid::Uuid,
) -> Result<LoadOutcome, DbError> {
    let records = staged_records(tx, batch_id).await?;
    let cols = column_list(dataset);
    let table = format!("public.{}", ident(name));
    let stage = staging(batch_id);
    let merging = std::time::Instant::now();
    // Usually no key is stored already nor repeated: a plain insert, under
    // a savepoint; on a conflict, the merge with the conflict rule.
    tx.batch_execute("SAVEPOINT plain").await?;
    let plain = tx
        .execute(
            &format!("INSERT INTO {table} ({cols}) SELECT {cols} FROM {stage}"),
            &[],
        )
        .await;
    let inserted = match plain {
        Ok(n) => {
            tx.batch_execute("RELEASE SAVEPOINT plain").await?;
            n
        }
        Err(e) if e.code() != Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
            return Err(e.into());
        }
        Err(_) => {
            tx.batch_execute("ROLLBACK TO SAVEPOINT plain").await?;
            merge_stage(
                tx,
                name,
                dataset,
                &stage,
                &["pipeline_chunk", "pipeline_line"],
            )
            .await?
        }
    };
    tracing::info!(
        batch_id = %batch_id,
        dataset = name,
        records,
        merge_ms = CopyTimes::ms(merging.elapsed()),
        "merge timings"
    );
    mark_loaded(tx, batch_id, records, inserted as i64).await?;
    Ok(LoadOutcome::Loaded {
        records: records as u64,
        inserted,
        duplicates: records as u64 - inserted,
    })
}
