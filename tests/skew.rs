//! Two versions side by side, as during every canary and after a rollback:
//! the handlers of the previous version (its datasets) and of the new one
//! over the same database and objects, the migrations run as a deploy runs
//! them (the new version's, before it takes traffic). Whichever ingest
//! accepts a batch and whichever loader meets it, the batch loads, exactly
//! once, with the values it was sent with.

use crate::common::{self, Scratch};

use pipeline_testkit::{Service, require};

use bytes::Bytes;
use pipeline_shared::api::Context;
use pipeline_shared::{Column, ColumnType, Dataset};
use serde_json::Value;

/// dev's `events`, as the previous version ships it.
fn events() -> Dataset {
    common::dev_dataset("events")
}

fn context(db: &Scratch, objects: &std::path::Path, events: Dataset) -> Context {
    let datasets = [("events".to_string(), events)].into();
    common::handlers_context(db, "", 2, datasets, objects)
}

/// The previous and the new version over one database, migrated to the
/// previous version's datasets; `deploy` migrates to the new one's, as a
/// deploy does before the new version takes traffic.
struct Versions {
    old: Context,
    new: Context,
    _db: Scratch,
    _objects: tempfile::TempDir,
}

impl Versions {
    async fn deploy(&self) {
        loader::migrate(&self.new)
            .await
            .expect("the new version's migration");
    }
}

async fn versions(new: Dataset) -> Versions {
    let db = Scratch::new("skew").await;
    let objects = tempfile::tempdir().expect("temp dir");
    let old = context(&db, objects.path(), events());
    loader::migrate(&old)
        .await
        .expect("the previous version's migration");
    let new = context(&db, objects.path(), new);
    Versions {
        old,
        new,
        _db: db,
        _objects: objects,
    }
}

/// Posts one record to a version's ingest: its batch id and object key.
async fn post(ingest: &Context, record: Value) -> (uuid::Uuid, String) {
    post_to(ingest, "events", record).await
}

async fn post_to(ingest: &Context, dataset: &str, record: Value) -> (uuid::Uuid, String) {
    let body = Bytes::from(format!("{record}\n"));
    common::post_batch(ingest, dataset, "application/x-ndjson", body).await
}

/// Has a version's loader load a batch from its S3 notification: the batch
/// as the API answers it.
async fn load(loader: &Context, (batch_id, key): (uuid::Uuid, String)) -> Value {
    let text = std::fs::read_to_string(common::repo().join("tests/fixtures/sqs-s3-events.json"))
        .expect("fixture");
    let mut event: aws_lambda_events::event::sqs::SqsEvent =
        serde_json::from_str(&text.replace("OBJECT_KEY", &key)).expect("SQS event");
    event.records.truncate(1);
    let handled = loader::handle(loader, event).await;
    assert!(
        handled.batch_item_failures.is_empty(),
        "the load was retried"
    );
    let request = http::Request::get(format!("/v1/batches/{batch_id}"))
        .extension(pipeline_shared::api::Access::Any)
        .body(Bytes::new())
        .expect("request");
    serde_json::from_slice(query::handle(loader, request).await.body()).expect("json")
}

fn record(n: u32) -> Value {
    serde_json::json!({
        "event_id": format!("00000000-0000-4000-8000-{n:012}"),
        "occurred_at": "2024-01-31T12:00:00Z",
        "source": "web",
        "kind": "click",
        "user_id": n,
    })
}

/// A row of the table, as text.
async fn row(ctx: &Context, n: u32, columns: &str) -> Vec<Option<String>> {
    let client = ctx.pool.get().await.expect("client");
    let id: uuid::Uuid = format!("00000000-0000-4000-8000-{n:012}")
        .parse()
        .expect("uuid");
    let row = client
        .query_one(
            &format!("SELECT {columns} FROM public.events WHERE event_id = $1"),
            &[&id],
        )
        .await
        .expect("row");
    (0..row.len()).map(|i| row.get(i)).collect()
}

fn assert_loaded(batch: &Value) {
    assert_eq!(
        (&batch["status"], &batch["inserted"]),
        (&Value::from("loaded"), &Value::from(1)),
        "{batch}"
    );
}

/// A nullable column added: the previous loader loads the new ingest's
/// batches with it (before: "unknown column", the batch failed for good),
/// the new loader loads the batches accepted before the deploy without it,
/// and once the migration ran the previous ingest takes the new column too
/// (it checks against the database's current definition).
#[tokio::test]
async fn batches_load_across_versions_when_a_column_is_added() {
    require!(Service::Postgres);
    let mut added = events();
    added.columns.push(Column {
        nullable: true,
        ..Column::new("note", ColumnType::Text)
    });
    let v = versions(added).await;
    let before = post(&v.old, record(2)).await;
    v.deploy().await;
    let mut with_note = record(1);
    with_note["note"] = "from the new version".into();
    assert_loaded(&load(&v.old, post(&v.new, with_note).await).await);
    assert_loaded(&load(&v.new, before).await);
    // A fresh instance of the previous version (an instance reads the
    // current definitions again at most every 5 s).
    let old = Context {
        definitions: Default::default(),
        ..v.old.clone()
    };
    let mut to_old = record(3);
    to_old["note"] = "to the previous version".into();
    assert_loaded(&load(&old, post(&old, to_old).await).await);
    assert_eq!(
        row(&v.new, 1, "note").await,
        [Some("from the new version".into())]
    );
    assert_eq!(row(&v.new, 2, "note").await, [None]);
    assert_eq!(
        row(&v.new, 3, "note").await,
        [Some("to the previous version".into())]
    );
}

/// A required column added with a default: not destructive, so the
/// rollout is gradual. Rows loaded without it (batches accepted before the
/// deploy, or loaded by the previous loader, which does not know it) take
/// the table's default; a batch that sends it keeps its value whichever
/// loader meets it; a batch that leaves it out takes the default from the
/// new decoder too.
#[tokio::test]
async fn batches_load_across_versions_when_a_column_with_a_default_is_added() {
    require!(Service::Postgres);
    let mut added = events();
    added.columns.push(Column {
        default: Some(pipeline_shared::dataset::DefaultValue::Text(
            "web-default".into(),
        )),
        ..Column::new("channel", ColumnType::Text)
    });
    let v = versions(added).await;
    let before = post(&v.old, record(1)).await;
    v.deploy().await;
    let mut with_channel = record(2);
    with_channel["channel"] = "app".into();
    assert_loaded(&load(&v.old, post(&v.new, with_channel).await).await);
    assert_loaded(&load(&v.old, post(&v.new, record(3)).await).await);
    assert_loaded(&load(&v.new, post(&v.new, record(4)).await).await);
    assert_loaded(&load(&v.new, before).await);
    for (n, channel) in [
        (1, "web-default"),
        (2, "app"),
        (3, "web-default"),
        (4, "web-default"),
    ] {
        assert_eq!(
            row(&v.new, n, "channel").await,
            [Some(channel.into())],
            "record {n}"
        );
    }
}

/// A required column removed: it is kept, nullable, so that the batches
/// accepted before the deploy (which carry it) load with the new loader,
/// and the new ingest's (which do not) with the previous loader; no data is
/// lost.
#[tokio::test]
async fn batches_load_across_versions_when_a_column_is_removed() {
    require!(Service::Postgres);
    let mut removed = events();
    removed.columns.retain(|c| c.name != "source");
    removed.filterable.retain(|c| c != "source");
    let v = versions(removed).await;
    let before = post(&v.old, record(1)).await;
    v.deploy().await;
    let mut without = record(2);
    without
        .as_object_mut()
        .map(|o| o.remove("source"))
        .expect("an object");
    assert_loaded(&load(&v.old, post(&v.new, without).await).await);
    assert_loaded(&load(&v.new, before).await);
    assert_eq!(row(&v.new, 1, "source").await, [Some("web".into())]);
    assert_eq!(row(&v.new, 2, "source").await, [None]);
}

/// A column's format changed: each batch is read with the format it was
/// checked against, whichever loader meets it.
#[tokio::test]
async fn batches_load_across_versions_when_a_format_changes() {
    require!(Service::Postgres);
    let mut reformatted = events();
    for c in &mut reformatted.columns {
        if c.name == "occurred_at" {
            c.format = Some("%d.%m.%Y %H:%M:%S".into());
            c.timezone = Some("Europe/Paris".into());
        }
    }
    let v = versions(reformatted).await;
    let before = post(&v.old, record(2)).await;
    v.deploy().await;
    let mut new_format = record(1);
    new_format["occurred_at"] = "31.01.2024 13:00:00".into();
    assert_loaded(&load(&v.old, post(&v.new, new_format).await).await);
    assert_loaded(&load(&v.new, before).await);
    let at = "to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI')";
    assert_eq!(row(&v.new, 1, at).await, [Some("2024-01-31 12:00".into())]);
    assert_eq!(row(&v.new, 2, at).await, [Some("2024-01-31 12:00".into())]);
}

/// A dataset added by the new version: the previous loader, which does not
/// know it, loads its batches with the definition they were accepted under
/// (before, it skipped them and they stayed `received`).
#[tokio::test]
async fn a_dataset_the_previous_loader_does_not_know_loads() {
    require!(Service::Postgres);
    let v = versions(events()).await;
    let mut notes = events();
    notes.filterable.clear();
    let new = Context {
        datasets: [
            ("events".to_string(), events()),
            ("notes".to_string(), notes),
        ]
        .into(),
        ..v.new.clone()
    };
    loader::migrate(&new)
        .await
        .expect("the new version's migration");
    assert_loaded(&load(&v.old, post_to(&new, "notes", record(1)).await).await);
}
