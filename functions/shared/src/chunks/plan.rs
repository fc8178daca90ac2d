//! Cutting a large object into chunks, a bounded step at a time.
//!
//! A chunk ends on a record boundary. For NDJSON that is the first line
//! break at or past the chunk's nominal end, found with one small range
//! read; a CSV field may hold a line break inside quotes, so the object is
//! read from the chunk's start, following the quotes. Either way a cut reads
//! at most a chunk and a record, whatever the object's size.
//!
//! The part of an object not yet cut is a chunk row of its own, `pending`
//! but not `planned` (the rest): while it is there, no version of the
//! loader merges the batch, as one chunk is still pending. A cut turns the
//! rest's row `split` and adds two after it, the piece cut and the new rest,
//! in one transaction; the piece's message goes out at once, so chunks load
//! while the object is still being cut, and an invocation that runs out of
//! time hands the rest on in a message of its own. The previous version of
//! the loader, given that message (or the rest in the chunks it sends again
//! for a redelivered notification), loads the rest as one chunk, which is
//! right, only longer: a row it holds is not cut, and a split row's
//! message is a no-op for every version.

use futures_util::StreamExt;
use tokio_postgres::Client;

use super::ChunkMessage;
use crate::dataset::{CsvOptions, Dataset, Format};
use crate::db::DbError;
use crate::records::{BOM, MAX_RECORD_BYTES, RecordEnds};
use crate::store::{Store, StoreError};

/// How an object's records end.
#[derive(Debug, Clone)]
pub enum Layout {
    /// One record per line (NDJSON).
    Lines,
    /// CSV in this dialect: line breaks in quoted fields do not end records.
    Csv(CsvOptions),
}

impl Layout {
    pub fn of(dataset: &Dataset) -> Layout {
        match dataset.format {
            Format::Ndjson => Layout::Lines,
            Format::Csv => Layout::Csv(dataset.csv().into_owned()),
        }
    }

    /// Whether the object's first line is a header that every chunk's
    /// message carries.
    fn has_header(&self) -> bool {
        matches!(self, Layout::Csv(options) if options.header)
    }
}

/// Where to look for a cut: the object, and the part of it not yet cut.
#[derive(Debug, Clone, Copy)]
pub struct Span<'a> {
    pub key: &'a str,
    /// Where the rest begins: a record boundary.
    pub start: u64,
    pub size: u64,
    pub chunk_bytes: u64,
}

/// What one cut found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// Where the piece cut ends and the new rest begins; `None`: the rest
    /// is the last chunk.
    pub end: Option<u64>,
    /// The CSV header line (without a byte-order mark), when cutting from
    /// the object's start in a dialect that has one.
    pub header: Option<String>,
}

/// Finds the first record boundary at or past `span.start + chunk_bytes`,
/// before the object's end.
pub async fn next_cut(store: &Store, span: Span<'_>, layout: &Layout) -> Result<Cut, StoreError> {
    match layout {
        Layout::Lines => Ok(Cut {
            end: line_cut(store, span).await?,
            header: None,
        }),
        Layout::Csv(options) => csv_cut(store, span, options).await,
    }
}

/// The CSV header of an object, read from its start.
pub async fn header(
    store: &Store,
    key: &str,
    layout: &Layout,
) -> Result<Option<String>, StoreError> {
    if !layout.has_header() {
        return Ok(None);
    }
    let span = Span {
        key,
        start: 0,
        size: 0,
        chunk_bytes: 0,
    };
    Ok(next_cut(store, span, layout).await?.header)
}

async fn line_cut(store: &Store, span: Span<'_>) -> Result<Option<u64>, StoreError> {
    let at = span.start.saturating_add(span.chunk_bytes);
    if at >= span.size {
        return Ok(None);
    }
    let window = (MAX_RECORD_BYTES as u64 + 2).min(span.size - at);
    let mut stream = store.get_range(span.key, at, Some(at + window)).await?;
    let mut offset = at;
    while let Some(piece) = stream.next().await {
        let piece = piece?;
        if let Some(pos) = memchr::memchr(b'\n', &piece) {
            let next = offset + pos as u64 + 1;
            return Ok((next < span.size).then_some(next));
        }
        offset += piece.len() as u64;
    }
    // No break before the end: the rest is one chunk (an over-long record
    // is reported when the chunk is read).
    Ok(None)
}

async fn csv_cut(store: &Store, span: Span<'_>, options: &CsvOptions) -> Result<Cut, StoreError> {
    let target = span.start.saturating_add(span.chunk_bytes);
    let mut header = HeaderBytes::new(options.header && span.start == 0);
    if target >= span.size && header.done() {
        return Ok(Cut {
            end: None,
            header: None,
        });
    }
    let mut stream = store.get_range(span.key, span.start, None).await?;
    let mut ends_at = RecordEnds::new(options);
    let mut offset = span.start;
    let mut end = None;
    while let Some(piece) = stream.next().await {
        let piece = piece?;
        header.keep(&piece);
        ends_at.scan(&piece, |pos, ends_record| {
            if !ends_record {
                return;
            }
            let next = offset + pos as u64 + 1;
            header.ends_at(next);
            if end.is_none() && next >= target && next < span.size {
                end = Some(next);
            }
        });
        offset += piece.len() as u64;
        if header.done() && (end.is_some() || target >= span.size) {
            break;
        }
    }
    Ok(Cut {
        end,
        header: header.line(),
    })
}

/// The first line of a CSV object as it is read: at most a record's bytes.
struct HeaderBytes {
    wanted: bool,
    bytes: Vec<u8>,
    line: Option<Vec<u8>>,
}

impl HeaderBytes {
    fn new(wanted: bool) -> HeaderBytes {
        HeaderBytes {
            wanted,
            bytes: Vec::new(),
            line: None,
        }
    }

    /// Whether the header is known (or none is wanted): a header longer than
    /// a record is cut there, and the chunks report the over-long record.
    fn done(&self) -> bool {
        !self.wanted || self.line.is_some() || self.bytes.len() > MAX_RECORD_BYTES
    }

    fn keep(&mut self, piece: &[u8]) {
        if self.done() {
            return;
        }
        let keep = (MAX_RECORD_BYTES + 1)
            .saturating_sub(self.bytes.len())
            .min(piece.len());
        self.bytes.extend_from_slice(&piece[..keep]);
    }

    /// The first record ends before offset `next` of the object.
    fn ends_at(&mut self, next: u64) {
        if self.wanted && self.line.is_none() {
            let len = usize::try_from(next).map_or(self.bytes.len(), |n| n.min(self.bytes.len()));
            self.line = Some(self.bytes[..len].to_vec());
        }
    }

    fn line(self) -> Option<String> {
        if !self.wanted {
            return None;
        }
        let line = self.line.unwrap_or(self.bytes);
        let line = line.strip_prefix(BOM).unwrap_or(&line);
        Some(
            String::from_utf8_lossy(line)
                .trim_end_matches(['\n', '\r'])
                .to_string(),
        )
    }
}

/// A cut recorded: the piece cut, to send now, and the new rest, if any,
/// to cut next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub piece: ChunkMessage,
    pub rest: Option<ChunkMessage>,
}

/// Whether `message` is the rest of an object still to cut (a rest handed
/// on, or sent again), rather than a chunk to load.
pub async fn is_rest(client: &Client, message: &ChunkMessage) -> Result<bool, DbError> {
    let row = client
        .query_opt(
            "SELECT 1 FROM pipeline.batch_chunks WHERE batch_id = $1 AND chunk = $2 AND status = 'pending' AND NOT planned",
            &[&message.batch_id, &(message.chunk as i32)],
        )
        .await?;
    Ok(row.is_some())
}

/// Records a cut of `rest` at `end` (`None`: the rest is the last chunk),
/// in one transaction. `None`: another loader holds the rest (a previous
/// version loading it whole, or another invocation cutting it), or it was
/// cut, loaded or given up already; this one stops.
pub async fn record_cut(
    client: &mut Client,
    rest: &ChunkMessage,
    end: Option<u64>,
) -> Result<Option<Recorded>, DbError> {
    let tx = client.transaction().await?;
    let chunk = rest.chunk as i32;
    let row = tx
        .query_opt(
            "SELECT start_byte FROM pipeline.batch_chunks
             WHERE batch_id = $1 AND chunk = $2 AND status = 'pending' AND NOT planned
             FOR UPDATE NOWAIT",
            &[&rest.batch_id, &chunk],
        )
        .await;
    let start = match row {
        Ok(Some(row)) => row.get::<_, i64>(0),
        Ok(None) => return Ok(None),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    if start as u64 != rest.start {
        return Ok(None);
    }
    let Some(end) = end else {
        tx.execute(
            "UPDATE pipeline.batch_chunks SET planned = true WHERE batch_id = $1 AND chunk = $2",
            &[&rest.batch_id, &chunk],
        )
        .await?;
        tx.commit().await?;
        return Ok(Some(Recorded {
            piece: rest.clone(),
            rest: None,
        }));
    };
    tx.execute(
        "UPDATE pipeline.batch_chunks SET status = 'split' WHERE batch_id = $1 AND chunk = $2",
        &[&rest.batch_id, &chunk],
    )
    .await?;
    let piece = rest.piece(rest.chunk + 1, rest.start, end);
    let next = rest.piece(rest.chunk + 2, end, rest.end);
    for (message, planned) in [(&piece, true), (&next, false)] {
        insert(&tx, message, planned).await?;
    }
    tx.commit().await?;
    Ok(Some(Recorded {
        piece,
        rest: Some(next),
    }))
}

/// Adds a chunk's row, pending.
pub(super) async fn insert(
    tx: &tokio_postgres::Transaction<'_>,
    message: &ChunkMessage,
    planned: bool,
) -> Result<(), DbError> {
    let (start, end) = (message.start as i64, message.end as i64);
    tx.execute(
        "INSERT INTO pipeline.batch_chunks (batch_id, chunk, start_byte, end_byte, status, planned, header)
         VALUES ($1, $2, $3, $4, 'pending', $5, $6)",
        &[
            &message.batch_id,
            &(message.chunk as i32),
            &start,
            &end,
            &planned,
            &message.header,
        ],
    )
    .await?;
    Ok(())
}
