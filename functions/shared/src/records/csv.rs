//! CSV records: one record split into fields, with the header's mapping
//! onto the dataset's columns.

pub(super) struct Csv {
    pub(super) reader: csv_core::Reader,
    /// For each header field, the dataset column it fills; `None` until the header is read.
    pub(super) header: Option<Vec<Option<usize>>>,
    pub(super) field: Vec<u8>,
    pub(super) ends: Vec<usize>,
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
