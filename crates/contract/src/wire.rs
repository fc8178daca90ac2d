//! The bodies the API takes and answers, as the handlers write them and the
//! clients (`push`, `query`, `smoke`, `pipeline local`) read them. The API's
//! OpenAPI document takes its schemas from these types (the `schema`
//! feature derives them), so a field added here is in the document.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::BatchStatus;
#[cfg(feature = "schema")]
use crate::{
    IDEMPOTENCY_KEY_PATTERN, MAX_ERRORS, MAX_OBJECT_BYTES, MAX_PAGE, MAX_PARTS,
    PART_URLS_PER_ANSWER,
};

/// The stable code of an error answer: `bad_request`, `invalid_batch`,
/// `invalid_upload`, `not_found`, `method_not_allowed`,
/// `idempotency_conflict`, `too_large`, `unsupported_media_type`,
/// `unavailable` (the database or storage does not answer), `forbidden` (no
/// valid credentials) or `throttled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(inline))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    // The request is malformed: a body, parameter or header.
    BadRequest,
    // Records of a batch are invalid; nothing was stored.
    InvalidBatch,
    // An upload cannot be completed as sent.
    InvalidUpload,
    // No such dataset, batch or route.
    NotFound,
    // The path takes other methods (see `Allow`).
    MethodNotAllowed,
    // An idempotency key used for a different body.
    IdempotencyConflict,
    // The body is above the inline limit.
    TooLarge,
    // The body's content type is not the dataset's.
    UnsupportedMediaType,
    // The database or storage does not answer.
    Unavailable,
    // No valid credentials.
    Forbidden,
    // Too many requests.
    Throttled,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::BadRequest,
        ErrorCode::InvalidBatch,
        ErrorCode::InvalidUpload,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::IdempotencyConflict,
        ErrorCode::TooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::Unavailable,
        ErrorCode::Forbidden,
        ErrorCode::Throttled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InvalidBatch => "invalid_batch",
            ErrorCode::InvalidUpload => "invalid_upload",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::IdempotencyConflict => "idempotency_conflict",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Throttled => "throttled",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answer. API Gateway's own answers (a refused key, throttling, a
/// body above its limit) take the same shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "Error"))]
pub struct ErrorBody {
    pub error: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
}

/// A record that cannot be loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "ValidationError"))]
pub struct RecordError {
    /// Line of the batch the record starts on (1-based; a CSV header is line 1).
    #[cfg_attr(feature = "schema", schemars(range(min = 1)))]
    pub line: u64,
    /// The column (field) at fault, when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub column: Option<String>,
    pub reason: String,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.column {
            Some(c) => write!(f, "line {}, column `{c}`: {}", self.line, self.reason),
            None => write!(f, "line {}: {}", self.line, self.reason),
        }
    }
}

/// A batch refused whole: invalid records (`invalid_batch`, each with its
/// line and column) or an invalid `Idempotency-Key` (`bad_request`).
/// Nothing was stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct BatchRejected {
    pub error: RejectionCode,
    pub message: String,
    /// With `invalid_batch`: the invalid records, in order.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(length(max = MAX_ERRORS)))]
    pub errors: Vec<RecordError>,
    /// With `invalid_batch`: whether more records are invalid than `errors`
    /// lists.
    #[serde(default)]
    pub truncated: bool,
}

/// Why a batch was refused: `invalid_batch` or `bad_request`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(inline))]
#[serde(rename_all = "snake_case")]
pub enum RejectionCode {
    InvalidBatch,
    BadRequest,
}

/// A batch accepted and stored; loading follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct BatchAccepted {
    pub batch_id: Uuid,
    pub dataset: String,
    /// Records in the batch.
    #[cfg_attr(feature = "schema", schemars(range(min = 0)))]
    pub records: i64,
    /// SHA-256 of the body as stored, in hex.
    pub sha256: String,
    /// Where the batch's status is read.
    pub status_url: String,
}

/// Where a batch stands, and what loading it did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "BatchStatus"))]
pub struct Batch {
    pub batch_id: Uuid,
    pub dataset: String,
    pub status: BatchStatus,
    /// Records in the batch, once counted.
    pub records: Option<i64>,
    /// Rows the load inserted.
    pub inserted: Option<i64>,
    /// Records the load skipped because their key was already loaded.
    pub duplicates: Option<i64>,
    pub received_at: DateTime<Utc>,
    pub loaded_at: Option<DateTime<Utc>>,
    /// Why a failed batch failed.
    #[serde(default)]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "RecordError", extend("nullable" = true))
    )]
    pub error: Option<RecordError>,
    /// Why a failed batch failed when no record is at fault: its load could
    /// not finish (the last error once its deliveries were spent, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// How a batch's bytes are compressed: `Content-Encoding` of an inline
/// batch (`gzip` or `deflate`, which API Gateway decodes before the
/// function sees the body), or `content_encoding` of an upload (`gzip` or
/// `zstd`, decoded by the loader while it streams the object).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum ContentEncoding {
    Gzip,
    Deflate,
    Zstd,
}

impl ContentEncoding {
    /// The name, as HTTP and the API write it.
    pub fn name(self) -> &'static str {
        match self {
            ContentEncoding::Gzip => "gzip",
            ContentEncoding::Deflate => "deflate",
            ContentEncoding::Zstd => "zstd",
        }
    }

    /// The encoding a name stands for (compared ignoring case).
    pub fn from_name(name: &str) -> Option<ContentEncoding> {
        [
            ContentEncoding::Gzip,
            ContentEncoding::Deflate,
            ContentEncoding::Zstd,
        ]
        .into_iter()
        .find(|e| e.name().eq_ignore_ascii_case(name.trim()))
    }

    /// The suffix of an object stored with this encoding.
    pub fn extension(self) -> &'static str {
        match self {
            ContentEncoding::Gzip => "gz",
            ContentEncoding::Deflate => "zz",
            ContentEncoding::Zstd => "zst",
        }
    }
}

impl std::fmt::Display for ContentEncoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The request for an upload of a large batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct UploadRequest {
    /// Size of the batch to upload, in bytes.
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = MAX_OBJECT_BYTES)))]
    pub size_bytes: u64,
    /// The dataset's media type.
    pub content_type: String,
    /// How the uploaded bytes are compressed (`gzip`, `zstd` or `deflate`), if
    /// they are; `size_bytes` is then the compressed size. A compressed
    /// object loads as one stream, never in chunks.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    #[cfg_attr(feature = "schema", schemars(with = "ContentEncoding"))]
    pub content_encoding: Option<ContentEncoding>,
    /// A retry with the same key answers the same upload.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "String", pattern(IDEMPOTENCY_KEY_PATTERN))
    )]
    pub idempotency_key: Option<String>,
}

/// An optional field that, when present, holds a value: `null` is refused as
/// any other wrong type is.
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// Either `url`, for a batch that fits in one part, or `upload_id`, `parts`
/// and `complete_url`: PUT each part's bytes to its URL (in any order, in
/// parallel), keep the `ETag` header of each answer, then POST them to
/// `complete_url`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Upload {
    pub batch_id: Uuid,
    /// When the URLs stop working.
    pub expires_at: DateTime<Utc>,
    pub method: UploadMethod,
    /// Presigned URL that takes one PUT of the whole batch, with no other
    /// credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub url: Option<String>,
    /// Headers the PUT of `url` must send as they are, being signed into
    /// it: `If-None-Match: *`, so that an upload never replaces a stored
    /// batch (storage answers 412 when the object exists).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The multipart upload's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub upload_id: Option<String>,
    /// Every part of a multipart upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "Vec<UploadPart>", length(max = MAX_PARTS))
    )]
    pub parts: Option<Vec<UploadPart>>,
    /// Where the parts' ETags go once all are uploaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub complete_url: Option<String>,
    /// When some parts have no `url`: POST their numbers here to get their
    /// URLs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub parts_url: Option<String>,
    pub status_url: String,
}

/// The header a single upload's PUT sends, and its value: storage takes
/// the object only when none is stored under its key.
pub const UPLOAD_CONDITION: (&str, &str) = ("If-None-Match", "*");

/// How upload URLs are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(inline))]
pub enum UploadMethod {
    #[serde(rename = "PUT")]
    Put,
}

/// One part of a multipart upload: bytes `offset..offset + size` of the
/// batch go to `url` in one PUT, whose answer's `ETag` header the client
/// keeps for the completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct UploadPart {
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = MAX_PARTS)))]
    pub part_number: u32,
    /// First byte of the batch in this part.
    pub offset: u64,
    /// Bytes in this part.
    #[cfg_attr(feature = "schema", schemars(range(min = 1)))]
    pub size: u64,
    /// Presigned URL that takes one PUT of the part; given for the first
    /// parts of an answer, the others' come from `parts_url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub url: Option<String>,
}

/// The parts whose URLs to give.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PartsRequest {
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    pub upload_id: String,
    #[cfg_attr(
        feature = "schema",
        schemars(length(min = 1, max = PART_URLS_PER_ANSWER), inner(range(min = 1, max = MAX_PARTS)))
    )]
    pub part_numbers: Vec<u32>,
}

/// The parts' URLs, in the order asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PartUrls {
    /// When the URLs stop working.
    pub expires_at: DateTime<Utc>,
    #[cfg_attr(feature = "schema", schemars(length(max = PART_URLS_PER_ANSWER)))]
    pub parts: Vec<PartUrl>,
}

/// A part's presigned URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PartUrl {
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = MAX_PARTS)))]
    pub part_number: u32,
    pub url: String,
}

/// Every part of a multipart upload, to join into the batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", schemars(rename = "UploadComplete"))]
pub struct CompleteRequest {
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    pub upload_id: String,
    /// Every part, in ascending order of part number.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = MAX_PARTS)))]
    pub parts: Vec<CompletedPart>,
}

/// A part as uploaded: its number and the ETag its PUT answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct CompletedPart {
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = MAX_PARTS)))]
    pub part_number: u32,
    /// The ETag header of the part's PUT answer.
    pub etag: String,
}

/// A completed upload: the batch is stored and loading follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "UploadCompleted"))]
pub struct Completed {
    pub batch_id: Uuid,
    pub status_url: String,
}

/// The API and its database answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Health {
    pub status: HealthStatus,
    /// The environment that answered.
    pub environment: String,
}

/// The one healthy status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(inline))]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Ok,
}

/// A page of records: in key order, or, with range filters, in the order
/// of the first of their columns the dataset declares and then the key's.
/// Up to `limit` records, fewer when more would pass
/// [`MAX_PAGE_BYTES`](crate::MAX_PAGE_BYTES).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "RecordsPage"))]
pub struct RecordsPage<R> {
    #[cfg_attr(feature = "schema", schemars(length(max = MAX_PAGE)))]
    pub records: Vec<R>,
    /// Pass as `cursor` for the next page; null on the last page.
    #[cfg_attr(feature = "schema", schemars(required, extend("nullable" = true)))]
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_written_as_their_names() {
        for code in ErrorCode::ALL {
            assert_eq!(
                serde_json::to_string(&code).ok(),
                Some(format!("\"{code}\""))
            );
        }
    }

    #[test]
    fn optional_fields_are_left_out_and_null_keys_refused() {
        let error = r#"{"error":"bad_request","message":"m"}"#;
        let rejected: Option<BatchRejected> = serde_json::from_str(error).ok();
        assert_eq!(
            rejected.map(|r| (r.errors.len(), r.truncated)),
            Some((0, false))
        );
        let part = UploadPart {
            part_number: 1,
            offset: 0,
            size: 1,
            url: None,
        };
        assert_eq!(
            serde_json::to_string(&part).ok().as_deref(),
            Some(r#"{"part_number":1,"offset":0,"size":1}"#)
        );
        let null_key = r#"{"size_bytes":1,"content_type":"text/csv","idempotency_key":null}"#;
        assert!(serde_json::from_str::<UploadRequest>(null_key).is_err());
        let other = r#"{"size_bytes":1,"content_type":"text/csv","other":1}"#;
        assert!(serde_json::from_str::<UploadRequest>(other).is_err());
    }
}
