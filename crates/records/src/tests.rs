use super::copy::is_decimal;
use super::*;
use pipeline_dataset::ColumnType;
use pipeline_dataset::{Column, OnConflict};

fn dataset(format: Format) -> Dataset {
    let col = |name: &str, kind, nullable| Column {
        nullable,
        ..Column::new(name, kind)
    };
    Dataset {
        format,
        csv: None,
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

/// Decodes `body` for a dataset given as JSON, whole and one byte at a time,
/// and checks that both give the same.
fn decode_as(dataset: serde_json::Value, body: &[u8]) -> (String, Summary) {
    let ds: Dataset = serde_json::from_value(dataset).expect("dataset");
    assert_eq!(ds.problems(), vec![]);
    let run = |size: usize| {
        let mut decoder = Decoder::new(&ds);
        let mut out = Vec::new();
        for piece in body.chunks(size) {
            decoder.feed(piece, &mut out);
        }
        let summary = decoder.finish(&mut out);
        (String::from_utf8(out).unwrap_or_default(), summary)
    };
    let whole = run(body.len().max(1));
    assert_eq!(run(1), whole, "fed a byte at a time");
    whole
}

fn reasons(summary: &Summary) -> Vec<(u64, Option<&str>, &str)> {
    summary
        .errors
        .iter()
        .map(|e| (e.line, e.column.as_deref(), e.reason.as_str()))
        .collect()
}

#[test]
fn csv_dialects_read_semicolons_decimal_commas_na_nulls_and_a_bom_with_crlf() {
    let ds = serde_json::json!({
        "format": "csv",
        "csv": {"delimiter": ";", "null_values": ["", "NA"], "header_match": "normalized"},
        "columns": [
            {"name": "station_id", "type": "text"},
            {"name": "day", "type": "date", "format": "%d.%m.%Y"},
            {"name": "rain_mm", "type": "numeric", "decimal": "comma", "nullable": true},
            {"name": "temp", "type": "float", "decimal": "comma", "nullable": true},
        ],
        "primary_key": ["station_id", "day"],
        "on_conflict": "ignore",
    });
    let body = "\u{feff}Station ID;Day;Rain (mm);TEMP\r\nA1;01.01.2012;12,5;-3,25\r\n\"A;2\";29.02.2012;NA;\r\n";
    let (out, summary) = decode_as(ds.clone(), body.as_bytes());
    assert_eq!(reasons(&summary), vec![]);
    assert_eq!(
        out,
        "A1\t2012-01-01\t12.5\t-3.25\nA;2\t2012-02-29\t\\N\t\\N\n"
    );
    let bad = "station_id;day;rain_mm;temp\nA1;2012-01-01;1.5;x\n";
    let (out, summary) = decode_as(ds, bad.as_bytes());
    assert_eq!(out, "");
    assert_eq!(
        reasons(&summary),
        vec![
            (
                2,
                Some("day"),
                "expected a date written as `%d.%m.%Y`, such as 31.01.2024, found `2012-01-01`"
            ),
            (
                2,
                Some("rain_mm"),
                "expected a number with a decimal comma, such as 1234,5, found `1.5`"
            ),
            (
                2,
                Some("temp"),
                "expected a number with a decimal comma, such as 1234,5, found `x`"
            ),
        ]
    );
}

#[test]
fn csv_without_a_header_reads_fields_in_column_order_with_tabs_and_escapes() {
    let ds = serde_json::json!({
        "format": "csv",
        "csv": {"delimiter": "\t", "quote": "'", "escape": "\\", "header": false},
        "columns": [
            {"name": "id", "type": "int"},
            {"name": "note", "type": "text", "nullable": true},
            {"name": "ok", "type": "bool", "true_values": ["Y"], "false_values": ["N"]},
        ],
        "primary_key": ["id"],
        "on_conflict": "ignore",
    });
    let body = "1\t'it\\'s\na tab\there'\ty\n2\t\tN\n";
    let (out, summary) = decode_as(ds.clone(), body.as_bytes());
    assert_eq!(reasons(&summary), vec![]);
    assert_eq!(out, "1\tit's\\na tab\\there\tt\n2\t\\N\tf\n");
    let (_, summary) = decode_as(ds.clone(), b"3\tx\tyes\n4\tx\n");
    assert_eq!(
        reasons(&summary),
        vec![
            (
                1,
                Some("ok"),
                "expected one of `Y` (true) or `N` (false), found `yes`"
            ),
            (2, None, "2 fields, but the dataset has 3 columns"),
        ]
    );
    let (_, summary) = decode_as(ds, b"");
    assert_eq!(reasons(&summary), vec![(1, None, "the batch is empty")]);
}

#[test]
fn timestamps_read_epochs_and_patterns_in_a_time_zone() {
    let ds = serde_json::json!({
        "format": "ndjson",
        "columns": [
            {"name": "id", "type": "int"},
            {"name": "s", "type": "timestamptz", "format": "epoch_seconds", "nullable": true},
            {"name": "ms", "type": "timestamptz", "format": "epoch_millis", "nullable": true},
            {"name": "local", "type": "timestamptz", "format": "%d/%m/%Y %H:%M", "timezone": "Europe/Paris", "nullable": true},
            {"name": "off", "type": "timestamptz", "format": "%Y-%m-%d %H:%M:%S %z", "nullable": true},
            {"name": "day", "type": "date", "format": "%Y/%m/%d", "nullable": true},
            {"name": "ok", "type": "bool", "true_values": ["oui"], "nullable": true},
        ],
        "primary_key": ["id"],
        "on_conflict": "ignore",
    });
    let body = concat!(
        r#"{"id":1,"s":1325376000,"ms":"1325376000123","local":"01/07/2012 14:30","off":"2012-01-01 10:00:00 +0530","day":"2012/01/01","ok":"OUI"}"#,
        "\n",
        r#"{"id":2,"s":"-0.25","ms":-1,"ok":false}"#,
        "\n",
    );
    let (out, summary) = decode_as(ds.clone(), body.as_bytes());
    assert_eq!(reasons(&summary), vec![]);
    assert_eq!(
        out,
        "1\t2012-01-01T00:00:00Z\t2012-01-01T00:00:00.123Z\t2012-07-01 14:30:00 Europe/Paris\t2012-01-01T10:00:00+05:30\t2012-01-01\tt\n\
         2\t1969-12-31T23:59:59.750Z\t1969-12-31T23:59:59.999Z\t\\N\t\\N\t\\N\tf\n"
    );
    let body = concat!(
        r#"{"id":3,"s":"soon","ms":1.5,"local":"2012-07-01 14:30","day":"01/01/2012","ok":"non"}"#,
        "\n"
    );
    let (_, summary) = decode_as(ds, body.as_bytes());
    assert_eq!(
        reasons(&summary),
        vec![
            (
                1,
                Some("s"),
                "expected seconds since 1970-01-01 UTC, such as 1706708730 or 1706708730.25, found `soon`"
            ),
            (
                1,
                Some("ms"),
                "expected whole milliseconds since 1970-01-01 UTC, such as 1706708730000, found `1.5`"
            ),
            (
                1,
                Some("local"),
                "expected a timestamp written as `%d/%m/%Y %H:%M`, such as 31/01/2024 13:45, in Europe/Paris, found `2012-07-01 14:30`"
            ),
            (
                1,
                Some("day"),
                "expected a date written as `%Y/%m/%d`, such as 2024/01/31, found `01/01/2012`"
            ),
            (
                1,
                Some("ok"),
                "expected one of `oui` (true) or `false`, `f`, `0`, `no` (false), found `non`"
            ),
        ]
    );
}

/// A column with a default: a record that leaves it out (a JSON key, a CSV
/// header) gets the default, in the column's own encoding whatever its
/// `format`; an explicit null stays null.
#[test]
fn left_out_columns_take_their_defaults() {
    let mut ds = dataset(Format::Ndjson);
    ds.columns[7].default = Some(pipeline_dataset::DefaultValue::Text("2024-02-29".into()));
    ds.columns[7].format = Some("%d.%m.%Y".into());
    ds.columns[8].default = Some(pipeline_dataset::DefaultValue::Text("it's".into()));
    let decode = |ds: &Dataset, body: &str| {
        let mut decoder = Decoder::new(ds);
        let mut out = Vec::new();
        decoder.feed(body.as_bytes(), &mut out);
        let summary = decoder.finish(&mut out);
        assert!(summary.is_valid(), "{:?}", summary.errors);
        String::from_utf8(out).unwrap_or_default()
    };
    let ndjson = format!(
        "{{\"id\":\"{ID}\",\"at\":\"2024-01-31T12:00:00Z\",\"n\":1}}\n\
         {{\"id\":\"{ID}\",\"at\":\"2024-01-31T12:00:00Z\",\"n\":2,\"note\":null,\"day\":\"01.03.2024\"}}\n"
    );
    assert_eq!(
        decode(&ds, &ndjson),
        format!(
            "{ID}\t2024-01-31T12:00:00Z\t1\t\\N\t\\N\t\\N\t\\N\t2024-02-29\tit's\t\\N\n\
             {ID}\t2024-01-31T12:00:00Z\t2\t\\N\t\\N\t\\N\t\\N\t2024-03-01\t\\N\t\\N\n"
        )
    );
    ds.format = Format::Csv;
    let csv =
        format!("id,at,n,note\n{ID},2024-01-31T12:00:00Z,3,\n{ID},2024-01-31T12:00:00Z,4,x\n");
    assert_eq!(
        decode(&ds, &csv),
        format!(
            "{ID}\t2024-01-31T12:00:00Z\t3\t\\N\t\\N\t\\N\t\\N\t2024-02-29\t\\N\t\\N\n\
             {ID}\t2024-01-31T12:00:00Z\t4\t\\N\t\\N\t\\N\t\\N\t2024-02-29\tx\t\\N\n"
        )
    );
    // Without the default, a required column left out is an error.
    ds.columns[2].default = None;
    let mut decoder = Decoder::new(&ds);
    let mut out = Vec::new();
    decoder.feed(
        format!("id,at\n{ID},2024-01-31T12:00:00Z\n").as_bytes(),
        &mut out,
    );
    let summary = decoder.finish(&mut out);
    assert_eq!(
        summary.errors[0].reason,
        "the header lacks this column, which is not nullable"
    );
}

/// A value of a key or filterable column longer than its index can hold is
/// an invalid record with its line and column; before, it failed the whole
/// batch's load with Postgres' "index row size exceeds" error. The limit is
/// shared among the variable-length columns of one index: here the text
/// key and `kind`, 1,200 bytes each; `note`, in no index, has none.
#[test]
fn values_too_long_for_their_index_are_refused_with_line_and_column() {
    let dataset = serde_json::json!({
        "format": "ndjson",
        "columns": [
            {"name": "id", "type": "text"},
            {"name": "kind", "type": "text"},
            {"name": "note", "type": "text", "nullable": true}
        ],
        "primary_key": ["id"],
        "on_conflict": "ignore",
        "filterable": ["kind"]
    });
    let long = "k".repeat(1_201);
    let fits = "k".repeat(1_200);
    let body = format!(
        "{{\"id\":\"a\",\"kind\":\"{fits}\",\"note\":\"{}\"}}\n{{\"id\":\"b\",\"kind\":\"{long}\"}}\n{{\"id\":\"{long}\",\"kind\":\"c\"}}\n",
        "n".repeat(100_000)
    );
    let (_, summary) = decode_as(dataset, body.as_bytes());
    let why = "the value takes 1201 bytes; a value of a key or filterable column takes at most 1200, what its index can hold";
    assert_eq!(
        reasons(&summary),
        vec![(2, Some("kind"), why), (3, Some("id"), why)]
    );
    assert_eq!(summary.records, 1);
}
