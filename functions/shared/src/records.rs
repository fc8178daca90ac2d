//! Streaming parsing and validation of batches (NDJSON or CSV with a header),
//! producing rows in Postgres `COPY ... FROM STDIN` text format.
//!
//! A [`Decoder`] is fed the batch in chunks of any size and never holds more
//! than one record beyond the chunk it is given, so memory stays bounded
//! whatever the batch's size. Every invalid record is reported with its line,
//! the column at fault and the reason.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::dataset::{ColumnType, Dataset, Format};

/// Longest record accepted, in bytes.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// Most errors a [`Decoder`] keeps (as many as a rejected batch's answer
/// lists); it goes on counting past them.
pub use pipeline_contract::MAX_ERRORS;

/// A record that cannot be loaded: the contract's, as answers carry it.
pub use pipeline_contract::RecordError;

/// What a finished decode found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Summary {
    /// Valid records, written to the output.
    pub records: u64,
    /// Invalid records (errors beyond [`MAX_ERRORS`] are counted, not kept).
    pub invalid: u64,
    pub errors: Vec<RecordError>,
}

impl Summary {
    pub fn is_valid(&self) -> bool {
        self.invalid == 0
    }
}

/// Incremental decoder of one batch.
pub struct Decoder<'d> {
    dataset: &'d Dataset,
    /// Bytes of a record not yet complete.
    pending: Vec<u8>,
    /// Whether a CSV quoted field is open at the end of `pending`.
    in_quotes: bool,
    /// Line the next record starts on.
    line: u64,
    /// Line breaks inside the pending record (quoted CSV fields).
    inner_lines: u64,
    /// The pending record went over the size limit; its bytes are dropped.
    too_long: bool,
    records: u64,
    invalid: u64,
    errors: Vec<RecordError>,
    csv: Option<Csv>,
    /// When loading a chunk of a batch: rows start with the chunk's number
    /// and the record's line within the chunk, to order them later.
    chunk: Option<u32>,
    /// One row's encoded fields, reused from record to record.
    row: Vec<Option<Vec<u8>>>,
}

struct Csv {
    reader: csv_core::Reader,
    /// For each header field, the dataset column it fills; `None` until the header is read.
    header: Option<Vec<Option<usize>>>,
    field: Vec<u8>,
    ends: Vec<usize>,
}

impl<'d> Decoder<'d> {
    pub fn new(dataset: &'d Dataset) -> Decoder<'d> {
        let csv = (dataset.format == Format::Csv).then(|| Csv {
            reader: csv_core::Reader::new(),
            header: None,
            field: vec![0; 4096],
            ends: Vec::new(),
        });
        Decoder {
            dataset,
            pending: Vec::new(),
            in_quotes: false,
            line: 1,
            inner_lines: 0,
            too_long: false,
            records: 0,
            invalid: 0,
            errors: Vec::new(),
            csv,
            row: vec![None; dataset.columns.len()],
            chunk: None,
        }
    }

    /// Rows for a chunk's staging table: each starts with `chunk` and the
    /// record's line within the chunk.
    pub fn for_chunk(mut self, chunk: u32) -> Decoder<'d> {
        self.chunk = Some(chunk);
        self
    }

    fn error(&mut self, line: u64, column: Option<&str>, reason: impl Into<String>) {
        self.invalid += 1;
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(RecordError {
                line,
                column: column.map(str::to_string),
                reason: reason.into(),
            });
        }
    }

    /// Errors found so far.
    pub fn errors(&self) -> &[RecordError] {
        &self.errors
    }

    /// Invalid records found so far.
    pub fn invalid(&self) -> u64 {
        self.invalid
    }

    /// Valid records found so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Decodes the complete records in `chunk` (with what earlier chunks left
    /// over), appending valid rows to `out` in COPY text format.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let csv = self.csv.is_some();
        let mut start = 0; // where the current record's bytes begin in `chunk`
        let mut scan = 0; // where quote counting resumes
        while let Some(pos) = memchr::memchr(b'\n', &chunk[scan..]).map(|p| scan + p) {
            if csv {
                let quotes = memchr::memchr_iter(b'"', &chunk[scan..pos]).count();
                self.in_quotes ^= quotes % 2 == 1;
            }
            scan = pos + 1;
            if self.in_quotes {
                // A line break inside a quoted CSV field: the record goes on.
                self.inner_lines += 1;
                continue;
            }
            if self.pending.is_empty() && !self.too_long {
                self.record(&chunk[start..pos], out, false);
            } else {
                let mut record = std::mem::take(&mut self.pending);
                self.append(&mut record, &chunk[start..pos]);
                self.record(&record, out, false);
                record.clear();
                self.pending = record;
            }
            start = scan;
        }
        if csv {
            let quotes = memchr::memchr_iter(b'"', &chunk[scan..]).count();
            self.in_quotes ^= quotes % 2 == 1;
        }
        let mut pending = std::mem::take(&mut self.pending);
        self.append(&mut pending, &chunk[start..]);
        self.pending = pending;
    }

    /// Adds bytes to a pending record unless it is already too long to keep.
    fn append(&mut self, record: &mut Vec<u8>, bytes: &[u8]) {
        if self.too_long {
            return;
        }
        if record.len() + bytes.len() > MAX_RECORD_BYTES + 2 {
            self.too_long = true;
            record.clear();
        } else {
            record.extend_from_slice(bytes);
        }
    }

    /// Decodes what is left and returns the summary.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Summary {
        if self.in_quotes {
            let line = self.line;
            self.error(
                line,
                None,
                "a quoted field is not closed before the end of the batch",
            );
        } else if !self.pending.is_empty() || self.too_long {
            let record = std::mem::take(&mut self.pending);
            self.record(&record, out, true);
        }
        if self.records == 0 && self.invalid == 0 {
            let line = self.line;
            match &self.csv {
                Some(Csv { header: None, .. }) => self.error(
                    1,
                    None,
                    "the batch is empty: a CSV batch starts with a header line",
                ),
                Some(_) => self.error(line, None, "the batch holds a header but no records"),
                None => self.error(1, None, "the batch is empty"),
            }
        }
        Summary {
            records: self.records,
            invalid: self.invalid,
            errors: self.errors,
        }
    }

    /// One complete record, without its final `\n`.
    fn record(&mut self, bytes: &[u8], out: &mut Vec<u8>, last: bool) {
        let line = self.line;
        self.line += 1 + self.inner_lines;
        self.inner_lines = 0;
        if std::mem::take(&mut self.too_long) || bytes.len() > MAX_RECORD_BYTES + 1 {
            self.error(
                line,
                None,
                format!("the record is longer than {MAX_RECORD_BYTES} bytes"),
            );
            return;
        }
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        if bytes.is_empty() {
            if !last {
                self.error(line, None, "empty line: every line must hold a record");
            }
            return;
        }
        let text = match std::str::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                self.error(
                    line,
                    None,
                    format!("invalid UTF-8 at byte {} of the line", e.valid_up_to() + 1),
                );
                return;
            }
        };
        if self.csv.is_some() {
            self.csv_record(text, line, out);
        } else {
            self.json_record(text, line, out);
        }
    }

    fn json_record(&mut self, text: &str, line: u64, out: &mut Vec<u8>) {
        let fields = match parse_object(text) {
            Ok(f) => f,
            Err(e) => {
                self.error(line, None, format!("not a JSON object: {e}"));
                return;
            }
        };
        let dataset = self.dataset;
        let before = self.invalid;
        let mut seen = vec![false; dataset.columns.len()];
        for (key, raw) in &fields {
            let Some(index) = dataset.columns.iter().position(|c| c.name == *key) else {
                self.error(line, Some(key), "unknown column");
                continue;
            };
            if std::mem::replace(&mut seen[index], true) {
                self.error(line, Some(key), "the column appears twice");
                continue;
            }
            let column = &dataset.columns[index];
            let value = raw.get();
            if value == "null" {
                self.row[index] = None;
                if !column.nullable {
                    self.error(line, Some(key), "null in a column that is not nullable");
                }
                continue;
            }
            let mut slot = self.row[index].take().unwrap_or_default();
            slot.clear();
            match encode_json(column.kind, value, &mut slot) {
                Ok(()) => self.row[index] = Some(slot),
                Err(reason) => self.error(line, Some(key), reason),
            }
        }
        for (i, column) in dataset.columns.iter().enumerate() {
            if !seen[i] {
                self.row[i] = None;
                if !column.nullable {
                    self.error(line, Some(&column.name), "missing value");
                }
            }
        }
        if self.invalid == before {
            self.emit(line, out);
        }
    }

    fn emit(&mut self, line: u64, out: &mut Vec<u8>) {
        if let Some(chunk) = self.chunk {
            out.extend_from_slice(format!("{chunk}\t{line}\t").as_bytes());
        }
        for (i, value) in self.row.iter().enumerate() {
            if i > 0 {
                out.push(b'\t');
            }
            match value {
                Some(bytes) => out.extend_from_slice(bytes),
                None => out.extend_from_slice(b"\\N"),
            }
        }
        out.push(b'\n');
        self.records += 1;
    }

    fn csv_record(&mut self, text: &str, line: u64, out: &mut Vec<u8>) {
        let Some(mut csv) = self.csv.take() else {
            return;
        };
        if let Err(reason) = split_csv(&mut csv, text.as_bytes()) {
            self.error(line, None, reason);
            self.csv = Some(csv);
            return;
        }
        let dataset = self.dataset;
        match &csv.header {
            None => {
                let mut header = Vec::new();
                let mut seen = vec![false; dataset.columns.len()];
                for i in 0..csv.ends.len() {
                    let name = String::from_utf8_lossy(field(&csv, i)).trim().to_string();
                    match dataset.columns.iter().position(|c| c.name == name) {
                        Some(index) if seen[index] => {
                            self.error(line, Some(&name), "the column appears twice in the header");
                            header.push(None);
                        }
                        Some(index) => {
                            seen[index] = true;
                            header.push(Some(index));
                        }
                        None => {
                            self.error(line, Some(&name), "unknown column in the header");
                            header.push(None);
                        }
                    }
                }
                for (i, column) in dataset.columns.iter().enumerate() {
                    if !seen[i] && !column.nullable {
                        self.error(
                            line,
                            Some(&column.name),
                            "the header lacks this column, which is not nullable",
                        );
                    }
                }
                csv.header = Some(header);
            }
            Some(header) => {
                let before = self.invalid;
                if csv.ends.len() != header.len() {
                    self.error(
                        line,
                        None,
                        format!(
                            "{} fields, but the header has {}",
                            csv.ends.len(),
                            header.len()
                        ),
                    );
                } else {
                    self.row.iter_mut().for_each(|v| *v = None);
                    for (i, index) in header.iter().enumerate() {
                        let Some(index) = *index else { continue };
                        let column = &dataset.columns[index];
                        let value = field(&csv, i);
                        if value.is_empty() {
                            if !column.nullable {
                                self.error(
                                    line,
                                    Some(&column.name),
                                    "empty value in a column that is not nullable",
                                );
                            }
                            continue;
                        }
                        // The whole record is valid UTF-8, and fields split on ASCII bytes.
                        let value = std::str::from_utf8(value).unwrap_or_default();
                        let mut slot = Vec::new();
                        match encode_text(column.kind, value, &mut slot) {
                            Ok(()) => self.row[index] = Some(slot),
                            Err(reason) => self.error(line, Some(&column.name), reason),
                        }
                    }
                }
                if self.invalid == before {
                    self.emit(line, out);
                }
            }
        }
        self.csv = Some(csv);
    }
}

/// Field `i` of the record last split.
fn field(csv: &Csv, i: usize) -> &[u8] {
    let start = if i == 0 { 0 } else { csv.ends[i - 1] };
    &csv.field[start..csv.ends[i]]
}

/// Splits one CSV record into `csv.field`, with the end of each field in `csv.ends`.
fn split_csv(csv: &mut Csv, record: &[u8]) -> Result<(), String> {
    csv.ends.clear();
    csv.reader.reset();
    if csv.field.len() < record.len() + 1 {
        csv.field.resize(record.len() + 1, 0);
    }
    let mut input = record;
    let mut written_total = 0;
    loop {
        let (result, read, written) = csv
            .reader
            .read_field(input, &mut csv.field[written_total..]);
        input = &input[read..];
        written_total += written;
        match result {
            csv_core::ReadFieldResult::InputEmpty => {
                if input.is_empty() {
                    // Signal the end of the record.
                    let (result, _, written) =
                        csv.reader.read_field(&[], &mut csv.field[written_total..]);
                    written_total += written;
                    if let csv_core::ReadFieldResult::Field { .. } = result {
                        csv.ends.push(written_total);
                    }
                    return Ok(());
                }
            }
            csv_core::ReadFieldResult::OutputFull => return Err("a field is too long".into()),
            csv_core::ReadFieldResult::Field { record_end } => {
                csv.ends.push(written_total);
                if record_end {
                    return Ok(());
                }
            }
            csv_core::ReadFieldResult::End => return Ok(()),
        }
    }
}

/// Reads a JSON object's members without building values: keys unescaped,
/// values kept as raw JSON text.
fn parse_object(text: &str) -> Result<Vec<(Cow<'_, str>, &RawValue)>, serde_json::Error> {
    struct Members;
    impl<'de> Visitor<'de> for Members {
        type Value = Vec<(Cow<'de, str>, &'de RawValue)>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(key) = map.next_key::<CowStr<'de>>()? {
                out.push((key.0, map.next_value()?));
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let members = (&mut de).deserialize_map(Members)?;
    de.end()?;
    Ok(members)
}

/// A string borrowed from the input when it has no escapes.
struct CowStr<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

/// Appends `text` escaped for the COPY text format.
fn copy_escape(text: &str, out: &mut Vec<u8>) {
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

/// What a raw JSON value is, for error messages.
fn json_kind(raw: &str) -> Option<&'static str> {
    Some(match raw.as_bytes().first()? {
        b'"' => "a string",
        b't' | b'f' => "a boolean",
        b'[' => "a list",
        b'{' => "an object",
        b'n' => "null",
        _ => "a number",
    })
}

fn json_string(raw: &str) -> Result<Cow<'_, str>, String> {
    if !raw.starts_with('"') {
        return Err(format!(
            "expected a string, found {}",
            json_kind(raw).unwrap_or("nothing")
        ));
    }
    serde_json::from_str::<CowStr<'_>>(raw)
        .map(|s| s.0)
        .map_err(|e| format!("invalid string: {e}"))
}

/// Encodes a JSON value (raw text) of a column.
fn encode_json(kind: ColumnType, raw: &str, out: &mut Vec<u8>) -> Result<(), String> {
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
fn clip(text: &str) -> Cow<'_, str> {
    if text.chars().count() <= 40 {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(format!("{}...", text.chars().take(40).collect::<String>()))
    }
}

fn is_decimal(text: &str) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{Column, OnConflict};

    fn dataset(format: Format) -> Dataset {
        let col = |name: &str, kind, nullable| Column {
            name: name.into(),
            kind,
            nullable,
            description: None,
        };
        Dataset {
            format,
            columns: vec![
                col("id", ColumnType::Uuid, false),
                col("at", ColumnType::Timestamptz, false),
                col("n", ColumnType::Int, false),
                col("big", ColumnType::Bigint, true),
                col("x", ColumnType::Float, true),
                col("ok", ColumnType::Bool, true),
                col("amount", ColumnType::Numeric, true),
                col("day", ColumnType::Date, true),
                col("note", ColumnType::Text, true),
                col("doc", ColumnType::Jsonb, true),
            ],
            primary_key: vec!["id".into()],
            on_conflict: OnConflict::Ignore,
            filterable: vec![],
            description: None,
            allow_destructive_changes: false,
        }
    }

    fn decode(format: Format, body: &[u8], chunk: usize) -> (String, Summary) {
        let ds = dataset(format);
        let mut decoder = Decoder::new(&ds);
        let mut out = Vec::new();
        for piece in body.chunks(chunk.max(1)) {
            decoder.feed(piece, &mut out);
        }
        let summary = decoder.finish(&mut out);
        (String::from_utf8(out).unwrap_or_default(), summary)
    }

    const ID: &str = "0190a0e4-8a3c-7d3e-9c1a-2b3c4d5e6f70";

    #[test]
    fn ndjson_rows_become_copy_lines() {
        let body = format!(
            "{{\"id\":\"{ID}\",\"at\":\"2024-01-31T12:00:00Z\",\"n\":7,\"big\":9007199254740993,\"x\":1.5,\"ok\":true,\
             \"amount\":\"12.345\",\"day\":\"2024-02-29\",\"note\":\"tab\\there\\nnew \\\\ line\",\"doc\":{{\"a\":[1,2]}}}}\n\
             {{\"id\":\"{ID}\",\"at\":\"2024-01-31T12:00:00+02:00\",\"n\":-1,\"note\":null}}\n"
        );
        let expected = format!(
            "{ID}\t2024-01-31T12:00:00Z\t7\t9007199254740993\t1.5\tt\t12.345\t2024-02-29\ttab\\there\\nnew \\\\ line\t{{\"a\":[1,2]}}\n\
             {ID}\t2024-01-31T12:00:00+02:00\t-1\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\n"
        );
        for chunk in [1, 3, 64, 100_000] {
            let (out, summary) = decode(Format::Ndjson, body.as_bytes(), chunk);
            assert_eq!(out, expected, "chunk {chunk}");
            assert_eq!(summary.records, 2);
            assert!(summary.is_valid());
        }
    }

    #[test]
    fn ndjson_errors_name_line_column_and_reason() {
        let body = format!(
            "{{\"id\":\"{ID}\",\"at\":\"2024-01-31T12:00:00Z\",\"n\":\"7\"}}\n\
             {{\"id\":\"nope\",\"at\":\"yesterday\",\"n\":1,\"colour\":1}}\n\
             \n\
             [1,2]\n\
             {{\"id\":\"{ID}\",\"n\":3000000000}}\n\
             {{\"id\":\"{ID}\",\"at\":\"2024-01-31T12:00:00Z\",\"n\":null,\"ok\":\"yes\",\"day\":\"2024-02-30\"}}\n"
        );
        let (out, summary) = decode(Format::Ndjson, body.as_bytes(), 7);
        assert_eq!(out, "");
        let errors: Vec<String> = summary.errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            errors,
            vec![
                "line 1, column `n`: expected a number, found a string",
                "line 2, column `id`: expected a UUID, found `nope`",
                "line 2, column `at`: expected an RFC 3339 timestamp such as 2024-01-31T12:00:00Z, found `yesterday`",
                "line 2, column `colour`: unknown column",
                "line 3: empty line: every line must hold a record",
                "line 4: not a JSON object: invalid type: sequence, expected an object at line 1 column 0",
                "line 5, column `n`: expected an integer from -2147483648 to 2147483647, found `3000000000`",
                "line 5, column `at`: missing value",
                "line 6, column `n`: null in a column that is not nullable",
                "line 6, column `ok`: expected true or false",
                "line 6, column `day`: expected a date such as 2024-01-31, found `2024-02-30`",
            ]
        );
        assert_eq!(summary.records, 0);
    }

    #[test]
    fn bad_utf8_long_lines_and_empty_bodies() {
        let (_, summary) = decode(Format::Ndjson, b"{\"note\":\"\xff\"}\n", 4);
        assert_eq!(
            summary.errors[0].to_string(),
            "line 1: invalid UTF-8 at byte 10 of the line"
        );
        let long = format!(
            "{{\"note\":\"{}\"}}\n{{\"id\":1}}\n",
            "a".repeat(MAX_RECORD_BYTES + 10)
        );
        let (_, summary) = decode(Format::Ndjson, long.as_bytes(), 4096);
        assert_eq!(
            summary.errors[0].to_string(),
            "line 1: the record is longer than 1048576 bytes"
        );
        assert_eq!(summary.errors[1].line, 2);
        let (_, summary) = decode(Format::Ndjson, b"", 1);
        assert_eq!(summary.errors[0].to_string(), "line 1: the batch is empty");
        let (_, summary) = decode(Format::Csv, b"", 1);
        assert_eq!(
            summary.errors[0].to_string(),
            "line 1: the batch is empty: a CSV batch starts with a header line"
        );
    }

    #[test]
    fn csv_with_quotes_commas_and_line_breaks() {
        let body = format!(
            "n,id,at,note\r\n7,{ID},2024-01-31T12:00:00Z,\"a, \"\"quoted\"\"\nsecond line\"\r\n8,{ID},2024-01-31T12:00:00Z,\n"
        );
        let expected = format!(
            "{ID}\t2024-01-31T12:00:00Z\t7\t\\N\t\\N\t\\N\t\\N\t\\N\ta, \"quoted\"\\nsecond line\t\\N\n\
             {ID}\t2024-01-31T12:00:00Z\t8\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\n"
        );
        for chunk in [1, 5, 1000] {
            let (out, summary) = decode(Format::Csv, body.as_bytes(), chunk);
            assert_eq!(out, expected, "chunk {chunk}");
            assert_eq!(summary.records, 2);
        }
    }

    #[test]
    fn csv_errors_keep_counting_lines_across_quoted_breaks() {
        let body = format!(
            "n,id,at,note,colour\n1,{ID},2024-01-31T12:00:00Z,\"two\nlines\",x\n2,{ID}\nabc,{ID},2024-01-31T12:00:00Z,,\n"
        );
        let (_, summary) = decode(Format::Csv, body.as_bytes(), 3);
        let errors: Vec<String> = summary.errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            errors,
            vec![
                "line 1, column `colour`: unknown column in the header",
                "line 4: 2 fields, but the header has 5",
                "line 5, column `n`: expected an integer from -2147483648 to 2147483647, found `abc`",
            ]
        );
        let (_, summary) = decode(Format::Csv, b"n,id\n1,\"open\n", 2);
        assert_eq!(
            summary.errors[0].to_string(),
            "line 1, column `at`: the header lacks this column, which is not nullable"
        );
        assert_eq!(
            summary.errors[1].to_string(),
            "line 2: a quoted field is not closed before the end of the batch"
        );
    }

    #[test]
    fn decimals() {
        for ok in ["1", "-1.5", "+.5", "1.", "1e10", "2.5E-3"] {
            assert!(is_decimal(ok), "{ok}");
        }
        for bad in ["", ".", "e5", "1e", "1.2.3", "NaN", "0x10"] {
            assert!(!is_decimal(bad), "{bad}");
        }
    }
}
