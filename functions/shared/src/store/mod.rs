//! Object storage for raw batches: S3 in AWS, a directory on this machine in
//! local mode. Objects carry a little metadata (batch id, record count,
//! SHA-256), as S3 user metadata does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use tokio::io::AsyncReadExt;

/// An error of the object store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object `{0}` does not exist")]
    NotFound(String),
    #[error("object store I/O on `{key}`: {source}")]
    Io {
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("object key `{0}` is not allowed")]
    BadKey(String),
    /// A multipart upload that cannot be completed as asked: unknown or
    /// finished, a part missing, or a part's ETag that does not match.
    #[error("{0}")]
    InvalidUpload(String),
    /// An object stored already under the key, with other data: a write
    /// never replaces one (S3's conditional writes answer 412).
    #[error("object `{0}` is stored already; a write cannot replace it")]
    Exists(String),
    /// A compressed object whose data cannot be decoded: the batch fails,
    /// it is not retried.
    #[error("{0}")]
    Corrupt(String),
}

/// A write found an object under `key` already: it is this write's own
/// (a retried request whose first attempt was stored) when its `sha256`
/// metadata is the same, else the write is refused.
pub(crate) fn same_data(
    key: &str,
    metadata: &BTreeMap<String, String>,
    stored: Option<ObjectInfo>,
) -> Result<(), StoreError> {
    let ours = metadata.get("sha256");
    match stored {
        Some(info) if ours.is_some() && info.metadata.get("sha256") == ours => Ok(()),
        _ => Err(StoreError::Exists(key.to_string())),
    }
}

/// Uploads larger than this go in parts of this size: a single S3 PUT takes
/// at most 5 GiB, and parts upload in parallel and are retried alone.
pub const DEFAULT_UPLOAD_PART_BYTES: u64 = 64 * 1024 * 1024;
/// S3 takes at most [`MAX_PARTS`] parts in one upload; the parts as the
/// API answers them, and as the client sends them back.
pub use pipeline_contract::{
    CompletedPart, MAX_OBJECT_BYTES, MAX_PARTS, PART_URLS_PER_ANSWER, UploadPart, hex,
};

/// The parts [`Store::put_stream`] sends to S3: 16 MiB, so that an object
/// of up to 160 GiB fits in [`MAX_PARTS`] while little is held in memory.
pub const STREAM_PART_BYTES: usize = 16 * 1024 * 1024;

/// A started multipart upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipartUpload {
    pub upload_id: String,
    pub parts: Vec<UploadPart>,
}

/// Cuts `size` bytes into parts of `part_bytes` (larger when that would make
/// more than [`MAX_PARTS`]): `(part number, offset, size)`, numbered from 1.
pub fn plan_parts(size: u64, part_bytes: u64) -> Vec<(u32, u64, u64)> {
    let part = part_bytes.max(1).max(size.div_ceil(MAX_PARTS));
    (0..size.div_ceil(part))
        .map(|i| {
            let offset = i * part;
            (i as u32 + 1, offset, part.min(size - offset))
        })
        .collect()
}

/// The parts of an upload without their URLs, and the numbers of those
/// whose URLs come with the upload's answer.
fn unsigned_parts(size: u64, part_bytes: u64) -> (Vec<UploadPart>, Vec<u32>) {
    let parts: Vec<UploadPart> = plan_parts(size, part_bytes)
        .into_iter()
        .map(|(part_number, offset, size)| UploadPart {
            part_number,
            offset,
            size,
            url: None,
        })
        .collect();
    let first = parts
        .iter()
        .take(PART_URLS_PER_ANSWER)
        .map(|p| p.part_number)
        .collect();
    (parts, first)
}

/// What is known of a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    pub metadata: BTreeMap<String, String>,
}

/// A stream of an object's bytes.
pub type ByteStream = BoxStream<'static, Result<Bytes, StoreError>>;

/// How far a stream given to [`stop_at`] went: the bytes it passed on, and
/// whether it was stopped.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    bytes: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stopped: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Progress {
    pub fn bytes(&self) -> u64 {
        self.bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the stream was stopped at its time.
    pub fn cut(&self) -> bool {
        self.stopped.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// `stream`, stopped at `at` (if any): a piece that has not come by then
/// is not waited for, and the stream ends with an error, so that its
/// consumer (an upload) gives up as on any error.
pub fn stop_at(stream: ByteStream, at: Option<std::time::Instant>) -> (ByteStream, Progress) {
    let progress = Progress::default();
    let Some(at) = at else {
        return (stream, progress);
    };
    let seen = progress.clone();
    let stopped = futures_util::stream::unfold(Some(stream), move |stream| {
        let seen = seen.clone();
        async move {
            let mut stream = stream?;
            let next = match std::time::Instant::now() < at {
                true => tokio::time::timeout_at(at.into(), stream.next())
                    .await
                    .map_err(drop),
                false => Err(()),
            };
            match next {
                Ok(Some(piece)) => {
                    if let Ok(piece) = &piece {
                        seen.bytes
                            .fetch_add(piece.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    }
                    Some((piece, Some(stream)))
                }
                Ok(None) => None,
                Err(_) => {
                    seen.stopped
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    let error = StoreError::Corrupt("stopped at the invocation's deadline".into());
                    Some((Err(error), None))
                }
            }
        }
    });
    (stopped.boxed(), progress)
}

mod local;
mod s3;

pub use local::*;
pub use s3::*;

/// Called after an object is stored, as S3 event notifications are in AWS.
pub trait Notify: Send + Sync {
    fn stored(
        &self,
        key: &str,
        size: u64,
    ) -> futures_util::future::BoxFuture<'_, Result<(), String>>;
}

/// The store a function uses.
#[derive(Debug, Clone)]
pub enum Store {
    Local(LocalStore),
    S3(S3Store),
}

impl Store {
    pub async fn put(
        &self,
        key: &str,
        body: Bytes,
        metadata: &BTreeMap<String, String>,
    ) -> Result<(), StoreError> {
        match self {
            Store::Local(store) => store.put(key, body, metadata).await,
            Store::S3(store) => store.put(key, body, metadata).await,
        }
    }

    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        match self {
            Store::Local(store) => store.head(key).await,
            Store::S3(store) => store.head(key).await,
        }
    }

    pub async fn get(&self, key: &str) -> Result<ByteStream, StoreError> {
        self.get_range(key, 0, None).await
    }

    pub async fn get_range(
        &self,
        key: &str,
        start: u64,
        end: Option<u64>,
    ) -> Result<ByteStream, StoreError> {
        match self {
            Store::Local(store) => store.get_range(key, start, end).await,
            Store::S3(store) => store.get_range(key, start, end).await,
        }
    }

    /// Stores what a stream yields as one object, holding at most a part of
    /// it at a time: locally a file written as the bytes come, on S3 a
    /// multipart upload in parts of [`STREAM_PART_BYTES`]. The object
    /// appears whole or not at all: when the stream fails, nothing is stored
    /// (the upload is aborted) and its error is returned. Answers the size.
    pub async fn put_stream(
        &self,
        key: &str,
        stream: ByteStream,
        metadata: &BTreeMap<String, String>,
    ) -> Result<u64, StoreError> {
        match self {
            Store::Local(store) => store.put_stream(key, stream, metadata).await,
            Store::S3(store) => store.put_stream(key, stream, metadata).await,
        }
    }

    /// A URL that takes one PUT of the object until `expires` (Unix seconds).
    pub async fn presign_put(&self, key: &str, expires: i64) -> Result<String, StoreError> {
        match self {
            Store::Local(store) => store.presign_put(key, expires, UploadTarget::Whole),
            Store::S3(store) => store.presign_put(key, expires).await,
        }
    }

    /// Starts a multipart upload of `size` bytes in parts of about
    /// `part_bytes`, whose URLs last until `expires`.
    pub async fn start_multipart(
        &self,
        key: &str,
        size: u64,
        part_bytes: u64,
        expires: i64,
    ) -> Result<MultipartUpload, StoreError> {
        match self {
            Store::Local(store) => store.start_multipart(key, size, part_bytes, expires).await,
            Store::S3(store) => store.start_multipart(key, size, part_bytes, expires).await,
        }
    }

    /// Presigned URLs of some parts of a started upload, in the order asked.
    pub async fn presign_parts(
        &self,
        key: &str,
        upload_id: &str,
        part_numbers: &[u32],
        expires: i64,
    ) -> Result<Vec<String>, StoreError> {
        match self {
            Store::Local(store) => store.presign_parts(key, upload_id, part_numbers, expires),
            Store::S3(store) => {
                store
                    .presign_parts(key, upload_id, part_numbers, expires)
                    .await
            }
        }
    }

    /// Completes a multipart upload with its parts, in order; the object is
    /// then stored and announced.
    pub async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
        metadata: &BTreeMap<String, String>,
    ) -> Result<(), StoreError> {
        match self {
            Store::Local(store) => {
                store
                    .complete_multipart(key, upload_id, parts, metadata)
                    .await
            }
            Store::S3(store) => store.complete_multipart(key, upload_id, parts).await,
        }
    }
}
