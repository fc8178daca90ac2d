//! Real-world files in the dialects datasets declare (a BOM and CRLF, `;`
//! and decimal commas, `NA`, headers in other cases, `2012/01/01` dates,
//! epoch and local timestamps, boolean words, headerless TSV), loaded
//! inline, through uploads and in chunks, and read back value by value.

use super::*;

const DATASETS: &str = r#"
datasets:
  weather:
    format: csv
    csv: {delimiter: ";", null_values: ["", NA], header_match: normalized}
    columns:
      - {name: station, type: text}
      - {name: date, type: date, format: "%d.%m.%Y"}
      - {name: rain_mm, type: numeric, decimal: comma, nullable: true}
      - {name: max_temp, type: float, decimal: comma, nullable: true}
      - {name: sunny, type: bool, true_values: [J], false_values: [N], nullable: true}
    primary_key: [station, date]
    on_conflict: ignore
  trips:
    format: csv
    csv: {header_match: normalized}
    columns:
      - {name: trip_id, type: bigint}
      - {name: start_day, type: date, format: "%Y/%m/%d"}
      - {name: started_at, type: timestamptz, format: epoch_seconds}
      - {name: ended_at, type: timestamptz, format: "%m/%d/%Y %H:%M", timezone: America/New_York}
      - {name: member, type: bool, true_values: [Y], false_values: [N]}
    primary_key: [trip_id]
    on_conflict: ignore
  taps:
    format: ndjson
    columns:
      - {name: tap_id, type: int}
      - {name: at, type: timestamptz, format: epoch_millis}
      - {name: day, type: date, format: "%d/%m/%Y"}
      - {name: price, type: numeric, decimal: comma}
    primary_key: [tap_id]
    on_conflict: ignore
  notes:
    format: csv
    csv: {delimiter: "\t", quote: "'", escape: "\\", header: false}
    columns:
      - {name: id, type: int}
      - {name: note, type: text}
      - {name: day, type: date, nullable: true}
    primary_key: [id]
    on_conflict: ignore
"#;

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/dialects")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What each fixture holds, as the API reads it back (in key order).
fn expected(dataset: &str) -> Value {
    match dataset {
        "weather" => json!([
            {"station": "DE-Köln", "date": "2012-01-01", "rain_mm": "12.5", "max_temp": -3.25, "sunny": false},
            {"station": "DE;Bonn", "date": "2012-02-29", "rain_mm": null, "max_temp": null, "sunny": true},
            {"station": "FR-Lyon", "date": "2012-12-31", "rain_mm": "0", "max_temp": 17.5, "sunny": null},
        ]),
        // New York local times: EST in winter, EDT in summer; 01:30 on the
        // night clocks go back is read as the later, standard time.
        "trips" => json!([
            {"trip_id": 1, "start_day": "2012-01-01", "started_at": "2012-01-01T00:00:00+00:00", "ended_at": "2012-01-01T05:20:00+00:00", "member": true},
            {"trip_id": 2, "start_day": "2012-07-04", "started_at": "2012-07-04T00:00:00.5+00:00", "ended_at": "2012-07-04T12:05:00+00:00", "member": false},
            {"trip_id": 3, "start_day": "2012-11-04", "started_at": "2012-11-04T06:00:00+00:00", "ended_at": "2012-11-04T06:30:00+00:00", "member": false},
        ]),
        "taps" => json!([
            {"tap_id": 1, "at": "2012-01-01T00:00:00.123+00:00", "day": "2012-01-01", "price": "2.50"},
            {"tap_id": 2, "at": "2012-07-04T00:00:00+00:00", "day": "2012-07-04", "price": "0.05"},
        ]),
        "notes" => json!([
            {"id": 1, "note": "it's", "day": "2012-01-01"},
            {"id": 2, "note": "two\nlines", "day": null},
        ]),
        other => panic!("no fixture for {other}"),
    }
}

async fn read_back(local: &Local, dataset: &str) -> Value {
    let (status, page) = local.get(&format!("/v1/datasets/{dataset}/records")).await;
    assert_eq!(status, 200, "{page}");
    page["records"].clone()
}

#[tokio::test]
async fn files_in_each_dialect_load_inline_and_read_back_value_by_value() {
    require!(Service::Postgres);
    let local = Local::start(DATASETS).await;
    for (dataset, file, media_type) in [
        ("weather", "weather.csv", "text/csv"),
        ("trips", "trips.csv", "text/csv"),
        ("taps", "taps.ndjson", "application/x-ndjson"),
        ("notes", "notes.tsv", "text/csv"),
    ] {
        let (status, accepted) = local
            .post(
                &format!("/v1/datasets/{dataset}/batches"),
                media_type,
                fixture(file),
            )
            .await;
        assert_eq!(status, 202, "{file}: {accepted}");
        let batch = local
            .settled(accepted["batch_id"].as_str().expect("id"))
            .await;
        assert_eq!(batch["status"], "loaded", "{file}: {batch}");
        assert_eq!(
            read_back(&local, dataset).await,
            expected(dataset),
            "{file}"
        );
    }

    // Values off their formats: each with its line, column and the format.
    let (status, answer) = local
        .post(
            "/v1/datasets/trips/batches",
            "text/csv",
            fixture("trips-bad.csv"),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        answer["errors"],
        json!([
            {"line": 2, "column": "start_day", "reason": "expected a date written as `%Y/%m/%d`, such as 2024/01/31, found `2012-01-01`"},
            {"line": 3, "column": "started_at", "reason": "expected seconds since 1970-01-01 UTC, such as 1706708730 or 1706708730.25, found `yesterday`"},
            {"line": 3, "column": "ended_at", "reason": "expected a timestamp written as `%m/%d/%Y %H:%M`, such as 01/31/2024 13:45, in America/New_York, found `2012-01-02 10:00`"},
            {"line": 3, "column": "member", "reason": "expected one of `Y` (true) or `N` (false), found `maybe`"},
        ])
    );
    assert_eq!(
        answer["message"],
        "2 of 2 records are invalid; nothing was stored"
    );
}

/// More records in a fixture's dialect, with keys after the fixture's.
fn padding(dataset: &str) -> String {
    let (rows, row): (u32, fn(u32) -> String) = match dataset {
        "weather" => (40, |i| format!("ZZ-{i:04};01.01.2012;1,5;2,5;J\r\n")),
        "trips" => (30, |i| {
            format!("{},2012/01/01,1325376000,01/01/2012 00:20,Y\n", 100 + i)
        }),
        "taps" => (20, |i| {
            format!(
                "{{\"tap_id\":{},\"at\":1325376000123,\"day\":\"01/01/2012\",\"price\":\"2,50\"}}\n",
                100 + i
            )
        }),
        "notes" => (150, |i| format!("{}\t'x'\t\n", 100 + i)),
        other => panic!("no padding for {other}"),
    };
    (0..rows).map(row).collect()
}

/// The same files, padded past the inline limit, through `pipeline push`
/// as uploads, each loaded in chunks of about 25 bytes: the loader plans
/// CSV chunks in the dialect (its quote and escape, a header or none, the
/// BOM) and reads each chunk with the header.
#[tokio::test]
async fn uploads_in_each_dialect_load_in_chunks_exactly_as_inline() {
    require!(Service::Postgres);
    let extra = format!("api:\n  max_inline_batch_kib: 1\n{DATASETS}");
    let local = Local::start_with(&extra, &["--chunk-size", "25"]).await;
    let db = local.db().await;
    for (dataset, file) in [
        ("weather", "weather.csv"),
        ("trips", "trips.csv"),
        ("taps", "taps.ndjson"),
        ("notes", "notes.tsv"),
    ] {
        let mut body = fixture(file);
        body.extend_from_slice(padding(dataset).as_bytes());
        assert!(body.len() > 1024, "{file} is not past the inline limit");
        std::fs::write(local.dir.path().join(file), &body).expect("write");
        let out = client(
            &local,
            &["--output", "json", "push", "-d", dataset, file, "--wait"],
        );
        let pushed: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        assert_eq!(
            (
                out.status.code(),
                pushed["via"].clone(),
                pushed["status"].clone()
            ),
            (Some(0), json!("upload"), json!("loaded")),
            "{file}: {pushed}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let fixture_rows = expected(dataset).as_array().map_or(0, Vec::len);
        let (status, page) = local
            .get(&format!(
                "/v1/datasets/{dataset}/records?limit={fixture_rows}"
            ))
            .await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["records"], expected(dataset), "{file}");
        let rows = count(&db, &format!("SELECT count(*) FROM public.{dataset}")).await;
        let padded = padding(dataset).lines().count();
        assert_eq!(rows as usize, fixture_rows + padded, "{file}");
        let chunks = count(
            &db,
            &format!(
                "SELECT count(*) FROM pipeline.batch_chunks WHERE batch_id = '{}' AND status <> 'split'",
                pushed["batch_id"].as_str().unwrap_or_default()
            ),
        )
        .await;
        assert!(chunks > 10, "{file} loaded in {chunks} chunks");
    }

    // An upload off its formats fails with its first error and loads nothing.
    let mut body = fixture("trips-bad.csv");
    body.extend_from_slice(padding("trips").as_bytes());
    std::fs::write(local.dir.path().join("bad.csv"), &body).expect("write");
    let out = client(&local, &["push", "-d", "trips", "bad.csv", "--wait"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(
        stdout.ends_with(" failed: line 2, column `start_day`: expected a date written as `%Y/%m/%d`, such as 2024/01/31, found `2012-01-01`\n"),
        "{stdout}"
    );
    let rows = count(&db, "SELECT count(*) FROM public.trips").await;
    assert_eq!(rows, 33);
}
