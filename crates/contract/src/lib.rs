//! What the API's handlers, its OpenAPI document and its clients agree on,
//! written once: the routes, the limits, and the rules of the values the
//! API takes. No dependencies, so every other crate can use it.

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

/// The records of a page when the request gives no `limit`.
pub const DEFAULT_PAGE: u32 = 100;

/// The most invalid records a rejected batch's answer lists.
pub const MAX_ERRORS: usize = 100;

/// The largest object S3 stores, so the largest batch: 5 TiB.
pub const MAX_OBJECT_BYTES: u64 = 5 * 1024 * 1024 * 1024 * 1024;

/// Presigned part URLs in one answer. Each takes about 1.5 KB with a
/// session token, and Lambda answers at most 6 MB ("Lambda quotas":
/// invocation payload, response): 10,000 parts' URLs would not fit, 1,000
/// take about a quarter of it.
pub const PART_URLS_PER_ANSWER: usize = 1000;

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
