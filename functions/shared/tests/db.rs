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
        name: name.into(),
        kind,
        nullable,
        description: None,
    }
}

fn events(on_conflict: OnConflict) -> Dataset {
    Dataset {
        format: Format::Ndjson,
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
            "CREATE TABLE public.\"events\" (\"id\" bigint NOT NULL, \"kind\" text NOT NULL, \"amount\" numeric, PRIMARY KEY (\"id\"))",
            "CREATE INDEX IF NOT EXISTS \"events_kind_idx\" ON public.\"events\" (\"kind\")",
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
    // Additive: a nullable column and an index.
    ds.columns.push(column("note", ColumnType::Text, true));
    ds.filterable.push("note".into());
    let report = db::migrate(&mut client, &datasets(&ds))
        .await
        .expect("additive");
    assert_eq!(
        report.statements,
        vec![
            "ALTER TABLE public.\"events\" ADD COLUMN \"note\" text",
            "CREATE INDEX IF NOT EXISTS \"events_note_idx\" ON public.\"events\" (\"note\")",
        ]
    );
    // Destructive: refused, and nothing changes.
    let mut bad = ds.clone();
    bad.columns.retain(|c| c.name != "amount");
    bad.columns[1].kind = ColumnType::Int;
    let err = db::migrate(&mut client, &datasets(&bad))
        .await
        .expect_err("destructive");
    assert_eq!(
        err.to_string(),
        "migrating dataset `events` needs changes that can lose data: drop column `amount`; change column `kind` from text to integer"
    );
    let version: i32 = client
        .query_one(
            "SELECT version FROM pipeline.datasets WHERE name = 'events'",
            &[],
        )
        .await
        .expect("version")
        .get(0);
    assert_eq!(version, 2);
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
    let outcome = db::load(&mut client, "events", &ds, id, object(&body))
        .await
        .expect("load");
    let LoadOutcome::Invalid { error } = outcome else {
        panic!("expected invalid, got {outcome:?}")
    };
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
    let after: Vec<String> = page
        .last_key
        .expect("more")
        .iter()
        .map(|v| v.to_string())
        .collect();
    let page = db::records(&client, "events", &ds, &filters, Some(&after), 2)
        .await
        .expect("page 2");
    let ids: Vec<i64> = page
        .records
        .iter()
        .filter_map(|r| r["id"].as_i64())
        .collect();
    assert_eq!(ids, vec![7]);
    assert!(page.last_key.is_none());
    // A value that is not of the column's type is a database error, not an injection.
    let bad = vec![Filter::Eq("id".into(), "1; DROP TABLE events".into())];
    assert!(
        db::records(&client, "events", &ds, &bad, None, 2)
            .await
            .is_err()
    );
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
