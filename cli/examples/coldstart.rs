//! Cold starts as Lambda sees them, without AWS: each function's release
//! `bootstrap` is started in a task directory laid out as its zip (with
//! `datasets.json` and a CA bundle beside it), with the environment Lambda
//! and the app template give it, against a local implementation of the
//! Lambda Runtime API; its clients are built as in AWS (see
//! `tests/common/runtime_api.rs`).
//!
//! Per start it times, from just before the exec:
//! - *ready*: the first `GET .../invocation/next`, which ends the init;
//! - *first*: the answer to the first invocation (for ingest a POST of a
//!   batch, for the loader an SQS event of that batch's object, for query a
//!   GET of records), which also opens the first database connection and
//!   the first connection to S3;
//!
//! and then *warm*: the next invocation of the same kind, from its event to
//! its answer, so that first minus warm is what the first request pays for
//! the clients' lazy set-up. Every answer is checked (status, loaded batch).
//!
//! Usage: coldstart TASK_BINARIES_DIR [starts per function, default 20]
//! (`scripts/bench-coldstart` builds the functions as `pipeline build` does
//! and runs it).

#[path = "../../tests/common/runtime_api.rs"]
mod runtime_api;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use runtime_api::{Fail, Lab, Start, Task, fixture, post_batch, sqs_event};
use serde_json::Value;

/// The figures of one start, in milliseconds.
struct Figures {
    ready: f64,
    first: f64,
    warm: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One cold start: ready, first and warm answers, each checked by `check`.
async fn cold_start(
    task: &Task,
    env: &BTreeMap<String, String>,
    first: &Value,
    warm: &Value,
    check: &mut (dyn FnMut(&Value) -> Result<(), Fail> + Send),
) -> Result<Figures, Fail> {
    let mut start = Start::new(task, env).await?;
    let outcome = async {
        let ready = start.ready().await?;
        let (answered, answer) = start.invoke(first).await?;
        check(&answer)?;
        start.ready().await?;
        let sent = Instant::now();
        let (warm_at, answer) = start.invoke(warm).await?;
        check(&answer)?;
        Ok::<_, Fail>(Figures {
            ready: ms(ready - start.started),
            first: ms(answered - start.started),
            warm: ms(warm_at - sent),
        })
    }
    .await;
    start.stop().await;
    outcome
}

fn status_of(answer: &Value) -> i64 {
    answer["statusCode"].as_i64().unwrap_or_default()
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

fn print(task: &Task, figures: &[Figures]) -> Result<(), Fail> {
    let pick = |f: fn(&Figures) -> f64| figures.iter().map(f).collect::<Vec<f64>>();
    let (mut ready, mut first, mut warm) = (pick(|f| f.ready), pick(|f| f.first), pick(|f| f.warm));
    println!(
        "{:<7} {} bootstrap {:>5.2} MB, zip {:.2} MB | ready p50 {:>5.1} p90 {:>5.1} max {:>5.1} ms \
         | first answer p50 {:>5.1} p90 {:>5.1} ms | warm answer p50 {:>4.1} ms ({} starts)",
        task.function,
        std::env::consts::ARCH,
        task.bootstrap_bytes as f64 / 1e6,
        task.zip_bytes()? as f64 / 1e6,
        percentile(&mut ready, 50.0),
        percentile(&mut ready, 90.0),
        percentile(&mut ready, 100.0),
        percentile(&mut first, 50.0),
        percentile(&mut first, 90.0),
        percentile(&mut warm, 50.0),
        figures.len(),
    );
    Ok(())
}

async fn bench(
    binaries: &Path,
    starts: usize,
    admin: &tokio_postgres::Client,
    db: &str,
) -> Result<(), Fail> {
    let lab = Lab::new(binaries, admin, db).await?;
    lab.migrate().await?;
    let (ingest, loader, query) = (lab.task("ingest")?, lab.task("loader")?, lab.task("query")?);
    let env = |task: &Task| lab.env(task.function);

    let post = fixture("apigw-post-batch.json")?;
    let sqs = fixture("sqs-s3-events.json")?;
    let get = fixture("apigw-get-records.json")?;

    // ingest: each start stores two batches, which the loader's starts load.
    let mut batches = Vec::new();
    let mut figures = Vec::new();
    for _ in 0..starts {
        let mut check = |answer: &Value| -> Result<(), Fail> {
            let body: Value = serde_json::from_str(answer["body"].as_str().unwrap_or("{}"))?;
            if status_of(answer) != 202 {
                return Err(format!("ingest answered {answer}").into());
            }
            let id = body["batch_id"].as_str().ok_or("no batch_id")?;
            batches.push(uuid::Uuid::parse_str(id)?);
            Ok(())
        };
        figures.push(
            cold_start(
                ingest,
                &env(ingest)?,
                &post_batch(&post),
                &post_batch(&post),
                &mut check,
            )
            .await?,
        );
    }
    print(ingest, &figures)?;

    let client = connect(db).await?;
    let mut keys = Vec::new();
    for id in &batches {
        let row = client
            .query_one(
                "SELECT object_key FROM pipeline.batches WHERE batch_id = $1",
                &[id],
            )
            .await?;
        keys.push(row.get::<_, String>(0));
    }
    let mut figures = Vec::new();
    let expect_loaded = |answer: &Value| -> Result<(), Fail> {
        if answer["batchItemFailures"]
            .as_array()
            .is_none_or(|f| !f.is_empty())
        {
            return Err(format!("the loader answered {answer}").into());
        }
        Ok(())
    };
    for pair in keys.chunks(2) {
        let [first, warm] = pair else { break };
        let mut check = |answer: &Value| expect_loaded(answer);
        figures.push(
            cold_start(
                loader,
                &env(loader)?,
                &sqs_event(&sqs, first)?,
                &sqs_event(&sqs, warm)?,
                &mut check,
            )
            .await?,
        );
    }
    print(loader, &figures)?;
    let loaded: i64 = client
        .query_one(
            "SELECT count(*) FROM pipeline.batches WHERE status = 'loaded'",
            &[],
        )
        .await?
        .get(0);
    if loaded != batches.len() as i64 {
        return Err(format!("{loaded} of {} batches loaded", batches.len()).into());
    }

    let mut figures = Vec::new();
    for _ in 0..starts {
        let mut check = |answer: &Value| -> Result<(), Fail> {
            if status_of(answer) != 200 {
                return Err(format!("query answered {answer}").into());
            }
            Ok(())
        };
        figures.push(cold_start(query, &env(query)?, &get, &get, &mut check).await?);
    }
    print(query, &figures)?;
    Ok(())
}

async fn connect(db: &str) -> Result<tokio_postgres::Client, Fail> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let url = match db {
        "" => url,
        db => format!(
            "{}/{db}",
            url.rsplit_once('/').map_or(url.as_str(), |(base, _)| base)
        ),
    };
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

#[tokio::main]

async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(binaries) = args.get(1).map(PathBuf::from) else {
        eprintln!("usage: coldstart TASK_BINARIES_DIR [starts per function]");
        std::process::exit(2);
    };
    let starts: usize = args
        .get(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20)
        .max(1);
    let admin = match connect("").await {
        Ok(admin) => admin,
        Err(e) => {
            eprintln!("coldstart: cannot reach Postgres: {e}");
            std::process::exit(1);
        }
    };
    let db = format!("coldstart_{}", uuid::Uuid::new_v4().simple());
    if let Err(e) = admin.batch_execute(&format!("CREATE DATABASE {db}")).await {
        eprintln!("coldstart: {e}");
        std::process::exit(1);
    }
    let outcome = bench(&binaries, starts, &admin, &db).await;
    let _ = admin
        .batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .await;
    if let Err(e) = outcome {
        eprintln!("coldstart: {e}");
        std::process::exit(1);
    }
}
