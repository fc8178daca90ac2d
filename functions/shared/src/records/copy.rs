//! Values encoded as fields of Postgres `COPY ... FROM STDIN` text format,
//! checked against their column's type on the way.

use std::borrow::Cow;

use super::json::{json_kind, json_string};
use crate::dataset::ColumnType;

/// Appends `text` escaped for the COPY text format.
pub(super) fn copy_escape(text: &str, out: &mut Vec<u8>) {
    let bytes = text.as_bytes();
    if !bytes
        .iter()
        .any(|b| matches!(b, b'\\' | b'\t' | b'\n' | b'\r'))
    {
        out.extend_from_slice(bytes);
        return;
    }
    for &b in bytes {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

/// Encodes a JSON value (raw text) of a column.
pub(super) fn encode_json(kind: ColumnType, raw: &str, out: &mut Vec<u8>) -> Result<(), String> {
    match kind {
        ColumnType::Jsonb => {
            if raw.contains("\\u0000") {
                return Err("jsonb cannot hold the character \\u0000".into());
            }
            copy_escape(raw, out);
            Ok(())
        }
        ColumnType::Bool => match raw {
            "true" => {
                out.push(b't');
                Ok(())
            }
            "false" => {
                out.push(b'f');
                Ok(())
            }
            _ => Err("expected true or false".into()),
        },
        ColumnType::Int | ColumnType::Bigint | ColumnType::Float => {
            if let Some(found) = json_kind(raw).filter(|k| *k != "a number") {
                return Err(format!("expected a number, found {found}"));
            }
            encode_text(kind, raw, out)
        }
        ColumnType::Numeric => {
            // A JSON number, or a string holding one (to keep its precision).
            let text = if raw.starts_with('"') {
                json_string(raw)?
            } else {
                Cow::Borrowed(raw)
            };
            encode_text(kind, &text, out)
        }
        ColumnType::Text | ColumnType::Date | ColumnType::Timestamptz | ColumnType::Uuid => {
            let text = json_string(raw)?;
            encode_text(kind, &text, out)
        }
    }
}

/// Checks a value given as text (a CSV field, or a JSON string's content) and
/// appends its COPY form.
pub fn encode_text(kind: ColumnType, text: &str, out: &mut Vec<u8>) -> Result<(), String> {
    match kind {
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
            out.extend_from_slice(v.to_string().as_bytes());
        }
        ColumnType::Bigint => {
            let v: i64 = text
                .parse()
                .map_err(|_| format!("expected a 64-bit integer, found `{}`", clip(text)))?;
            out.extend_from_slice(v.to_string().as_bytes());
        }
        ColumnType::Float => {
            let v: f64 = text
                .parse()
                .map_err(|_| format!("expected a number, found `{}`", clip(text)))?;
            if !v.is_finite() {
                return Err(format!("`{}` is not a finite number", clip(text)));
            }
            out.extend_from_slice(text.trim().as_bytes());
        }
        ColumnType::Bool => match text.to_ascii_lowercase().as_str() {
            "true" | "t" | "1" | "yes" => out.push(b't'),
            "false" | "f" | "0" | "no" => out.push(b'f'),
            _ => return Err(format!("expected true or false, found `{}`", clip(text))),
        },
        ColumnType::Numeric => {
            if !is_decimal(text) {
                return Err(format!("expected a decimal number, found `{}`", clip(text)));
            }
            out.extend_from_slice(text.as_bytes());
        }
        ColumnType::Date => {
            chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
                format!("expected a date such as 2024-01-31, found `{}`", clip(text))
            })?;
            out.extend_from_slice(text.as_bytes());
        }
        ColumnType::Timestamptz => {
            chrono::DateTime::parse_from_rfc3339(text).map_err(|_| {
                format!(
                    "expected an RFC 3339 timestamp such as 2024-01-31T12:00:00Z, found `{}`",
                    clip(text)
                )
            })?;
            out.extend_from_slice(text.as_bytes());
        }
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

/// The start of a value, for error messages.
pub(super) fn clip(text: &str) -> Cow<'_, str> {
    if text.chars().count() <= 40 {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(format!("{}...", text.chars().take(40).collect::<String>()))
    }
}

pub(super) fn is_decimal(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    let int = digits(&mut i);
    let mut frac = 0;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        frac = digits(&mut i);
    }
    if int + frac == 0 {
        return false;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}
