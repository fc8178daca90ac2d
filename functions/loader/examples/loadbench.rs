//! Loader benchmark: the same rows loaded into the same table three ways,
//! side by side, on the Postgres at `DATABASE_URL`:
//!
//! - `psql \copy` of the rows in COPY text format: the practical limit;
//! - `psql` running multi-row INSERTs of 1000 rows each;
//! - the loader: an NDJSON object streamed from the local object store,
//!   decoded, validated and COPYed in one transaction (`db::load`).
//!
//! Prints rows/s, MB/s and the loader's peak memory. Run through
//! `scripts/bench-load [rows]`.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Instant;

use pipeline_shared::api::Context;
use pipeline_shared::dataset::{Column, ColumnType, Dataset, Format, OnConflict};
use pipeline_shared::store::{LocalStore, Store};

fn dataset() -> Dataset {
    let col = |name: &str, kind, nullable| Column {
        nullable,
        ..Column::new(name, kind)
    };
    Dataset {
        format: Format::Ndjson,
        csv: None,
        columns: vec![
            col("event_id", ColumnType::Uuid, false),
            col("occurred_at", ColumnType::Timestamptz, false),
            col("source", ColumnType::Text, false),
            col("kind", ColumnType::Text, false),
            col("user_id", ColumnType::Bigint, true),
            col("amount", ColumnType::Numeric, true),
            col("payload", ColumnType::Jsonb, true),
        ],
        primary_key: vec!["event_id".into()],
        on_conflict: OnConflict::Ignore,
        filterable: vec![],
        description: None,
        allow_destructive_changes: false,
    }
}

/// Deterministic pseudo-random numbers (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

const KINDS: [&str; 4] = ["click", "view", "purchase", "signup"];
const SOURCES: [&str; 3] = ["web", "ios", "android"];

/// Writes the rows as NDJSON, COPY text and INSERT statements.
fn generate(rows: u64, dir: &std::path::Path) -> std::io::Result<u64> {
    let mut ndjson = std::io::BufWriter::new(std::fs::File::create(
        dir.join("objects/raw/bench/2024-01-01")
            .join(format!("{}.ndjson", batch_id())),
    )?);
    let mut copy = std::io::BufWriter::new(std::fs::File::create(dir.join("rows.copy"))?);
    let mut insert = std::io::BufWriter::new(std::fs::File::create(dir.join("rows.sql"))?);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut bytes = 0u64;
    writeln!(insert, "BEGIN;")?;
    for i in 0..rows {
        let id = uuid::Uuid::from_u64_pair(rng.next(), i);
        let secs = rng.next() % 86_400;
        let at = format!(
            "2024-01-01T{:02}:{:02}:{:02}Z",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        );
        let source = SOURCES[(rng.next() % 3) as usize];
        let kind = KINDS[(rng.next() % 4) as usize];
        let user = rng.next() % 1_000_000;
        let amount = format!("{}.{:02}", rng.next() % 10_000, rng.next() % 100);
        let payload = format!(
            "{{\"page\":\"/p/{}\",\"n\":{}}}",
            rng.next() % 1000,
            rng.next() % 100
        );
        let line = format!(
            "{{\"event_id\":\"{id}\",\"occurred_at\":\"{at}\",\"source\":\"{source}\",\"kind\":\"{kind}\",\"user_id\":{user},\"amount\":\"{amount}\",\"payload\":{payload}}}\n"
        );
        bytes += line.len() as u64;
        ndjson.write_all(line.as_bytes())?;
        writeln!(
            copy,
            "{id}\t{at}\t{source}\t{kind}\t{user}\t{amount}\t{payload}"
        )?;
        if i % 1000 == 0 {
            if i > 0 {
                writeln!(insert, ";")?;
            }
            write!(insert, "INSERT INTO bench_insert VALUES ")?;
        } else {
            write!(insert, ",")?;
        }
        write!(
            insert,
            "('{id}','{at}','{source}','{kind}',{user},{amount},'{payload}')"
        )?;
    }
    writeln!(insert, ";\nCOMMIT;")?;
    ndjson.flush()?;
    copy.flush()?;
    insert.flush()?;
    Ok(bytes)
}

fn batch_id() -> uuid::Uuid {
    uuid::Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001)
}

fn psql(db: &str, args: &[&str]) -> f64 {
    let start = Instant::now();
    let status = std::process::Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db])
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run psql");
    assert!(status.success(), "psql failed");
    start.elapsed().as_secs_f64()
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    let rows: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let server = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let work = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(work.path().join("objects/raw/bench/2024-01-01")).expect("mkdir");
    let bytes = generate(rows, work.path()).expect("generate rows");
    let name = format!("pipeline_bench_{}", std::process::id());
    let base: tokio_postgres::Config = server.parse().expect("DATABASE_URL");
    let mut config = base.clone();
    config.dbname(&name);
    let url = format!(
        "{}/{name}",
        server.rsplit_once('/').map_or(server.as_str(), |(h, _)| h)
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (admin, conn) = base.connect(tokio_postgres::NoTls).await.expect("connect");
        tokio::spawn(conn);
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name}")).await.expect("drop db");
        admin.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create db");
        let manager = deadpool_postgres::Manager::new(config, tokio_postgres::NoTls);
        let pool = deadpool_postgres::Pool::builder(manager).max_size(4).build().expect("pool");
        let ds = dataset();
        let ctx = Context {
            env: "bench".into(),
            datasets: BTreeMap::from([("bench".to_string(), ds.clone())]),
            store: Store::Local(LocalStore::new(work.path().join("objects"))),
            pool: pool.clone(),
            max_inline_bytes: 0,
            chunk_bytes: 0,
            upload_part_bytes: pipeline_shared::store::DEFAULT_UPLOAD_PART_BYTES,
            merge_slice_rows: pipeline_shared::db::DEFAULT_SLICE_ROWS,
            max_decoded_ratio: pipeline_shared::compression::DEFAULT_DECODED_RATIO,
            chunk_queue: None,
            max_receives: None,
            definitions: Default::default(),
        };
        loader::migrate(&ctx).await.expect("migrate");
        let columns = "event_id uuid PRIMARY KEY, occurred_at timestamptz NOT NULL, source text NOT NULL, kind text NOT NULL, user_id bigint, amount numeric, payload jsonb";
        let client = pool.get().await.expect("client");
        client
            .batch_execute(&format!("CREATE TABLE bench_copy ({columns}); CREATE TABLE bench_insert ({columns})"))
            .await
            .expect("tables");
        let key = format!("raw/bench/2024-01-01/{}.ndjson", batch_id());
        client
            .execute(
                "INSERT INTO pipeline.batches (batch_id, dataset, object_key, status) VALUES ($1, 'bench', $2, 'received')",
                &[&batch_id(), &key],
            )
            .await
            .expect("batch row");
        client.batch_execute("CHECKPOINT").await.expect("checkpoint");

        let copy_path = work.path().join("rows.copy");
        let copy_secs = psql(&url, &["-c", &format!("\\copy bench_copy FROM '{}'", copy_path.display())]);
        client.batch_execute("CHECKPOINT").await.expect("checkpoint");
        let insert_secs = psql(&url, &["-f", &work.path().join("rows.sql").display().to_string()]);
        client.batch_execute("CHECKPOINT").await.expect("checkpoint");

        let start = Instant::now();
        let handled = loader::load_key(&ctx, &key, None).await.expect("load");
        let load_secs = start.elapsed().as_secs_f64();
        let loaded: i64 = client.query_one("SELECT count(*) FROM public.bench", &[]).await.expect("count").get(0);
        assert_eq!(loaded as u64, rows, "{handled:?}");

        let mb = bytes as f64 / 1e6;
        println!("load benchmark: {rows} rows, {mb:.0} MB of NDJSON, into a table with a primary key");
        println!("  {:<34} {:>12} {:>9} {:>8}", "method", "rows/s", "MB/s", "vs copy");
        for (label, secs) in [("psql \\copy (COPY text)", copy_secs), ("multi-row INSERT (1000 rows each)", insert_secs), ("pipeline loader (NDJSON, validated)", load_secs)] {
            println!(
                "  {label:<34} {:>12.0} {:>9.1} {:>7.0}%",
                rows as f64 / secs,
                mb / secs,
                100.0 * copy_secs / secs
            );
        }
        println!("  loader peak memory (whole process, incl. generation): {:.1} MiB", peak_rss_mib());
        drop(client);
        pool.close();
        let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
    });
}
