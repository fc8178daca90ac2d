//! The smoke checks of an API, end to end — health, a read, and a write
//! to the dedicated smoke dataset only, so that real data stays clean.

use pipeline_contract::{Batch, BatchAccepted, BatchStatus, Health, RecordsPage};
use std::fmt;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

use crate::client::Api;
use pipeline_shared::dataset::{ColumnType, Dataset, DecimalMark, Format, sample_value};

/// The dataset the write check goes to.
pub const SMOKE_DATASET: &str = "smoke";

#[derive(Debug, Serialize)]
pub struct Check {
    pub check: &'static str,
    /// `ok`, `failed` or `skipped`.
    pub result: &'static str,
    pub detail: String,
    pub millis: u128,
}

#[derive(Debug, Serialize)]
pub struct Smoke {
    pub url: String,
    pub passed: bool,
    pub checks: Vec<Check>,
}

impl fmt::Display for Smoke {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.checks {
            writeln!(
                f,
                "{:<7} {:<6} {:>5} ms  {}",
                c.check, c.result, c.millis, c.detail
            )?;
        }
        writeln!(
            f,
            "{} {}",
            self.url,
            if self.passed {
                "passed its smoke checks"
            } else {
                "FAILED its smoke checks"
            }
        )
    }
}

/// One record of the dataset with a value of its type in every column; a
/// fresh key on every run.
pub fn record(dataset: &Dataset) -> serde_json::Map<String, Value> {
    let id = uuid::Uuid::now_v7();
    let now = chrono::Utc::now();
    dataset
        .columns
        .iter()
        .map(|c| {
            let comma = c.decimal == Some(DecimalMark::Comma);
            let value = match c.kind {
                ColumnType::Text => json!(format!("smoke-{id}")),
                ColumnType::Int => json!((now.timestamp_millis() % i64::from(i32::MAX)) as i32),
                ColumnType::Bigint => json!(now.timestamp_micros()),
                ColumnType::Float | ColumnType::Numeric if comma => json!("1,5"),
                ColumnType::Float => json!(1.5),
                ColumnType::Bool => match &c.true_values {
                    Some(words) if !words.is_empty() => json!(words[0]),
                    _ => json!(true),
                },
                ColumnType::Numeric => json!("1.5"),
                // Values in the column's own format, as its batches write them.
                ColumnType::Date | ColumnType::Timestamptz if c.format.is_some() => {
                    match (c.time_format(), sample_value(c)) {
                        (format, Some(v)) if format.is_epoch() => {
                            v.parse::<i64>().map_or_else(|_| json!(v), |n| json!(n))
                        }
                        (_, v) => json!(v),
                    }
                }
                ColumnType::Date => json!(now.date_naive().to_string()),
                ColumnType::Timestamptz => json!(now.to_rfc3339()),
                ColumnType::Uuid => json!(id.to_string()),
                ColumnType::Jsonb => json!({"smoke": true}),
            };
            (c.name.clone(), value)
        })
        .collect()
}

/// The record as a batch body in the dataset's format.
fn batch(dataset: &Dataset, record: &serde_json::Map<String, Value>) -> String {
    match dataset.format {
        Format::Ndjson => format!("{}\n", Value::Object(record.clone())),
        Format::Csv => {
            let csv = dataset.csv();
            let (delimiter, quote) = (csv.delimiter_byte() as char, csv.quote_byte() as char);
            let field = |v: String| {
                if v.contains([delimiter, quote, '\n', '\r']) {
                    let doubled = v.replace(quote, &format!("{quote}{quote}"));
                    format!("{quote}{doubled}{quote}")
                } else {
                    v
                }
            };
            let line = |fields: Vec<String>| fields.join(&delimiter.to_string()) + "\n";
            let header = dataset
                .columns
                .iter()
                .map(|c| field(c.name.clone()))
                .collect();
            let values = dataset
                .columns
                .iter()
                .map(|c| match &record[&c.name] {
                    Value::String(s) => field(s.clone()),
                    other => field(other.to_string()),
                })
                .collect();
            match csv.header {
                true => line(header) + &line(values),
                false => line(values),
            }
        }
    }
}

/// Runs the checks against an API.
pub async fn check(
    api: &Api,
    datasets: &std::collections::BTreeMap<String, Dataset>,
    timeout: u64,
) -> Smoke {
    let mut checks = Vec::new();
    let timed = |check: &'static str, started: Instant, result: Result<String, String>| Check {
        check,
        result: if result.is_ok() { "ok" } else { "failed" },
        detail: result.unwrap_or_else(|e| e),
        millis: started.elapsed().as_millis(),
    };

    let started = Instant::now();
    let health = async {
        let answer = api
            .send(api.request(reqwest::Method::GET, "/v1/health"))
            .await
            .map_err(|e| e.to_string())?;
        match (answer.status, answer.read::<Health>()) {
            (200, Ok(_)) => Ok("GET /v1/health answered 200".to_string()),
            (status, _) => Err(format!(
                "GET /v1/health answered {status}: {}",
                answer.text()
            )),
        }
    };
    checks.push(timed("health", started, health.await));

    let read_from = datasets
        .keys()
        .find(|k| *k == SMOKE_DATASET)
        .or_else(|| datasets.keys().next());
    if let Some(name) = read_from {
        let started = Instant::now();
        let path = format!("/v1/datasets/{name}/records");
        let read = async {
            let answer = api
                .send(
                    api.request(reqwest::Method::GET, &path)
                        .query(&[("limit", "1")]),
                )
                .await
                .map_err(|e| e.to_string())?;
            match (answer.status, answer.read::<RecordsPage<Value>>()) {
                (200, Ok(_)) => Ok(format!("GET {path}?limit=1 answered 200")),
                (status, _) => Err(format!(
                    "GET {path}?limit=1 answered {status}: {}",
                    answer.text()
                )),
            }
        };
        checks.push(timed("read", started, read.await));
    }

    let started = Instant::now();
    match datasets.get(SMOKE_DATASET) {
        None => checks.push(Check {
            check: "write",
            result: "skipped",
            detail: format!(
                "there is no dataset `{SMOKE_DATASET}`: writes are checked only there, so that real data stays clean"
            ),
            millis: 0,
        }),
        Some(dataset) => {
            let write = write(api, dataset, Duration::from_secs(timeout));
            checks.push(timed("write", started, write.await));
        }
    }
    Smoke {
        url: api.base.clone(),
        passed: checks.iter().all(|c| c.result != "failed"),
        checks,
    }
}

/// Sends one record to the smoke dataset and waits until it is loaded.
async fn write(api: &Api, dataset: &Dataset, timeout: Duration) -> Result<String, String> {
    let body = batch(dataset, &record(dataset));
    let path = format!("/v1/datasets/{SMOKE_DATASET}/batches");
    let request = api
        .request(reqwest::Method::POST, &path)
        .header("content-type", dataset.format.media_type())
        .body(body);
    let answer = api.send(request).await.map_err(|e| e.to_string())?;
    let accepted = match (answer.status, answer.read::<BatchAccepted>()) {
        (202, Ok(accepted)) => accepted,
        (status, _) => return Err(format!("POST {path} answered {status}: {}", answer.text())),
    };
    let id = accepted.batch_id;
    let deadline = Instant::now() + timeout;
    loop {
        let answer = api
            .send(api.request(reqwest::Method::GET, &format!("/v1/batches/{id}")))
            .await
            .map_err(|e| e.to_string())?;
        let batch = match (answer.status, answer.read::<Batch>()) {
            (200, Ok(batch)) => batch,
            (status, _) => {
                return Err(format!(
                    "GET /v1/batches/{id} answered {status}: {}",
                    answer.text()
                ));
            }
        };
        match batch.status {
            BatchStatus::Loaded => {
                return Ok(format!("batch {id} loaded into `{SMOKE_DATASET}`"));
            }
            BatchStatus::Failed => {
                let why = batch.error.map_or_else(String::new, |e| e.to_string());
                return Err(format!("batch {id} failed: {why}"));
            }
            _ if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            status => {
                return Err(format!(
                    "batch {id} is still {status} after {} s",
                    timeout.as_secs()
                ));
            }
        }
    }
}
