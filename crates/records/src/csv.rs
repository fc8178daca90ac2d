//! CSV records: where records end, one record split into fields, and the
//! header's mapping onto the dataset's columns, in the dataset's dialect.

use pipeline_dataset::{CsvOptions, Dataset, HeaderMatch, normalize_header};

pub(super) struct Csv {
    pub(super) reader: csv_core::Reader,
    pub(super) ends_at: RecordEnds,
    /// For each field, the dataset column it fills; `None` until the header is read.
    pub(super) header: Option<Vec<Option<usize>>>,
    /// Whether the first line is a header (else fields come in column order).
    pub(super) has_header: bool,
    pub(super) header_match: HeaderMatch,
    pub(super) nulls: Vec<Vec<u8>>,
    pub(super) field: Vec<u8>,
    pub(super) ends: Vec<usize>,
}

impl Csv {
    pub(super) fn new(dataset: &Dataset) -> Csv {
        let options = dataset.csv();
        let header = (!options.header).then(|| (0..dataset.columns.len()).map(Some).collect());
        Csv {
            reader: csv_core::ReaderBuilder::new()
                .delimiter(options.delimiter_byte())
                .quote(options.quote_byte())
                .escape(options.escape_byte())
                .build(),
            ends_at: RecordEnds::new(&options),
            header,
            has_header: options.header,
            header_match: options.header_match,
            nulls: options
                .null_values
                .iter()
                .map(|n| n.as_bytes().to_vec())
                .collect(),
            field: vec![0; 4096],
            ends: Vec::new(),
        }
    }

    /// Whether a field stands for null.
    pub(super) fn is_null(&self, field: &[u8]) -> bool {
        self.nulls.iter().any(|n| n == field)
    }

    /// The column a header name names.
    pub(super) fn column_of(&self, dataset: &Dataset, name: &str) -> Option<usize> {
        match self.header_match {
            HeaderMatch::Exact => dataset.columns.iter().position(|c| c.name == name),
            HeaderMatch::Normalized => {
                let name = normalize_header(name);
                dataset
                    .columns
                    .iter()
                    .position(|c| normalize_header(&c.name) == name)
            }
        }
    }
}

/// Finds the line breaks that end CSV records: those outside quoted fields.
#[derive(Debug, Clone, Copy)]
pub struct RecordEnds {
    quote: u8,
    escape: Option<u8>,
    in_quotes: bool,
    /// The last byte was the escape character, inside quotes.
    escaped: bool,
}

impl RecordEnds {
    pub fn new(options: &CsvOptions) -> RecordEnds {
        RecordEnds {
            quote: options.quote_byte(),
            escape: options.escape_byte(),
            in_quotes: false,
            escaped: false,
        }
    }

    /// Whether a quoted field is open at the end of what was scanned.
    pub fn in_quotes(&self) -> bool {
        self.in_quotes
    }

    /// Calls `line_break(position, ends_record)` for each `\n` in `bytes`;
    /// the quoting state carries over from one call to the next.
    pub fn scan(&mut self, bytes: &[u8], mut line_break: impl FnMut(usize, bool)) {
        let quote = self.quote;
        match self.escape {
            None => {
                for pos in memchr::memchr2_iter(quote, b'\n', bytes) {
                    if bytes[pos] == quote {
                        self.in_quotes = !self.in_quotes;
                    } else {
                        line_break(pos, !self.in_quotes);
                    }
                }
            }
            Some(escape) => {
                for pos in memchr::memchr3_iter(quote, escape, b'\n', bytes) {
                    let b = bytes[pos];
                    if std::mem::take(&mut self.escaped) {
                        if b == b'\n' {
                            line_break(pos, false);
                        }
                    } else if b == escape && self.in_quotes {
                        self.escaped = true;
                    } else if b == quote {
                        self.in_quotes = !self.in_quotes;
                    } else if b == b'\n' {
                        line_break(pos, !self.in_quotes);
                    }
                }
            }
        }
    }
}

/// Field `i` of the record last split.
pub(super) fn field(csv: &Csv, i: usize) -> &[u8] {
    let start = if i == 0 { 0 } else { csv.ends[i - 1] };
    &csv.field[start..csv.ends[i]]
}

/// Splits one CSV record into `csv.field`, with the end of each field in `csv.ends`.
pub(super) fn split_csv(csv: &mut Csv, record: &[u8]) -> Result<(), String> {
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
