//! Large batches, loaded in parallel chunks.
//!
//! An object above a threshold is cut into byte ranges that start on record
//! boundaries (for CSV, found by following the quotes from the start). Each range is its own message (SQS in AWS, the local
//! queue on this machine), loaded by whichever loader gets it into the
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

use std::future::Future;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use crate::dataset::CsvOptions;
use crate::dataset::Dataset;
use crate::db::{
    Copied, CopyTimes, DbError, LoadOutcome, Merged, column_list, copy_decoded, ident, lock_batch,
    mark_invalid, mark_loaded, merge_slices, merge_stage, slice_index, sliceable, staged_records,
    staging,
};
use crate::records::{BOM, Decoder, MAX_RECORD_BYTES, RecordEnds, RecordError};
use crate::store::{ByteStream, Store, StoreError};

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

/// Cuts an object of `size` bytes into ranges of about `chunk_bytes`, each
/// starting right after a line break.
pub async fn plan(
    store: &Store,
    key: &str,
    size: u64,
    chunk_bytes: u64,
) -> Result<Vec<(u64, u64)>, StoreError> {
    let mut starts = vec![0u64];
    let mut at = chunk_bytes;
    while at < size {
        // The next record starts after the first line break at or past `at`.
        let window = (MAX_RECORD_BYTES as u64 + 2).min(size - at);
        let mut stream = store.get_range(key, at, Some(at + window)).await?;
        let mut offset = at;
        let mut found = None;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if let Some(pos) = memchr::memchr(b'\n', &chunk) {
                found = Some(offset + pos as u64 + 1);
                break;
            }
            offset += chunk.len() as u64;
        }
        match found {
            Some(next) if next < size => {
                starts.push(next);
                at = next + chunk_bytes;
            }
            // No break before the end: the rest is one chunk (an over-long
            // record is reported when the chunk is read).
            _ => break,
        }
    }
    let mut ranges = Vec::with_capacity(starts.len());
    for (i, start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(size);
        ranges.push((*start, end));
    }
    Ok(ranges)
}

/// Cuts a CSV object into ranges of about `chunk_bytes` that start on record
/// boundaries, and returns its header line (without a byte-order mark), if
/// the dialect has one. A quoted field may hold a line break, so the object
/// is read once from the start, following the quotes.
pub async fn plan_csv(
    store: &Store,
    key: &str,
    size: u64,
    chunk_bytes: u64,
    options: &CsvOptions,
) -> Result<(Vec<(u64, u64)>, Option<String>), StoreError> {
    let mut stream = store.get(key).await?;
    let mut starts = vec![0u64];
    // The header line once complete; until then, its first bytes.
    let mut header: Option<Vec<u8>> = None;
    let mut header_bytes = Vec::new();
    let mut ends_at = RecordEnds::new(options);
    let mut offset = 0u64;
    let mut target = chunk_bytes;
    while let Some(piece) = stream.next().await {
        let piece = piece?;
        if options.header && header.is_none() {
            let keep = (MAX_RECORD_BYTES + 1)
                .saturating_sub(header_bytes.len())
                .min(piece.len());
            header_bytes.extend_from_slice(&piece[..keep]);
        }
        ends_at.scan(&piece, |pos, ends_record| {
            if !ends_record {
                return;
            }
            let next = offset + pos as u64 + 1;
            if options.header && header.is_none() {
                let len = (next as usize).min(header_bytes.len());
                header = Some(header_bytes[..len].to_vec());
                header_bytes = Vec::new();
            }
            if next >= target && next < size {
                starts.push(next);
                target = next + chunk_bytes;
            }
        });
        offset += piece.len() as u64;
    }
    let header = options.header.then(|| {
        let header = header.unwrap_or(header_bytes);
        let header = header.strip_prefix(BOM).unwrap_or(&header);
        String::from_utf8_lossy(header)
            .trim_end_matches(['\n', '\r'])
            .to_string()
    });
    let mut ranges = Vec::with_capacity(starts.len());
    for (i, start) in starts.iter().enumerate() {
        ranges.push((*start, starts.get(i + 1).copied().unwrap_or(size)));
    }
    Ok((ranges, header))
}

/// What starting a chunked load found.
#[derive(Debug, PartialEq, Eq)]
pub enum Begin {
    /// The batch is loaded or failed already.
    Done { status: crate::db::BatchStatus },
    /// These chunks are still to load: send (or send again) their messages.
    Pending(Vec<ChunkMessage>),
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

/// Records the chunks of a batch and creates its staging table, once, in one
/// transaction (a loader that dies meanwhile leaves neither behind); on a
/// redelivery, keeps the chunks recorded first (`ranges` are then ignored)
/// and returns those still pending so that their messages are sent again.
/// None pending while the batch is open means that its merge is still to do
/// ([`finish`]).
pub async fn begin(
    client: &mut Client,
    name: &str,
    batch_id: uuid::Uuid,
    key: &str,
    ranges: &[(u64, u64)],
    header: Option<&str>,
) -> Result<Begin, DbError> {
    let tx = client.transaction().await?;
    if let Some(status) = lock_batch(&tx, batch_id).await? {
        return Ok(Begin::Done { status });
    }
    let planned: i64 = tx
        .query_one(
            "SELECT count(*) FROM pipeline.batch_chunks WHERE batch_id = $1",
            &[&batch_id],
        )
        .await?
        .get(0);
    if planned == 0 {
        // Its index takes the merge's slices in order (see `db::merge_slices`).
        tx.batch_execute(&format!(
            "CREATE UNLOGGED TABLE IF NOT EXISTS {stage} (pipeline_chunk integer NOT NULL, pipeline_line bigint NOT NULL, LIKE public.{});
             CREATE INDEX IF NOT EXISTS {} ON {stage} (pipeline_chunk, pipeline_line)",
            ident(name),
            slice_index(batch_id),
            stage = staging(batch_id),
        ))
        .await?;
        for (i, (start, end)) in ranges.iter().enumerate() {
            let (chunk, start, end) = (i as i32, *start as i64, *end as i64);
            tx.execute(
                "INSERT INTO pipeline.batch_chunks (batch_id, chunk, start_byte, end_byte, status) VALUES ($1, $2, $3, $4, 'pending')",
                &[&batch_id, &chunk, &start, &end],
            )
            .await?;
        }
        tx.execute(
            "UPDATE pipeline.batches SET status = 'loading' WHERE batch_id = $1",
            &[&batch_id],
        )
        .await?;
    }
    let rows = tx
        .query(
            "SELECT chunk, start_byte, end_byte FROM pipeline.batch_chunks WHERE batch_id = $1 AND status = 'pending' ORDER BY chunk",
            &[&batch_id],
        )
        .await?;
    tx.commit().await?;
    Ok(Begin::Pending(
        rows.iter()
            .map(|r| ChunkMessage {
                batch_id,
                dataset: name.to_string(),
                key: key.to_string(),
                chunk: r.get::<_, i32>(0) as u32,
                start: r.get::<_, i64>(1) as u64,
                end: r.get::<_, i64>(2) as u64,
                header: header
                    .filter(|_| r.get::<_, i32>(0) > 0)
                    .map(str::to_string),
            })
            .collect(),
    ))
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
    let mut stream = open().await?;
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
            tx.execute(
                "UPDATE pipeline.batch_chunks SET status = 'loaded', records = $3 WHERE batch_id = $1 AND chunk = $2",
                &[&message.batch_id, &chunk, &n],
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
    if lock_batch(&tx, batch_id).await?.is_some() {
        return Ok(Finished::Slices(Merged::Done));
    }
    let failed = tx
        .query_opt(
            "SELECT start_byte, error_line, error_column, error_reason FROM pipeline.batch_chunks
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
    let mut stream = prefix(start as u64).await?;
    let mut before = 0i64;
    while let Some(piece) = stream.next().await {
        before += memchr::memchr_iter(b'\n', &piece?).count() as i64;
    }
    let error = RecordError {
        line: (before + local) as u64,
        column: row.get(2),
        reason: row.get::<_, Option<String>>(3).unwrap_or_default(),
    };
    mark_invalid(tx, batch_id, &error).await?;
    Ok(LoadOutcome::Invalid { error })
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
