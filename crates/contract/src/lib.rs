//! What the API's handlers, its OpenAPI document and its clients agree on,
//! written once: the routes, the limits, and the rules of the values the
//! API takes. Only serde, so every other crate can use it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

mod scope;
mod wire;
pub use scope::*;
pub use wire::*;

/// The pipeline's functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FunctionId {
    Ingest,
    Loader,
    Query,
}

impl FunctionId {
    /// Every function, in the order stacks, packages and reports list them.
    pub const ALL: [FunctionId; 3] = [FunctionId::Ingest, FunctionId::Loader, FunctionId::Query];

    /// The name specs, templates, packages and function names use.
    pub fn as_str(self) -> &'static str {
        match self {
            FunctionId::Ingest => "ingest",
            FunctionId::Loader => "loader",
            FunctionId::Query => "query",
        }
    }

    /// Whether API Gateway invokes it (ingest and query); the loader reads
    /// the queue.
    pub fn serves_api(self) -> bool {
        self != FunctionId::Loader
    }
}

impl fmt::Display for FunctionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FunctionId {
    type Err = UnknownFunction;

    fn from_str(text: &str) -> Result<FunctionId, UnknownFunction> {
        FunctionId::ALL
            .into_iter()
            .find(|f| f.as_str() == text)
            .ok_or_else(|| UnknownFunction(text.to_string()))
    }
}

/// A name that is not one of the pipeline's functions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownFunction(pub String);

impl fmt::Display for UnknownFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` is not a function: ingest, loader or query", self.0)
    }
}

impl std::error::Error for UnknownFunction {}

/// Where a batch stands: `received` (stored, waiting for the loader),
/// `loading`, then `loaded` or `failed`. The database keeps the same words
/// (a CHECK constraint), and the API answers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(inline))]
#[serde(rename_all = "lowercase")]
pub enum BatchStatus {
    Received,
    Loading,
    Loaded,
    Failed,
}

impl BatchStatus {
    pub const ALL: [BatchStatus; 4] = [
        BatchStatus::Received,
        BatchStatus::Loading,
        BatchStatus::Loaded,
        BatchStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BatchStatus::Received => "received",
            BatchStatus::Loading => "loading",
            BatchStatus::Loaded => "loaded",
            BatchStatus::Failed => "failed",
        }
    }

    /// Whether the batch is done with, either way.
    pub fn is_final(self) -> bool {
        matches!(self, BatchStatus::Loaded | BatchStatus::Failed)
    }
}

impl fmt::Display for BatchStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A word that is not a batch status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownStatus(pub String);

impl fmt::Display for UnknownStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` is not a batch status", self.0)
    }
}

impl std::error::Error for UnknownStatus {}

impl FromStr for BatchStatus {
    type Err = UnknownStatus;

    fn from_str(text: &str) -> Result<BatchStatus, UnknownStatus> {
        BatchStatus::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| UnknownStatus(text.to_string()))
    }
}

/// The API's routes: the path's segments (`*` stands for one segment: a
/// dataset or a batch id) and the methods it takes.
pub const ROUTES: &[(&[&str], &[&str])] = &[
    (&["v1", "health"], &["GET"]),
    (&["v1", "datasets", "*", "batches"], &["POST"]),
    (&["v1", "datasets", "*", "uploads"], &["POST"]),
    (&["v1", "datasets", "*", "records"], &["GET"]),
    (&["v1", "batches", "*"], &["GET"]),
    (&["v1", "batches", "*", "complete"], &["POST"]),
    (&["v1", "batches", "*", "parts"], &["POST"]),
];

/// The methods a path takes (none for a path that is not the API's).
pub fn allowed_methods(parts: &[&str]) -> &'static [&'static str] {
    ROUTES
        .iter()
        .find(|(pattern, _)| {
            pattern.len() == parts.len()
                && pattern.iter().zip(parts).all(|(p, s)| *p == "*" || p == s)
        })
        .map_or(&[], |(_, methods)| *methods)
}

/// The most records one page of `GET .../records` holds (`limit`).
pub const MAX_PAGE: u32 = 1000;

/// The most bytes the records of one page take in the query function's
/// answer, where the body is a JSON string (a quote or backslash counts
/// twice). Lambda answers at most 6 MB ("Lambda quotas": invocation
/// payload, response), and API Gateway answers 502 to a larger answer; the
/// rest is left for the cursor, the headers and the answer's envelope. A
/// page stops before the record that would pass it, with a `next_cursor`;
/// a single larger record is a page of its own.
pub const MAX_PAGE_BYTES: usize = 5 * 1024 * 1024;

/// Longest a records read may run, in milliseconds: the database stops a
/// longer one and the API answers 503. A page is one range scan of an index
/// and takes milliseconds; the limit keeps a read that would scan without
/// bound (a filter whose index is missing) from holding a connection and
/// starving the other readers.
pub const READ_TIMEOUT_MS: u32 = 5_000;

/// The records of a page when the request gives no `limit`.
pub const DEFAULT_PAGE: u32 = 100;

/// The most invalid records a rejected batch's answer lists.
pub const MAX_ERRORS: usize = 100;

/// The largest object S3 stores, so the largest batch: 5 TiB.
pub const MAX_OBJECT_BYTES: u64 = 5 * 1024 * 1024 * 1024 * 1024;

/// The most parts of a multipart upload (S3's limit).
pub const MAX_PARTS: u64 = 10_000;

/// Presigned part URLs in one answer. Each takes about 1.5 KB with a
/// session token, and Lambda answers at most 6 MB ("Lambda quotas":
/// invocation payload, response): 10,000 parts' URLs would not fit, 1,000
/// take about a quarter of it.
pub const PART_URLS_PER_ANSWER: usize = 1000;

/// The form of a records cursor as the API document writes it: the
/// `next_cursor` of a page is lowercase hex, two digits a byte.
pub const CURSOR_PATTERN: &str = "^(?:[0-9a-f]{2})+$";

/// A cursor's bytes, when `text` has the cursor's form
/// ([`CURSOR_PATTERN`]).
pub fn cursor_bytes(text: &str) -> Option<Vec<u8>> {
    if text.is_empty() || !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// Longest idempotency key.
pub const MAX_IDEMPOTENCY_KEY: usize = 128;

/// The idempotency key's pattern as the API document writes it: 1 to
/// [`MAX_IDEMPOTENCY_KEY`] visible ASCII characters.
pub const IDEMPOTENCY_KEY_PATTERN: &str = "^[!-~]{1,128}$";

/// Whether `key` is an idempotency key ([`IDEMPOTENCY_KEY_PATTERN`]), in
/// the header and in uploads alike.
pub fn valid_idempotency_key(key: &str) -> bool {
    (1..=MAX_IDEMPOTENCY_KEY).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

/// The bytes a request body takes in the Lambda event API Gateway makes of
/// it: a JSON string, so quotes, backslashes and line breaks take two bytes
/// and other control characters six; a body that is not UTF-8 travels in
/// base64. Lambda's 6 MB request limit ("Lambda quotas") applies to the
/// event, so the inline limit is measured this way.
pub fn event_body_len(body: &[u8]) -> u64 {
    if std::str::from_utf8(body).is_err() {
        return (body.len() as u64).div_ceil(3) * 4;
    }
    body.iter()
        .map(|&b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum()
}

/// Lower-case hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_names_read_back_as_written() {
        for f in FunctionId::ALL {
            assert_eq!(f.as_str().parse(), Ok(f));
        }
        assert_eq!(
            "writer".parse::<FunctionId>().map_err(|e| e.to_string()),
            Err("`writer` is not a function: ingest, loader or query".into())
        );
    }

    #[test]
    fn batch_statuses_read_back_as_written() {
        for status in BatchStatus::ALL {
            assert_eq!(status.as_str().parse(), Ok(status));
            assert_eq!(
                serde_json::to_string(&status).ok(),
                Some(format!("\"{status}\""))
            );
        }
        assert_eq!(
            "done".parse::<BatchStatus>(),
            Err(UnknownStatus("done".into()))
        );
    }

    #[test]
    fn the_pattern_and_the_check_agree_on_idempotency_keys() {
        assert_eq!(
            IDEMPOTENCY_KEY_PATTERN,
            format!("^[!-~]{{1,{MAX_IDEMPOTENCY_KEY}}}$")
        );
    }

    #[test]
    fn idempotency_keys_are_visible_ascii() {
        assert!(valid_idempotency_key("retry-1"));
        assert!(valid_idempotency_key(&"k".repeat(128)));
        assert!(!valid_idempotency_key(""));
        assert!(!valid_idempotency_key(&"k".repeat(129)));
        assert!(!valid_idempotency_key("a b"));
        assert!(!valid_idempotency_key("a\u{0}b"));
        assert!(!valid_idempotency_key("G½"));
    }

    #[test]
    fn routes_match_whole_segments() {
        assert_eq!(allowed_methods(&["v1", "health"]), ["GET"]);
        assert_eq!(
            allowed_methods(&["v1", "datasets", "events", "batches"]),
            ["POST"]
        );
        assert!(allowed_methods(&["v1", "datasets", "batches"]).is_empty());
    }

    #[test]
    fn event_body_len_is_the_length_of_the_body_as_a_json_string() {
        for body in [
            "",
            "plain",
            "{\"id\": 1, \"kind\": \"a\\\\b\"}\n{\"id\": 2}\r\n",
            "tab\there \u{8}\u{c}\u{1}\u{1f} é ✓",
        ] {
            let quoted = serde_json::to_string(body).unwrap_or_default();
            assert_eq!(
                event_body_len(body.as_bytes()),
                quoted.len() as u64 - 2,
                "{body:?}"
            );
        }
        // Not UTF-8: base64.
        assert_eq!(event_body_len(&[0xff, 0xfe, 0x00, 0x01]), 8);
    }
}
