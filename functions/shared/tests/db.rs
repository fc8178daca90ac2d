//! The database layer against the real Postgres on 127.0.0.1:5432: each test
//! creates its own database and drops it.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use pipeline_shared::dataset::{Column, ColumnType, Dataset, Format, OnConflict};
use pipeline_shared::db::{self, BatchStatus, Filter, LoadOutcome, NewBatch};
use pipeline_shared::store::{ByteStream, StoreError};
use pipeline_testkit::{Service, require};
use tokio_postgres::{Client, NoTls};

const ADMIN: &str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres";

/// A scratch database, dropped when the test ends.
struct TestDb {
    name: String,
}

impl TestDb {
    async fn new() -> (TestDb, Client) {
        let name = format!("pipeline_test_{}", uuid::Uuid::new_v4().simple());
        let admin = connect(ADMIN).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        let client = connect(&format!(
            "host=127.0.0.1 port=5432 user=postgres dbname={name}"
        ))
        .await;
        (TestDb { name }, client)
    }

    async fn client(&self) -> Client {
        connect(&format!(
            "host=127.0.0.1 port=5432 user=postgres dbname={}",
            self.name
        ))
        .await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let admin = connect(ADMIN).await;
                let _ = admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await;
            });
        })
        .join();
    }
}

async fn connect(config: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(config, NoTls)
        .await
        .expect("connect to Postgres on 127.0.0.1:5432");
    tokio::spawn(connection);
    client
}

fn column(name: &str, kind: ColumnType, nullable: bool) -> Column {
    Column {
        nullable,
        ..Column::new(name, kind)
    }
}

fn events(on_conflict: OnConflict) -> Dataset {
    Dataset {
        format: Format::Ndjson,
        csv: None,
        columns: vec![
            column("id", ColumnType::Bigint, false),
            column("kind", ColumnType::Text, false),
            column("amount", ColumnType::Numeric, true),
        ],
        primary_key: vec!["id".into()],
        on_conflict,
        filterable: vec!["kind".into()],
        description: None,
        allow_destructive_changes: false,
    }
}

fn datasets(dataset: &Dataset) -> BTreeMap<String, Dataset> {
    BTreeMap::from([("events".to_string(), dataset.clone())])
}

fn object(body: &str) -> impl Fn() -> std::future::Ready<Result<ByteStream, StoreError>> {
    let body = Bytes::from(body.to_string());
    move || {
        // Small chunks, so that records straddle them.
        let chunks: Vec<Result<Bytes, StoreError>> = body
            .chunks(5)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        std::future::ready(Ok(futures_util::stream::iter(chunks).boxed()))
    }
}

async fn new_batch(client: &Client, key: &str) -> uuid::Uuid {
    let id = uuid::Uuid::now_v7();
    let batch = NewBatch {
        batch_id: id,
        dataset: "events",
        object_key: key,
        idempotency_key: None,
        records: None,
        sha256: None,
        size_bytes: None,
        dataset_revision: None,
    };
    db::insert_batch(client, &batch)
        .await
        .expect("insert")
        .expect("new batch");
    id
}

async fn rows(client: &Client) -> Vec<(i64, String, Option<String>)> {
    client
        .query(
            "SELECT id, kind, amount::text FROM public.events ORDER BY id",
            &[],
        )
        .await
        .expect("select")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test]
async fn migrations_add_and_refuse_destructive_changes() {
    require!(Service::Postgres);
    let (_db, mut client) = TestDb::new().await;
    let mut ds = events(OnConflict::Ignore);
    let report = db::migrate(&mut client, &datasets(&ds))
        .await
        .expect("migrate");
    assert_eq!(
        report.statements,
        vec![
            "CREATE TABLE public.\"events\" (\"id\" bigint NOT NULL, \"kind\" text NOT NULL, \"amount\" numeric, pipeline_load bigint, PRIMARY KEY (\"id\"))",
            "ALTER TABLE public.\"events\" ALTER COLUMN pipeline_load SET (n_distinct = -1)",
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS \"events_kind_key_idx\" ON public.\"events\" (\"kind\", \"id\")",
        ]
    );
    // Unchanged: nothing to do.
    assert!(
        db::migrate(&mut client, &datasets(&ds))
            .await
            .expect("again")
            .statements
            .is_empty()
    );
    // A table of an earlier version, with a one-column filter index: it
    // gives way to the index in read order.
    client
        .batch_execute(
            "DROP INDEX events_kind_key_idx; CREATE INDEX events_kind_idx ON public.events (kind)",
        )
        .await
        .expect("earlier index");
    assert_eq!(
        db::migrate(&mut client, &datasets(&ds))
            .await
            .expect("upgrade")
            .statements,
        vec![
            "DROP INDEX CONCURRENTLY IF EXISTS public.\"events_kind_idx\"",
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS \"events_kind_key_idx\" ON public.\"events\" (\"kind\", \"id\")",
        ]
    );
    // Additive: a nullable column and an index.
    ds.columns.push(column("note", ColumnType::Text, true));
    ds.filterable.push("note".into());
    let report = db::migrate(&mut client, &datasets(&ds))
        .await
        .expect("additive");
    assert_eq!(
        report.statements,
        vec![
            "ALTER TABLE public.\"events\" ADD COLUMN IF NOT EXISTS \"note\" text",
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS \"events_note_key_idx\" ON public.\"events\" (\"note\", \"id\")",
        ]
    );
    // Destructive: refused, and nothing changes. A column removed is no
    // change that loses data: it is retired (kept, nullable), so that
    // batches of the definitions that have it still load.
    let mut bad = ds.clone();
    bad.columns.retain(|c| c.name != "amount");
    bad.columns[1].kind = ColumnType::Int;
    let err = db::migrate(&mut client, &datasets(&bad))
        .await
        .expect_err("destructive");
    assert_eq!(
        err.to_string(),
        "migrating dataset `events` needs changes that can lose data: change column `kind` from text to integer; set `datasets.events.allow_destructive_changes: true` to make them"
    );
    let version: i32 = client
        .query_one(
            "SELECT version FROM pipeline.datasets WHERE name = 'events'",
            &[],
        )
        .await
        .expect("version")
        .get(0);
    assert_eq!(version, 3);
    // Removed alone: retired, kept with its data (nullable already, so
    // nothing to run).
    let mut retired = ds.clone();
    retired.columns.retain(|c| c.name != "amount");
    let report = db::migrate(&mut client, &datasets(&retired))
        .await
        .expect("retired");
    assert_eq!(report.statements, Vec::<String>::new());
    let kept: i64 = client
        .query_one(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'events' AND column_name = 'amount'",
            &[],
        )
        .await
        .expect("columns")
        .get(0);
    assert_eq!(kept, 1, "the removed column was dropped");
    // Allowed explicitly: applied.
    bad.columns[1].kind = ColumnType::Text;
    bad.allow_destructive_changes = true;
    let report = db::migrate(&mut client, &datasets(&bad))
        .await
        .expect("allowed");
    assert_eq!(
        report.statements,
        vec!["ALTER TABLE public.\"events\" DROP COLUMN \"amount\""]
    );
    // The functions' users may do what their function does, and no more.
    for (user, privilege, table, expected) in [
        ("pipeline_loader", "INSERT", "public.events", true),
        ("pipeline_loader", "UPDATE", "public.events", true),
        ("pipeline_loader", "DELETE", "public.events", false),
        ("pipeline_query", "SELECT", "public.events", true),
        ("pipeline_query", "INSERT", "public.events", false),
        ("pipeline_ingest", "INSERT", "pipeline.batches", true),
        ("pipeline_ingest", "SELECT", "public.events", false),
        ("pipeline_query", "UPDATE", "pipeline.batches", false),
    ] {
        let sql = format!("SELECT has_table_privilege('{user}', '{table}', '{privilege}')");
        let allowed: bool = client.query_one(&sql, &[]).await.expect("privilege").get(0);
        assert_eq!(allowed, expected, "{user} {privilege} {table}");
    }
    // Reads are bounded by the server, in this database.
    let timeout: String = client
        .query_one(
            "SELECT array_to_string(setconfig, ',') FROM pg_db_role_setting s
             JOIN pg_roles r ON r.oid = s.setrole JOIN pg_database d ON d.oid = s.setdatabase
             WHERE r.rolname = 'pipeline_query' AND d.datname = current_database()",
            &[],
        )
        .await
        .expect("role setting")
        .get(0);
    assert_eq!(
        timeout,
        format!("statement_timeout={}", pipeline_contract::READ_TIMEOUT_MS)
    );
}

#[tokio::test]
async fn a_batch_loads_once_and_redelivery_changes_nothing() {
    require!(Service::Postgres);
    let (_db, mut client) = TestDb::new().await;
    let ds = events(OnConflict::Ignore);
    db::migrate(&mut client, &datasets(&ds))
        .await
        .expect("migrate");
    let id = new_batch(&client, "raw/events/a").await;
    let body = "{\"id\":1,\"kind\":\"a\",\"amount\":\"1.10\"}\n{\"id\":2,\"kind\":\"b\"}\n";
    let outcome = db::load(&mut client, "events", &ds, id, object(body))
        .await
        .expect("load");
    assert_eq!(
        outcome,
        LoadOutcome::Loaded {
            records: 2,
            inserted: 2,
            duplicates: 0
        }
    );
    let again = db::load(&mut client, "events", &ds, id, object(body))
        .await
        .expect("reload");
    assert_eq!(
        again,
        LoadOutcome::AlreadyDone {
            status: BatchStatus::Loaded
        }
    );
    assert_eq!(
        rows(&client).await,
        vec![(1, "a".into(), Some("1.10".into())), (2, "b".into(), None)]
    );
    let batch = db::batch(&client, id)
        .await
        .expect("batch")
        .expect("exists");
    assert_eq!(
        (
            batch.answer.status.as_str(),
            batch.answer.records,
            batch.answer.inserted,
            batch.answer.duplicates
        ),
        ("loaded", Some(2), Some(2), Some(0))
    );
}

#[tokio::test]
async fn conflicts_follow_the_dataset_rule() {
    require!(Service::Postgres);
    let (_db, mut client) = TestDb::new().await;
    for rule in [OnConflict::Ignore, OnConflict::Update] {
        client
            .batch_execute(
                "DROP SCHEMA IF EXISTS pipeline CASCADE; DROP TABLE IF EXISTS public.events",
            )
            .await
            .expect("reset");
        let ds = events(rule);
        db::migrate(&mut client, &datasets(&ds))
            .await
            .expect("migrate");
        let first = new_batch(&client, "raw/events/1").await;
        db::load(
            &mut client,
            "events",
            &ds,
            first,
            object("{\"id\":1,\"kind\":\"old\"}\n"),
        )
        .await
        .expect("first");
        // Key 1 already stored; key 2 twice in the batch.
        let second = new_batch(&client, "raw/events/2").await;
        let body =
            "{\"id\":2,\"kind\":\"x\"}\n{\"id\":1,\"kind\":\"new\"}\n{\"id\":2,\"kind\":\"y\"}\n";
        let outcome = db::load(&mut client, "events", &ds, second, object(body))
            .await
            .expect("second");
        assert_eq!(
            outcome,
            LoadOutcome::Loaded {
                records: 3,
                inserted: 1,
                duplicates: 2
            },
            "{rule:?}"
        );
        let expected = match rule {
            OnConflict::Ignore => vec![(1, "old".to_string(), None), (2, "x".to_string(), None)],
            OnConflict::Update => vec![(1, "new".to_string(), None), (2, "y".to_string(), None)],
        };
        assert_eq!(rows(&client).await, expected, "{rule:?}");
    }
}

#[tokio::test]
async fn an_invalid_object_fails_the_batch_and_loads_nothing() {
    require!(Service::Postgres);
    let (_db, mut client) = TestDb::new().await;
    let ds = events(OnConflict::Ignore);
    db::migrate(&mut client, &datasets(&ds))
        .await
        .expect("migrate");
    let id = new_batch(&client, "raw/events/bad").await;
    // Enough valid rows before the bad one that some reach Postgres first.
    let mut body: String = (1..=40_000)
        .map(|i| format!("{{\"id\":{i},\"kind\":\"k\"}}\n"))
        .collect();
    body.push_str("{\"id\":\"x\",\"kind\":\"k\"}\n");
    let error = load_invalid(&mut client, &ds, id, &body).await;
    assert_eq!(
        error.to_string(),
        "line 40001, column `id`: expected a number, found a string"
    );
    assert_eq!(rows(&client).await, vec![]);
    let batch = db::batch(&client, id)
        .await
        .expect("batch")
        .expect("exists");
    assert_eq!(batch.answer.status, BatchStatus::Failed);
    assert_eq!(batch.answer.error.map(|e| e.line), Some(40001));

    // A key repeated early makes the first COPY fail on it while the bad
    // record is still to be read: the batch is still the bad record's.
    let id = new_batch(&client, "raw/events/repeated-then-bad").await;
    let mut body = String::from("{\"id\":1,\"kind\":\"k\"}\n");
    body.extend((1..=100_000).map(|i| format!("{{\"id\":{i},\"kind\":\"k\"}}\n")));
    body.push_str("{\"id\":\"x\",\"kind\":\"k\"}\n");
    let error = load_invalid(&mut client, &ds, id, &body).await;
    assert_eq!(
        error.to_string(),
        "line 100002, column `id`: expected a number, found a string"
    );
    assert_eq!(rows(&client).await, vec![]);

    // The same with a key already in the table: whether the COPY stops on
    // the key first (and the merge's COPY finds the bad record) or the
    // decoder reaches the bad record first, the batch is the bad record's.
    let first = new_batch(&client, "raw/events/first").await;
    db::load(
        &mut client,
        "events",
        &ds,
        first,
        object("{\"id\":1,\"kind\":\"k\"}\n"),
    )
    .await
    .expect("first");
    let id = new_batch(&client, "raw/events/known-then-bad").await;
    let error = load_invalid(&mut client, &ds, id, &body).await;
    assert_eq!(error.line, 100002);
    assert_eq!(rows(&client).await.len(), 1);
}

/// Loads a batch that must come out invalid; its first error.
async fn load_invalid(
    client: &mut Client,
    ds: &Dataset,
    id: uuid::Uuid,
    body: &str,
) -> pipeline_shared::records::RecordError {
    let outcome = db::load(client, "events", ds, id, object(body))
        .await
        .expect("load");
    let LoadOutcome::Invalid { error } = outcome else {
        panic!("expected invalid, got {outcome:?}")
    };
    error
}

#[tokio::test]
async fn concurrent_deliveries_load_once() {
    require!(Service::Postgres);
    let (test_db, mut client) = TestDb::new().await;
    let ds = Arc::new(events(OnConflict::Ignore));
    db::migrate(&mut client, &datasets(&ds))
        .await
        .expect("migrate");
    let id = new_batch(&client, "raw/events/c").await;
    let body: Arc<String> = Arc::new(
        (1..=20_000)
            .map(|i| format!("{{\"id\":{i},\"kind\":\"k\"}}\n"))
            .collect(),
    );
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let mut c = test_db.client().await;
        let (ds, body) = (ds.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            db::load(&mut c, "events", &ds, id, object(&body)).await
        }));
    }
    let mut loaded = 0;
    for t in tasks {
        match t.await.expect("join").expect("load") {
            LoadOutcome::Loaded { inserted, .. } => {
                assert_eq!(inserted, 20_000);
                loaded += 1;
            }
            LoadOutcome::AlreadyDone { status } => assert_eq!(status, BatchStatus::Loaded),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(loaded, 1);
    let count: i64 = client
        .query_one("SELECT count(*) FROM public.events", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(count, 20_000);
}

#[tokio::test]
async fn records_page_by_key_with_filters() {
    require!(Service::Postgres);
    let (_db, mut client) = TestDb::new().await;
    let ds = events(OnConflict::Ignore);
    db::migrate(&mut client, &datasets(&ds))
        .await
        .expect("migrate");
    let id = new_batch(&client, "raw/events/r").await;
    let body: String = (1..=7)
        .map(|i| {
            format!(
                "{{\"id\":{i},\"kind\":\"{}\",\"amount\":\"{i}.5\"}}\n",
                if i % 2 == 0 { "even" } else { "odd" }
            )
        })
        .collect();
    db::load(&mut client, "events", &ds, id, object(&body))
        .await
        .expect("load");
    let filters = vec![
        Filter::Eq("kind".into(), "odd".into()),
        Filter::Gte("id".into(), "2".into()),
    ];
    let page = db::records(&client, "events", &ds, &filters, None, 2)
        .await
        .expect("page 1");
    let ids: Vec<i64> = page
        .records
        .iter()
        .filter_map(|r| r["id"].as_i64())
        .collect();
    assert_eq!(ids, vec![3, 5]);
    assert_eq!(page.records[0]["amount"], "3.5");
    let after = page.next.expect("more");
    let page = db::records(&client, "events", &ds, &filters, Some(&after), 2)
        .await
        .expect("page 2");
    let ids: Vec<i64> = page
        .records
        .iter()
        .filter_map(|r| r["id"].as_i64())
        .collect();
    assert_eq!(ids, vec![7]);
    assert!(page.next.is_none());
    // A value that is not of the column's type is a database error, not an injection.
    let bad = vec![Filter::Eq("id".into(), "1; DROP TABLE events".into())];
    assert!(
        db::records(&client, "events", &ds, &bad, None, 2)
            .await
            .is_err()
    );
}

/// Records near the size limit, full of quotes (each takes two bytes in
/// the record's JSON and four in Lambda's answer, whose body is a JSON
/// string): a page of 100 stops before it would pass the byte budget, with
/// a cursor, and the cursors lead through every record once. Before, a
/// page held `limit` records whatever their size: 12 such records made an
/// answer of about 19 MB, past Lambda's 6 MB, and API Gateway answered 502.
#[tokio::test]
async fn a_page_of_large_records_stops_at_the_byte_budget() {
    require!(Service::Postgres);
    let (_db, mut client) = TestDb::new().await;
    let mut ds = events(OnConflict::Ignore);
    ds.columns.push(column("note", ColumnType::Text, true));
    db::migrate(&mut client, &datasets(&ds))
        .await
        .expect("migrate");
    client
        .batch_execute(
            "INSERT INTO public.events (id, kind, note) SELECT g, 'k', repeat('\"', 400000) FROM generate_series(1, 12) g",
        )
        .await
        .expect("rows");
    let mut seen = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let page = db::records(&client, "events", &ds, &[], after.as_ref(), 100)
            .await
            .expect("a page");
        pages += 1;
        let body = serde_json::to_string(&pipeline_contract::RecordsPage {
            records: page.records.clone(),
            next_cursor: Some("c".repeat(200)),
        })
        .expect("body");
        let in_answer = serde_json::to_string(&body).expect("answer").len();
        assert!(
            in_answer <= pipeline_contract::MAX_PAGE_BYTES + 1024,
            "page {pages}: {} records take {in_answer} bytes in the answer",
            page.records.len()
        );
        assert!(!page.records.is_empty());
        seen.extend(page.records.iter().filter_map(|r| r["id"].as_i64()));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, (1..=12).collect::<Vec<i64>>());
    assert_eq!(
        pages, 4,
        "three records of about 1.6 MB each fit under 5 MiB"
    );
}

/// The plan's nodes, depth first.
fn plan_nodes<'a>(node: &'a serde_json::Value, out: &mut Vec<&'a serde_json::Value>) {
    out.push(node);
    for child in node["Plans"].as_array().into_iter().flatten() {
        plan_nodes(child, out);
    }
}

/// Before, a page was read in key order whatever the filters: with a
/// filter on `user_id` Postgres walked the key's index and discarded every
/// row of other users until the page was full. Each page is now one range
/// scan of an index in the order records are read in (or, for a common
/// value, of the key's): no node scans the table, and no page reads more
/// than a few pages' worth of rows.
#[tokio::test]
async fn every_filter_reads_a_page_from_one_index_range() {
    require!(Service::Postgres);
    let (_db, mut client) = TestDb::new().await;
    let ds = Dataset {
        format: Format::Ndjson,
        csv: None,
        columns: vec![
            column("id", ColumnType::Bigint, false),
            column("kind", ColumnType::Text, false),
            column("user_id", ColumnType::Bigint, false),
            column("at", ColumnType::Timestamptz, false),
        ],
        primary_key: vec!["id".into()],
        on_conflict: OnConflict::Ignore,
        filterable: vec!["kind".into(), "user_id".into(), "at".into()],
        description: None,
        allow_destructive_changes: false,
    };
    db::migrate(&mut client, &datasets(&ds))
        .await
        .expect("migrate");
    // 200,000 rows: three kinds, 10 rows per user, one every 30 s (2,880 a
    // day), all of one load, as a large batch merged in slices leaves them.
    client
        .batch_execute(
            "INSERT INTO public.events
             SELECT g, (ARRAY['view', 'click', 'purchase'])[g % 3 + 1], g % 20000,
                    timestamptz '2024-01-01 00:00:00+00' + g * interval '30 seconds', 1
             FROM generate_series(1, 200000) g;
             ANALYZE public.events;",
        )
        .await
        .expect("rows");
    let day = || {
        vec![
            Filter::Gte("at".into(), "2024-01-20T00:00:00Z".into()),
            Filter::Lt("at".into(), "2024-01-21T00:00:00Z".into()),
        ]
    };
    let cases: Vec<(&str, Vec<Filter>, usize)> = vec![
        ("no filter", vec![], 100),
        (
            "a common value",
            vec![Filter::Eq("kind".into(), "purchase".into())],
            100,
        ),
        (
            "10 rows in 200,000",
            vec![Filter::Eq("user_id".into(), "4242".into())],
            10,
        ),
        ("a one-day range", day(), 100),
        (
            "a value and a range",
            [day(), vec![Filter::Eq("kind".into(), "click".into())]].concat(),
            100,
        ),
    ];
    for (what, filters, expected) in cases {
        let first = db::records(&client, "events", &ds, &filters, None, 100)
            .await
            .expect("page");
        assert_eq!(first.records.len(), expected, "{what}");
        // Custom plans, and the generic plans a cached statement may get.
        for (after, mode) in [None, first.next.as_ref()]
            .into_iter()
            .flat_map(|a| [(a, "auto"), (a, "force_generic_plan")])
        {
            client
                .batch_execute(&format!("SET plan_cache_mode = {mode}"))
                .await
                .expect("plan mode");
            let read = db::read("events", &ds, &filters, after, 100).expect("read");
            let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = read
                .params
                .iter()
                .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
                .collect();
            let plan: serde_json::Value = if mode == "auto" {
                client
                    .query_one(
                        &format!("EXPLAIN (ANALYZE, FORMAT JSON) {}", read.sql),
                        &refs,
                    )
                    .await
                    .expect("explain")
                    .get(0)
            } else {
                // A named statement, as the pool's cache keeps them (an
                // unnamed one is planned for its values whatever the mode).
                let values: Vec<String> = read
                    .params
                    .iter()
                    .map(|p| format!("'{}'", p.replace('\'', "''")))
                    .collect();
                let args = if values.is_empty() {
                    String::new()
                } else {
                    format!("({})", values.join(", "))
                };
                client
                    .batch_execute(&format!("PREPARE page AS {}", read.sql))
                    .await
                    .expect("prepare");
                let plan = client
                    .query_one(
                        &format!("EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE page{args}"),
                        &[],
                    )
                    .await
                    .expect("explain")
                    .get(0);
                client
                    .batch_execute("DEALLOCATE page")
                    .await
                    .expect("deallocate");
                plan
            };
            let explained = plan.to_string();
            if mode != "auto" && !read.params.is_empty() {
                assert!(explained.contains("$1"), "{what}: not generic: {explained}");
            }
            let mut nodes = Vec::new();
            plan_nodes(&plan[0]["Plan"], &mut nodes);
            let mut read_rows = 0;
            for node in nodes {
                let kind = node["Node Type"].as_str().unwrap_or_default();
                // The hidden loads and the rows they replaced are small
                // tables of the pipeline's, empty between large loads.
                let table = node["Relation Name"].as_str().unwrap_or_default();
                assert!(
                    kind != "Seq Scan" || ["hidden_loads", "shadows"].contains(&table),
                    "{what}: {explained}"
                );
                if kind.contains("Scan") && kind != "Subquery Scan" {
                    read_rows += node["Actual Rows"].as_u64().unwrap_or(0)
                        + node["Rows Removed by Filter"].as_u64().unwrap_or(0)
                        + node["Rows Removed by Index Recheck"].as_u64().unwrap_or(0);
                }
            }
            // A common value may be read off the key's index, skipping the
            // other values' rows: a few pages' worth, never the table.
            assert!(
                read_rows <= 5 * 101,
                "{what}: {read_rows} rows read: {explained}"
            );
        }
        // The next page follows on where the first ended: both are the
        // first 200 records of the same read.
        if let Some(after) = &first.next {
            let second = db::records(&client, "events", &ds, &filters, Some(after), 100)
                .await
                .expect("page 2");
            let both = db::records(&client, "events", &ds, &filters, None, 200)
                .await
                .expect("200");
            assert_eq!(
                [first.records.clone(), second.records].concat(),
                both.records,
                "{what}"
            );
        }
    }
    // A cursor from a read in another order is refused, not misread.
    let by_day = db::records(&client, "events", &ds, &day(), None, 10)
        .await
        .expect("page");
    let err = db::records(&client, "events", &ds, &[], by_day.next.as_ref(), 10)
        .await
        .expect_err("other order");
    assert!(matches!(err, db::DbError::Cursor), "{err}");
}

/// Whether the connection is encrypted, as the server sees it.
async fn uses_tls(client: &tokio_postgres::Client) -> bool {
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0)
}

/// The server's certificate file, which Debian's Postgres serves TLS with
/// (a self-signed certificate for `localhost`).
async fn server_certificate() -> std::path::PathBuf {
    let admin = connect(ADMIN).await;
    let path: String = admin
        .query_one("SHOW ssl_cert_file", &[])
        .await
        .expect("ssl_cert_file")
        .get(0);
    std::path::PathBuf::from(path)
}

#[tokio::test]
async fn tls_connections_check_the_server_certificate_and_name() {
    require!(Service::Postgres);
    use pipeline_shared::runtime::pool_with_roots;
    let cert = server_certificate().await;
    // Trusted CA, matching name: TLS.
    let pool = pool_with_roots(
        "postgres://postgres@localhost:5432/postgres?sslmode=require",
        1,
        Some(cert.clone()),
    )
    .expect("pool");
    let client = pool.get().await.expect("a TLS connection to localhost");
    assert!(uses_tls(&client).await);
    // The certificate names localhost, not 127.0.0.1: refused.
    let pool = pool_with_roots(
        "postgres://postgres@127.0.0.1:5432/postgres?sslmode=require",
        1,
        Some(cert),
    )
    .expect("pool");
    assert!(pool.get().await.is_err());
    // A CA that did not sign the server's certificate: refused.
    let other = tempfile::NamedTempFile::new().expect("temp file");
    let unrelated = include_str!("fixtures/unrelated-ca.pem");
    std::fs::write(other.path(), unrelated).expect("write");
    let pool = pool_with_roots(
        "postgres://postgres@localhost:5432/postgres?sslmode=require",
        1,
        Some(other.path().to_path_buf()),
    )
    .expect("pool");
    assert!(pool.get().await.is_err());
    // No CA file: a configuration error, never unverified TLS.
    assert!(
        pool_with_roots(
            "postgres://postgres@localhost/postgres?sslmode=require",
            1,
            None
        )
        .is_err()
    );
}

/// The IAM connector: every new connection signs a token as its password and
/// uses verified TLS. The local server trusts any password, so this checks the
/// wiring and the TLS, not AWS's acceptance of the token.
#[tokio::test]
async fn iam_connections_sign_a_token_and_use_tls() {
    require!(Service::Postgres);
    use pipeline_shared::iam::IamConnect;
    use pipeline_shared::runtime::{iam_pool, tls};
    let cert = server_certificate().await;
    let credentials =
        aws_credential_types::Credentials::new("AKIDEXAMPLE", "secret", None, None, "test");
    let connect = IamConnect {
        credentials: aws_credential_types::provider::SharedCredentialsProvider::new(credentials),
        region: "eu-west-1".into(),
        tls: tls(Some(cert)).expect("tls"),
    };
    let pool = iam_pool("localhost", 5432, "postgres", "postgres", connect, 1).expect("pool");
    let client = pool.get().await.expect("an IAM/TLS connection");
    assert!(uses_tls(&client).await);
}

/// Waits until a session of database `name` runs a statement that starts
/// with `prefix` and waits on a lock: its process id.
async fn waiting_on_a_lock(admin: &Client, name: &str, prefix: &str) -> i32 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let row = admin
            .query_opt(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND query LIKE $2 || '%' AND wait_event_type = 'Lock'",
                &[&name, &prefix],
            )
            .await
            .expect("sessions");
        if let Some(row) = row {
            return row.get(0);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no session waits in `{prefix}`"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Whether the table has the index, and it is valid.
async fn valid_index(client: &Client, index: &str) -> Option<bool> {
    client
        .query_opt(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = $1",
            &[&index],
        )
        .await
        .expect("index")
        .map(|r| r.get(0))
}

/// A new filter's index is built while a write is in flight: the build
/// waits for that write, and meanwhile loads go on (a writer that gives up
/// after 2 s on a lock gets through; a plain `CREATE INDEX` in the
/// migration's transaction queued a lock that stopped every writer behind
/// it). A build stopped halfway (its session killed) leaves an invalid index,
/// which the next migration drops and builds again.
#[tokio::test]
async fn index_builds_do_not_block_loads_and_a_stopped_one_is_completed() {
    require!(Service::Postgres);
    let (db, mut client) = TestDb::new().await;
    let admin = connect(ADMIN).await;
    let mut ds = events(OnConflict::Ignore);
    db::migrate(&mut client, &datasets(&ds))
        .await
        .expect("migrate");

    let mut holder = db.client().await;
    let open = holder.transaction().await.expect("begin");
    open.execute("INSERT INTO public.events (id, kind) VALUES (1, 'a')", &[])
        .await
        .expect("a write in flight");
    ds.filterable.push("amount".into());
    let mut migrating_client = db.client().await;
    let wanted = datasets(&ds);
    let migrating = tokio::spawn(async move { db::migrate(&mut migrating_client, &wanted).await });
    waiting_on_a_lock(&admin, &db.name, "CREATE INDEX").await;
    let writer = db.client().await;
    writer
        .batch_execute(
            "SET lock_timeout = '2s'; INSERT INTO public.events (id, kind) VALUES (2, 'b')",
        )
        .await
        .expect("a load while the index is built");
    open.commit().await.expect("commit");
    let report = migrating.await.expect("task").expect("migrate");
    assert_eq!(
        report.statements,
        [
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS \"events_amount_key_idx\" ON public.\"events\" (\"amount\", \"id\")"
        ]
    );
    assert_eq!(
        valid_index(&client, "events_amount_key_idx").await,
        Some(true)
    );

    // A build killed halfway: its index is left, invalid.
    let open = holder.transaction().await.expect("begin");
    open.execute("INSERT INTO public.events (id, kind) VALUES (3, 'c')", &[])
        .await
        .expect("a write in flight");
    let builder = db.client().await;
    let build = tokio::spawn(async move {
        builder
            .batch_execute(
                "CREATE INDEX CONCURRENTLY \"events_kind2_key_idx\" ON public.events (kind, id)",
            )
            .await
    });
    let pid = waiting_on_a_lock(&admin, &db.name, "CREATE INDEX CONCURRENTLY").await;
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .expect("kill the build");
    assert!(build.await.expect("task").is_err());
    open.commit().await.expect("commit");
    assert_eq!(
        valid_index(&client, "events_kind2_key_idx").await,
        Some(false)
    );
    ds.columns.push(column("kind2", ColumnType::Text, true));
    ds.filterable.push("kind2".into());
    let report = db::migrate(&mut client, &datasets(&ds))
        .await
        .expect("migrate again");
    assert_eq!(
        report.statements,
        [
            "ALTER TABLE public.\"events\" ADD COLUMN IF NOT EXISTS \"kind2\" text",
            "DROP INDEX CONCURRENTLY IF EXISTS public.\"events_kind2_key_idx\"",
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS \"events_kind2_key_idx\" ON public.\"events\" (\"kind2\", \"id\")",
        ]
    );
    assert_eq!(
        valid_index(&client, "events_kind2_key_idx").await,
        Some(true)
    );
}

/// A column added while a load holds its table (a transaction in flight):
/// the migration's change waits at most 2 s at a time for the table, so
/// the writes behind it are held no longer; the pipeline's own tables are
/// not locked (ingest's and the loaders' writes to `pipeline.batches` go
/// on, where the migration's transaction used to lock them until it got
/// the table); once the load commits, the migration completes.
#[tokio::test]
async fn a_column_added_during_a_load_holds_up_no_write() {
    require!(Service::Postgres);
    let (db, mut client) = TestDb::new().await;
    let admin = connect(ADMIN).await;
    let mut ds = events(OnConflict::Ignore);
    db::migrate(&mut client, &datasets(&ds))
        .await
        .expect("migrate");

    let mut holder = db.client().await;
    let open = holder.transaction().await.expect("begin");
    open.execute("INSERT INTO public.events (id, kind) VALUES (1, 'a')", &[])
        .await
        .expect("a load in flight");
    ds.columns.push(column("note", ColumnType::Text, true));
    let mut migrating_client = db.client().await;
    let wanted = datasets(&ds);
    let migrating = tokio::spawn(async move { db::migrate(&mut migrating_client, &wanted).await });
    waiting_on_a_lock(&admin, &db.name, "ALTER TABLE public").await;
    let writer = db.client().await;
    writer
        .batch_execute(
            "SET lock_timeout = '1s';
             BEGIN; LOCK TABLE pipeline.batches IN ROW EXCLUSIVE MODE; COMMIT;
             SET lock_timeout = '3s';
             INSERT INTO public.events (id, kind) VALUES (2, 'b')",
        )
        .await
        .expect("writes while the migration waits for the table");
    open.commit().await.expect("commit");
    let report = migrating.await.expect("task").expect("migrate");
    assert_eq!(
        report.statements,
        ["ALTER TABLE public.\"events\" ADD COLUMN IF NOT EXISTS \"note\" text"]
    );
    let rows: i64 = client
        .query_one("SELECT count(*) FROM public.events WHERE note IS NULL", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(rows, 2);
}

/// The pipeline's own tables and trigger change only when their statements
/// did: a second migration leaves them alone (the trigger is the same
/// one). After a previous version's migration remade them its own way (a
/// rollback), the next migration makes them anew.
/// The oid of the trigger the bookkeeping makes: another when it is made anew.
async fn trigger_oid(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one(
            "SELECT oid::bigint FROM pg_trigger WHERE tgname = 'batch_done'",
            &[],
        )
        .await
        .expect("trigger")
        .get(0)
}

#[tokio::test]
async fn bookkeeping_runs_when_it_changed_or_another_version_ran_its_own() {
    require!(Service::Postgres);
    let (_db, mut client) = TestDb::new().await;
    let ds = datasets(&events(OnConflict::Ignore));
    let body = "SELECT prosrc FROM pg_proc WHERE proname = 'batch_done'";
    db::migrate(&mut client, &ds).await.expect("migrate");
    let first = trigger_oid(&client).await;
    db::migrate(&mut client, &ds).await.expect("migrate again");
    assert_eq!(first, trigger_oid(&client).await, "left alone");

    // A previous version's bookkeeping: its own function, the trigger made anew.
    client
        .batch_execute(
            "CREATE OR REPLACE FUNCTION pipeline.batch_done() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN RETURN NULL; END $$;
             DROP TRIGGER batch_done ON pipeline.batches;
             CREATE TRIGGER batch_done AFTER UPDATE OF status ON pipeline.batches FOR EACH ROW
                 EXECUTE FUNCTION pipeline.batch_done();",
        )
        .await
        .expect("the previous version's bookkeeping");
    db::migrate(&mut client, &ds)
        .await
        .expect("migrate after it");
    let source: String = client.query_one(body, &[]).await.expect("function").get(0);
    assert!(source.contains("pipeline.hidden_loads"), "{source}");
}

/// A TCP relay to Postgres whose open connections can be made to go
/// silent: what it has accepted it keeps open but no longer passes on, as a
/// connection looks to a Lambda environment thawed after RDS Proxy closed
/// it for idleness or the network path forgot it. New connections still
/// go through.
struct Relay {
    port: u16,
    open: Arc<std::sync::Mutex<Vec<Arc<std::sync::atomic::AtomicBool>>>>,
}

impl Relay {
    async fn start() -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("address").port();
        let open: Arc<std::sync::Mutex<Vec<Arc<std::sync::atomic::AtomicBool>>>> = Arc::default();
        let registry = open.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect("127.0.0.1:5432").await else {
                    return;
                };
                let silent = Arc::new(std::sync::atomic::AtomicBool::new(false));
                registry.lock().expect("registry").push(silent.clone());
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(Relay::pass(client_read, server_write, silent.clone()));
                tokio::spawn(Relay::pass(server_read, client_write, silent));
            }
        });
        Relay { port, open }
    }

    /// Passes bytes on until the connection goes silent; then reads and
    /// drops them, keeping both ends open.
    async fn pass(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        silent: Arc<std::sync::atomic::AtomicBool>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = from.read(&mut buf).await {
            if n == 0 {
                return;
            }
            if !silent.load(std::sync::atomic::Ordering::SeqCst)
                && to.write_all(&buf[..n]).await.is_err()
            {
                return;
            }
        }
    }

    fn silence_open_connections(&self) {
        for silent in self.open.lock().expect("registry").iter() {
            silent.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// The server process of a connection from `pool`, within 3 s.
async fn backend_of(pool: &deadpool_postgres::Pool) -> i32 {
    let client = pool.get().await.expect("a connection");
    tokio::time::timeout(
        std::time::Duration::from_secs(3),
        client.query_one("SELECT pg_backend_pid()", &[]),
    )
    .await
    .expect("an answer within 3 s")
    .expect("a backend")
    .get(0)
}

/// After a quiet spell longer than the pool's idle limit, a request gets a
/// new connection rather than the old one, which no longer answers. Before,
/// the pool handed out the old connection (it did not look closed), and the
/// read hung on it (or, against RDS Proxy, failed: a 503 for the first
/// request after 30 minutes of quiet). A connection used within the limit
/// is reused.
#[tokio::test]
async fn a_connection_idle_past_the_limit_is_replaced_not_reused() {
    require!(Service::Postgres);
    let relay = Relay::start().await;
    let config: tokio_postgres::Config = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres",
        relay.port
    )
    .parse()
    .expect("config");
    let manager = deadpool_postgres::Manager::from_config(
        config,
        NoTls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    let idle_limit = std::time::Duration::from_secs(1);
    let pool = pipeline_shared::runtime::bounded_pool(manager, 1, idle_limit).expect("pool");
    let first = backend_of(&pool).await;
    let again = backend_of(&pool).await;
    assert_eq!(first, again, "a connection used just now is reused");
    relay.silence_open_connections();
    // The quiet spell itself: longer than the limit.
    tokio::time::sleep(idle_limit * 2).await;
    let after = backend_of(&pool).await;
    assert_ne!(after, first);
}

/// Text no compression shortens: printable characters from random bytes.
fn incompressible(len: usize) -> String {
    std::iter::repeat_with(|| *uuid::Uuid::new_v4().as_bytes())
        .flatten()
        .map(|b| char::from(b'0' + b % 75))
        .filter(|c| *c != '"' && *c != '\\')
        .take(len)
        .collect()
}

/// The decoder's limit on values of indexed columns
/// (`Dataset::indexed_value_limit`) is one Postgres' indexes can hold:
/// values at the limit, which no compression shortens, load into the
/// real table with its key and filter indexes, for a text key beside a
/// text filter (1,200 bytes each) and for a filter beside a numeric key
/// (2,400 bytes).
#[tokio::test]
async fn values_at_the_index_limit_load_into_the_real_indexes() {
    require!(Service::Postgres);
    for (key_kind, key_len, kind_len) in [
        (ColumnType::Text, 1_200, 1_200),
        (ColumnType::Bigint, 0, 2_400),
    ] {
        let (_db, mut client) = TestDb::new().await;
        let ds = Dataset {
            columns: vec![
                column("id", key_kind, false),
                column("kind", ColumnType::Text, false),
                column("amount", ColumnType::Numeric, true),
            ],
            ..events(OnConflict::Ignore)
        };
        assert_eq!(ds.indexed_value_limit("kind"), Some(kind_len));
        db::migrate(&mut client, &datasets(&ds))
            .await
            .expect("migrate");
        let id = new_batch(&client, "raw/events/limit").await;
        let body: String = (1..=3)
            .map(|i| {
                let key = match key_kind {
                    ColumnType::Text => format!("\"{i}{}\"", incompressible(key_len - 1)),
                    _ => i.to_string(),
                };
                format!(
                    "{{\"id\":{key},\"kind\":\"{}\"}}\n",
                    incompressible(kind_len)
                )
            })
            .collect();
        let outcome = db::load(&mut client, "events", &ds, id, object(&body))
            .await
            .expect("load");
        assert!(
            matches!(outcome, LoadOutcome::Loaded { inserted: 3, .. }),
            "{outcome:?}"
        );
    }
}
