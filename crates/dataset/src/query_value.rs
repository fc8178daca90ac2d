//! Values of query filters, checked as the API's document writes them (JSON
//! Schema types and formats), before they reach Postgres: Postgres reads
//! much more (`infinity`, `yes`, `{…}` uuids, `1_000`, dates in other
//! orders), and a filter the document refuses must not select rows.

use crate::ColumnType;

impl ColumnType {
    /// Why `text` is not a value of this type as the API's document writes
    /// it, with the form expected; `None` when it is one.
    pub fn query_value_problem(self, text: &str) -> Option<String> {
        let fits = match self {
            ColumnType::Text | ColumnType::Jsonb => true,
            ColumnType::Int => is_integer(text) && text.parse::<i32>().is_ok(),
            ColumnType::Bigint => is_integer(text) && text.parse::<i64>().is_ok(),
            ColumnType::Float => {
                is_json_number(text) && text.parse::<f64>().is_ok_and(f64::is_finite)
            }
            ColumnType::Numeric => is_decimal(text),
            ColumnType::Bool => matches!(text, "true" | "false"),
            ColumnType::Date => is_full_date(text),
            ColumnType::Timestamptz => is_date_time(text),
            ColumnType::Uuid => is_uuid(text),
        };
        if fits {
            return None;
        }
        let expected = match self {
            ColumnType::Text | ColumnType::Jsonb => return None,
            ColumnType::Int => "a whole number from -2147483648 to 2147483647",
            ColumnType::Bigint => "a whole number of at most 19 digits, such as 4242",
            ColumnType::Float => "a finite JSON number, such as 1.5 or 2e-3",
            ColumnType::Numeric => "a decimal number, such as 12.50",
            ColumnType::Bool => "true or false",
            ColumnType::Date => "a date written YYYY-MM-DD, such as 2024-01-31",
            ColumnType::Timestamptz => {
                "an RFC 3339 timestamp with its offset, such as 2024-01-31T12:00:00Z"
            }
            ColumnType::Uuid => {
                "a UUID written with hyphens, such as 0b6f1c3e-8d2a-4f5b-9c1d-2e3f4a5b6c7d"
            }
        };
        Some(format!("expected {expected}, found `{text}`"))
    }
}

fn digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// `-?[0-9]+`, as JSON writes an integer (leading zeros aside).
fn is_integer(text: &str) -> bool {
    digits(text.strip_prefix('-').unwrap_or(text))
}

/// JSON's number grammar.
fn is_json_number(text: &str) -> bool {
    let body = text.strip_prefix('-').unwrap_or(text);
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(at) => (&body[..at], Some(&body[at + 1..])),
        None => (body, None),
    };
    let (whole, fraction) = match mantissa.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (mantissa, None),
    };
    let exponent_ok = exponent.is_none_or(|e| digits(e.strip_prefix(['+', '-']).unwrap_or(e)));
    digits(whole)
        && (whole == "0" || !whole.starts_with('0'))
        && fraction.is_none_or(digits)
        && exponent_ok
}

/// A decimal as the API writes numerics: `-?digits[.digits]`.
fn is_decimal(text: &str) -> bool {
    let body = text.strip_prefix('-').unwrap_or(text);
    match body.split_once('.') {
        Some((whole, fraction)) => digits(whole) && digits(fraction),
        None => digits(body),
    }
}

/// RFC 3339's `full-date`, a real day.
fn is_full_date(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && digits(&text[..4])
        && digits(&text[5..7])
        && digits(&text[8..])
        && chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok()
}

/// RFC 3339's `date-time`: a full date, `T`, a time, and `Z` or an offset.
fn is_date_time(text: &str) -> bool {
    text.len() > 11
        && text.is_char_boundary(10)
        && is_full_date(&text[..10])
        && matches!(text.as_bytes()[10], b'T' | b't')
        && chrono::DateTime::parse_from_rfc3339(text).is_ok()
}

/// The hyphenated form, 8-4-4-4-12 hexadecimal digits.
fn is_uuid(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_values_are_read_as_the_document_writes_them() {
        let cases: &[(ColumnType, &[&str], &[&str])] = &[
            (
                ColumnType::Int,
                &["0", "-12", "2147483647"],
                &["+1", "1.0", "2147483648", " 1", "1_000", ""],
            ),
            (
                ColumnType::Bigint,
                &["4242", "-9223372036854775808"],
                &["0x10", "1e3", "9223372036854775808", "4242 "],
            ),
            (
                ColumnType::Float,
                &["1.5", "-0", "2e-3", "10E+2"],
                &["NaN", "Infinity", "-inf", ".5", "5.", "01", "1e400"],
            ),
            (
                ColumnType::Numeric,
                &["12.50", "-3", "0.001"],
                &["NaN", "Infinity", "1e5", "1_000", ".5", "1,5"],
            ),
            (
                ColumnType::Bool,
                &["true", "false"],
                &["t", "yes", "on", "1", "TRUE"],
            ),
            (
                ColumnType::Date,
                &["2024-01-31", "2024-02-29"],
                &[
                    "2023-02-29",
                    "2024-1-31",
                    "20240131",
                    "infinity",
                    "Jan 31 2024",
                    "2024-01-31T00:00:00Z",
                ],
            ),
            (
                ColumnType::Timestamptz,
                &["2024-01-07T00:00:00Z", "2024-01-07t00:00:00.5+01:00"],
                &[
                    "-Infinity",
                    "infinity",
                    "now",
                    "epoch",
                    "2024-01-07",
                    "2024-01-07 00:00:00Z",
                    "2024-01-07T00:00:00",
                ],
            ),
            (
                ColumnType::Uuid,
                &[
                    "0b6f1c3e-8d2a-4f5b-9c1d-2e3f4a5b6c7d",
                    "0B6F1C3E-8D2A-4F5B-9C1D-2E3F4A5B6C7D",
                ],
                &[
                    "0b6f1c3e8d2a4f5b9c1d2e3f4a5b6c7d",
                    "{0b6f1c3e-8d2a-4f5b-9c1d-2e3f4a5b6c7d}",
                    "urn:uuid:0b6f1c3e-8d2a-4f5b-9c1d-2e3f4a5b6c7d",
                ],
            ),
        ];
        for (kind, good, bad) in cases {
            for value in *good {
                assert_eq!(kind.query_value_problem(value), None, "{kind:?} {value}");
            }
            for value in *bad {
                assert!(
                    kind.query_value_problem(value).is_some(),
                    "{kind:?} {value}"
                );
            }
        }
        assert_eq!(ColumnType::Text.query_value_problem("-Infinity"), None);
        assert_eq!(
            ColumnType::Timestamptz
                .query_value_problem("-Infinity")
                .as_deref(),
            Some(
                "expected an RFC 3339 timestamp with its offset, such as 2024-01-31T12:00:00Z, found `-Infinity`"
            )
        );
    }
}
