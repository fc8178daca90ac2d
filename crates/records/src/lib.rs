//! Streaming parsing and validation of batches (NDJSON, or CSV in the
//! dataset's dialect), producing rows in Postgres `COPY ... FROM STDIN` text
//! format. A byte-order mark and CRLF line ends are accepted in both.
//!
//! A [`Decoder`] is fed the batch in chunks of any size and never holds more
//! than one record beyond the chunk it is given, so memory stays bounded
//! whatever the batch's size. Every invalid record is reported with its line,
//! the column at fault and the reason.

use pipeline_dataset::{Column, Dataset, Format};

mod copy;
mod csv;
mod json;
mod value;

pub use csv::RecordEnds;
use csv::*;
use json::*;
use value::Codec;

/// The UTF-8 byte-order mark some exports begin with.
pub const BOM: &[u8] = b"\xEF\xBB\xBF";

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
    /// How each column's values are read.
    codecs: Vec<Codec>,
    /// Bytes of a record not yet complete.
    pending: Vec<u8>,
    /// Line the next record starts on.
    line: u64,
    /// Line breaks inside the pending record (quoted CSV fields).
    inner_lines: u64,
    /// The pending record went over the size limit; its bytes are dropped.
    too_long: bool,
    records: u64,
    invalid: u64,
    /// The line of the last error, so that a record is counted invalid once.
    invalid_line: Option<u64>,
    errors: Vec<RecordError>,
    csv: Option<Csv>,
    /// When loading a chunk of a batch: rows start with the chunk's number
    /// and the record's line within the chunk, to order them later.
    chunk: Option<u32>,
    /// One row's encoded fields, reused from record to record.
    row: Vec<Option<Vec<u8>>>,
    /// Each column's encoded `default`, for records that leave it out.
    defaults: Vec<Option<Vec<u8>>>,
}

/// A column's `default`, encoded as its values are (it is written in the
/// API's form, whatever the column's `format`); `None` without one, or when
/// it does not read (the spec's checks refuse such a default).
fn encoded_default(column: &Column) -> Option<Vec<u8>> {
    let default = column.default.as_ref()?.to_string();
    let api_form = Column {
        name: column.name.clone(),
        kind: column.kind,
        ..Column::default()
    };
    let mut out = Vec::new();
    Codec::new(&api_form).encode_text(&default, &mut out).ok()?;
    Some(out)
}

impl<'d> Decoder<'d> {
    pub fn new(dataset: &'d Dataset) -> Decoder<'d> {
        let csv = (dataset.format == Format::Csv).then(|| Csv::new(dataset));
        Decoder {
            dataset,
            codecs: dataset
                .columns
                .iter()
                .map(|c| Codec::new(c).indexed(dataset.indexed_value_limit(&c.name)))
                .collect(),
            pending: Vec::new(),
            line: 1,
            inner_lines: 0,
            too_long: false,
            records: 0,
            invalid: 0,
            invalid_line: None,
            errors: Vec::new(),
            csv,
            row: vec![None; dataset.columns.len()],
            defaults: dataset.columns.iter().map(encoded_default).collect(),
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
        // A record counts once, however many of its values are wrong.
        if self.invalid_line != Some(line) {
            self.invalid += 1;
            self.invalid_line = Some(line);
        }
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

    /// The line the next record starts on.
    pub fn line(&self) -> u64 {
        self.line
    }

    /// Valid records found so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Decodes the complete records in `chunk` (with what earlier chunks left
    /// over), appending valid rows to `out` in COPY text format.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let mut start = 0; // where the current record's bytes begin in `chunk`
        if let Some(mut ends_at) = self.csv.as_ref().map(|c| c.ends_at) {
            ends_at.scan(chunk, |pos, ends_record| {
                if ends_record {
                    self.complete(&chunk[start..pos], out);
                    start = pos + 1;
                } else {
                    // A line break inside a quoted field: the record goes on.
                    self.inner_lines += 1;
                }
            });
            if let Some(csv) = self.csv.as_mut() {
                csv.ends_at = ends_at;
            }
        } else {
            for pos in memchr::memchr_iter(b'\n', chunk) {
                self.complete(&chunk[start..pos], out);
                start = pos + 1;
            }
        }
        let mut pending = std::mem::take(&mut self.pending);
        self.append(&mut pending, &chunk[start..]);
        self.pending = pending;
    }

    /// A record ends with `tail`, after what is pending.
    fn complete(&mut self, tail: &[u8], out: &mut Vec<u8>) {
        if self.pending.is_empty() && !self.too_long {
            self.record(tail, out, false);
        } else {
            let mut record = std::mem::take(&mut self.pending);
            self.append(&mut record, tail);
            self.record(&record, out, false);
            record.clear();
            self.pending = record;
        }
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
        if self.csv.as_ref().is_some_and(|c| c.ends_at.in_quotes()) {
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
        // A chunk may hold no record (a CSV chunk of the header alone); the
        // batch it belongs to is not empty.
        if self.records == 0 && self.invalid == 0 && self.chunk.is_none() {
            let line = self.line;
            match &self.csv {
                Some(Csv {
                    header: None,
                    has_header: true,
                    ..
                }) => self.error(
                    1,
                    None,
                    "the batch is empty: a CSV batch starts with a header line",
                ),
                Some(Csv {
                    has_header: true, ..
                }) => self.error(line, None, "the batch holds a header but no records"),
                _ => self.error(1, None, "the batch is empty"),
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
        // A byte-order mark opens the batch, not a chunk after the first.
        let bytes = match line == 1 && self.chunk.unwrap_or(0) == 0 {
            true => bytes.strip_prefix(BOM).unwrap_or(bytes),
            false => bytes,
        };
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
            match self.codecs[index].encode_json(value, &mut slot) {
                Ok(()) => self.row[index] = Some(slot),
                Err(reason) => self.error(line, Some(key), reason),
            }
        }
        for (i, column) in dataset.columns.iter().enumerate() {
            if !seen[i] {
                self.row[i] = self.defaults[i].clone();
                if !column.nullable && self.row[i].is_none() {
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
                    match csv.column_of(dataset, &name) {
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
                    if !seen[i] && !column.nullable && self.defaults[i].is_none() {
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
                    let expected = match csv.has_header {
                        true => format!("the header has {}", header.len()),
                        false => format!("the dataset has {} columns", header.len()),
                    };
                    self.error(
                        line,
                        None,
                        format!("{} fields, but {expected}", csv.ends.len()),
                    );
                } else {
                    // Columns the header leaves out take their defaults.
                    self.row.clone_from(&self.defaults);
                    for (i, index) in header.iter().enumerate() {
                        let Some(index) = *index else { continue };
                        let column = &dataset.columns[index];
                        let value = field(&csv, i);
                        if csv.is_null(value) {
                            self.row[index] = None;
                            if !column.nullable {
                                let reason = match value.is_empty() {
                                    true => "empty value in a column that is not nullable".into(),
                                    false => format!(
                                        "`{}` stands for null, in a column that is not nullable",
                                        String::from_utf8_lossy(value)
                                    ),
                                };
                                self.error(line, Some(&column.name), reason);
                            }
                            continue;
                        }
                        // The whole record is valid UTF-8, and fields split on ASCII bytes.
                        let value = std::str::from_utf8(value).unwrap_or_default();
                        let mut slot = self.row[index].take().unwrap_or_default();
                        slot.clear();
                        match self.codecs[index].encode_text(value, &mut slot) {
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

#[cfg(test)]
mod tests;
