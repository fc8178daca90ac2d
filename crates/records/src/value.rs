//! One column's values, read as the dataset writes them (ISO dates or a
//! pattern, epoch numbers, decimal commas, boolean words) and checked
//! against the column's type, then appended in COPY text form, which is
//! always the API's own form: the table holds proper types whatever the
//! batch's dialect.

use std::fmt::Write as _;

use chrono::format::{Item, Parsed, StrftimeItems};
use chrono::{DateTime, SecondsFormat};

use super::copy::{clip, copy_escape, is_decimal};
use super::json::{json_kind, json_string};
use pipeline_dataset::{Column, ColumnType, DecimalMark, TimeFormat};

/// How one column's values are read, prepared once per batch.
pub(super) struct Codec {
    kind: ColumnType,
    time: Time,
    comma: bool,
    /// The words read as true and as false, when the spec names them.
    words: Option<(Vec<String>, Vec<String>)>,
    /// The longest value an index of the column can hold
    /// ([`Dataset::indexed_value_limit`](pipeline_dataset::Dataset::indexed_value_limit)).
    max_bytes: Option<usize>,
}

enum Time {
    Iso,
    EpochSeconds,
    EpochMillis,
    Pattern {
        items: Vec<Item<'static>>,
        /// The pattern and an example, for errors.
        expected: String,
        offset: bool,
        /// What follows a timestamp without an offset in Postgres input.
        zone: String,
    },
}

impl Codec {
    pub(super) fn new(column: &Column) -> Codec {
        let time = match column.time_format() {
            TimeFormat::Iso => Time::Iso,
            TimeFormat::EpochSeconds => Time::EpochSeconds,
            TimeFormat::EpochMillis => Time::EpochMillis,
            // Patterns were checked with the spec; one that does not parse
            // here reads nothing, and every value is reported against it.
            TimeFormat::Pattern(p) => Time::Pattern {
                items: StrftimeItems::new(&p).parse_to_owned().unwrap_or_default(),
                expected: column
                    .written_as()
                    .unwrap_or_else(|| format!("written as `{p}`")),
                offset: pipeline_dataset::pattern_has_offset(&p),
                zone: column.timezone().postgres().to_string(),
            },
        };
        let words = (column.true_values.is_some() || column.false_values.is_some()).then(|| {
            let (yes, no) = column.bool_words();
            let owned = |w: Vec<&str>| w.into_iter().map(str::to_string).collect();
            (owned(yes), owned(no))
        });
        Codec {
            kind: column.kind,
            time,
            comma: column.decimal == Some(DecimalMark::Comma),
            words,
            max_bytes: None,
        }
    }

    /// The codec of a column whose values go into an index of at most
    /// `max_bytes` per value.
    pub(super) fn indexed(self, max_bytes: Option<usize>) -> Codec {
        Codec { max_bytes, ..self }
    }

    /// Encodes a JSON value (raw text) of the column.
    pub(super) fn encode_json(&self, raw: &str, out: &mut Vec<u8>) -> Result<(), String> {
        let is_string = raw.starts_with('"');
        match self.kind {
            ColumnType::Jsonb => {
                if raw.contains("\\u0000") {
                    return Err("jsonb cannot hold the character \\u0000".into());
                }
                copy_escape(raw, out);
                Ok(())
            }
            ColumnType::Bool => match (raw, &self.words) {
                ("true", _) => {
                    out.push(b't');
                    Ok(())
                }
                ("false", _) => {
                    out.push(b'f');
                    Ok(())
                }
                (_, Some(_)) if is_string => self.encode_text(&json_string(raw)?, out),
                (_, Some((yes, no))) => Err(format!(
                    "expected true, false or a string {}, found {}",
                    word_list(yes, no),
                    json_kind(raw).unwrap_or("nothing")
                )),
                _ => Err("expected true or false".into()),
            },
            ColumnType::Int | ColumnType::Bigint => {
                if let Some(found) = json_kind(raw).filter(|k| *k != "a number") {
                    return Err(format!("expected a number, found {found}"));
                }
                self.encode_text(raw, out)
            }
            // A JSON number, or (with a decimal comma, or to keep a
            // numeric's precision) a string holding one.
            ColumnType::Float | ColumnType::Numeric => {
                if is_string && (self.comma || self.kind == ColumnType::Numeric) {
                    return self.encode_text(&json_string(raw)?, out);
                }
                if let Some(found) = json_kind(raw).filter(|k| *k != "a number") {
                    return Err(format!("expected a number, found {found}"));
                }
                self.encode_number(raw, out)
            }
            ColumnType::Timestamptz
                if !is_string && matches!(self.time, Time::EpochSeconds | Time::EpochMillis) =>
            {
                if let Some(found) = json_kind(raw).filter(|k| *k != "a number") {
                    return Err(format!("expected a number, found {found}"));
                }
                self.encode_text(raw, out)
            }
            ColumnType::Text | ColumnType::Date | ColumnType::Timestamptz | ColumnType::Uuid => {
                let text = json_string(raw)?;
                self.encode_text(&text, out)
            }
        }
    }

    /// Checks a value given as text (a CSV field, or a JSON string's
    /// content) and appends its COPY form.
    pub(super) fn encode_text(&self, text: &str, out: &mut Vec<u8>) -> Result<(), String> {
        if let Some(max) = self.max_bytes.filter(|max| text.len() > *max) {
            return Err(format!(
                "the value takes {} bytes; a value of a key or filterable column takes at most {max}, what its index can hold",
                text.len()
            ));
        }
        match self.kind {
            ColumnType::Text => {
                if text.contains('\0') {
                    return Err("text cannot hold the NUL character".into());
                }
                copy_escape(text, out);
            }
            ColumnType::Int => {
                let v: i32 = text.parse().map_err(|_| {
                    format!(
                        "expected an integer from -2147483648 to 2147483647, found `{}`",
                        clip(text)
                    )
                })?;
                let _ = write!(Bytes(out), "{v}");
            }
            ColumnType::Bigint => {
                let v: i64 = text
                    .parse()
                    .map_err(|_| format!("expected a 64-bit integer, found `{}`", clip(text)))?;
                let _ = write!(Bytes(out), "{v}");
            }
            ColumnType::Float | ColumnType::Numeric if self.comma => {
                let error = || {
                    format!(
                        "expected a number with a decimal comma, such as 1234,5, found `{}`",
                        clip(text)
                    )
                };
                if text.contains('.') {
                    return Err(error());
                }
                self.encode_number(&text.replacen(',', ".", 1), out)
                    .map_err(|_| error())?;
            }
            ColumnType::Float | ColumnType::Numeric => self.encode_number(text, out)?,
            ColumnType::Bool => {
                let read = match &self.words {
                    None => match text.to_ascii_lowercase().as_str() {
                        "true" | "t" | "1" | "yes" => Some(true),
                        "false" | "f" | "0" | "no" => Some(false),
                        _ => None,
                    },
                    Some((yes, no)) => {
                        if yes.iter().any(|w| w.eq_ignore_ascii_case(text)) {
                            Some(true)
                        } else if no.iter().any(|w| w.eq_ignore_ascii_case(text)) {
                            Some(false)
                        } else {
                            None
                        }
                    }
                };
                match read {
                    Some(true) => out.push(b't'),
                    Some(false) => out.push(b'f'),
                    None => {
                        let expected = match &self.words {
                            Some((yes, no)) => word_list(yes, no),
                            None => "true or false".into(),
                        };
                        return Err(format!("expected {expected}, found `{}`", clip(text)));
                    }
                }
            }
            ColumnType::Date => match &self.time {
                Time::Pattern {
                    items, expected, ..
                } => {
                    let date = parse(items, text)
                        .and_then(|p| p.to_naive_date().ok())
                        .ok_or_else(|| {
                            format!("expected a date {expected}, found `{}`", clip(text))
                        })?;
                    let _ = write!(Bytes(out), "{}", date.format("%Y-%m-%d"));
                }
                _ => {
                    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
                        format!("expected a date such as 2024-01-31, found `{}`", clip(text))
                    })?;
                    out.extend_from_slice(text.as_bytes());
                }
            },
            ColumnType::Timestamptz => self.encode_timestamp(text, out)?,
            ColumnType::Uuid => {
                uuid::Uuid::try_parse(text)
                    .map_err(|_| format!("expected a UUID, found `{}`", clip(text)))?;
                out.extend_from_slice(text.as_bytes());
            }
            ColumnType::Jsonb => {
                if serde_json::from_str::<serde::de::IgnoredAny>(text).is_err() {
                    return Err(format!("expected JSON, found `{}`", clip(text)));
                }
                if text.contains("\\u0000") {
                    return Err("jsonb cannot hold the character \\u0000".into());
                }
                copy_escape(text, out);
            }
        }
        Ok(())
    }

    /// A float or numeric written with a decimal point.
    fn encode_number(&self, text: &str, out: &mut Vec<u8>) -> Result<(), String> {
        if self.kind == ColumnType::Numeric {
            if !is_decimal(text) {
                return Err(format!("expected a decimal number, found `{}`", clip(text)));
            }
            out.extend_from_slice(text.as_bytes());
            return Ok(());
        }
        let v: f64 = text
            .parse()
            .map_err(|_| format!("expected a number, found `{}`", clip(text)))?;
        if !v.is_finite() {
            return Err(format!("`{}` is not a finite number", clip(text)));
        }
        out.extend_from_slice(text.trim().as_bytes());
        Ok(())
    }

    fn encode_timestamp(&self, text: &str, out: &mut Vec<u8>) -> Result<(), String> {
        let at = match &self.time {
            Time::Iso => {
                DateTime::parse_from_rfc3339(text).map_err(|_| {
                    format!(
                        "expected an RFC 3339 timestamp such as 2024-01-31T12:00:00Z, found `{}`",
                        clip(text)
                    )
                })?;
                out.extend_from_slice(text.as_bytes());
                return Ok(());
            }
            Time::EpochSeconds => epoch_seconds(text).ok_or_else(|| {
                format!(
                    "expected seconds since 1970-01-01 UTC, such as 1706708730 or 1706708730.25, found `{}`",
                    clip(text)
                )
            })?,
            Time::EpochMillis => text
                .parse::<i64>()
                .ok()
                .and_then(DateTime::from_timestamp_millis)
                .ok_or_else(|| {
                    format!(
                        "expected whole milliseconds since 1970-01-01 UTC, such as 1706708730000, found `{}`",
                        clip(text)
                    )
                })?,
            Time::Pattern {
                items,
                expected,
                offset,
                zone,
            } => {
                let error = || format!("expected a timestamp {expected}, found `{}`", clip(text));
                let parsed = parse(items, text).ok_or_else(error)?;
                if *offset {
                    let at = parsed.to_datetime().map_err(|_| error())?;
                    let _ = write!(Bytes(out), "{}", at.to_rfc3339_opts(SecondsFormat::AutoSi, false));
                } else {
                    // Postgres reads the zone, named or fixed, for this very
                    // moment, daylight saving time included.
                    let at = parsed
                        .to_naive_datetime_with_offset(0)
                        .map_err(|_| error())?;
                    let _ = write!(Bytes(out), "{} {zone}", at.format("%Y-%m-%d %H:%M:%S%.f"));
                }
                return Ok(());
            }
        };
        let _ = write!(
            Bytes(out),
            "{}",
            at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
        );
        Ok(())
    }
}

fn parse(items: &[Item<'static>], text: &str) -> Option<Parsed> {
    let mut parsed = Parsed::new();
    chrono::format::parse(&mut parsed, text.trim(), items.iter())
        .ok()
        .map(|()| parsed)
}

/// Seconds since the epoch, with up to nine decimals.
fn epoch_seconds(text: &str) -> Option<DateTime<chrono::Utc>> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut secs: i64 = whole.parse().ok()?;
    let mut nanos: u32 = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<9}").parse().ok()?
    };
    if whole.starts_with('-') && nanos > 0 {
        secs -= 1;
        nanos = 1_000_000_000 - nanos;
    }
    DateTime::from_timestamp(secs, nanos)
}

fn word_list(yes: &[String], no: &[String]) -> String {
    let quoted = |w: &[String]| {
        w.iter()
            .map(|w| format!("`{w}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!("one of {} (true) or {} (false)", quoted(yes), quoted(no))
}

/// `fmt::Write` into a byte buffer.
struct Bytes<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}
