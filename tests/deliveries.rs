//! The loader's deliveries on the real Postgres, through its handler: a
//! connection that saw an error is closed rather than pooled, and the last
//! delivery SQS allows a message fails its batch with the error instead of
//! leaving it `loading` behind a dead letter.

use crate::common::{self, Scratch, connect};

use pipeline_testkit::{Service, require};

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use bytes::Bytes;
use pipeline_shared::api::Context;
use pipeline_shared::db;
use std::time::{Duration, Instant};

/// dev's datasets on one pooled connection whose statements give up on a
/// lock after 200 ms; objects in `objects`; messages dead-lettered after 5
/// deliveries.
async fn context(db: &Scratch, objects: &std::path::Path) -> Context {
    let mut loader = pipeline_cli::spec::Loader::new(Some(common::repo().join("environments")));
    let env = loader.load("dev").expect("dev");
    let options = "?options=-c%20lock_timeout%3D200";
    let ctx = common::handlers_context(db, options, 1, env.spec.datasets.clone(), objects);
    loader::migrate(&ctx).await.expect("migrate");
    ctx
}

/// Posts one valid event to ingest: its batch id and object key.
async fn post(ctx: &Context) -> (uuid::Uuid, String) {
    let body = "{\"event_id\":\"00000000-0000-4000-8000-000000000001\",\"occurred_at\":\"2024-01-31T12:00:00Z\",\"source\":\"web\",\"kind\":\"click\",\"user_id\":1,\"amount\":\"1.25\",\"payload\":{}}\n";
    let request = http::Request::post("/v1/datasets/events/batches")
        .header("content-type", "application/x-ndjson")
        .extension(pipeline_shared::api::Access::Any)
        .body(Bytes::from(body))
        .expect("request");
    let response = ingest::handle(ctx, request).await;
    assert_eq!(response.status(), 202);
    let accepted: serde_json::Value = serde_json::from_slice(response.body()).expect("json");
    let batch_id = accepted["batch_id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("batch id");
    let client = ctx.pool.get().await.expect("client");
    let batch = db::batch(&**client, batch_id)
        .await
        .expect("batch")
        .expect("recorded");
    (batch_id, batch.object_key)
}

/// The S3 notification of `key` as SQS delivers it for the `receives`th time.
fn delivery(key: &str, receives: u32) -> (SqsEvent, String) {
    let text = std::fs::read_to_string(common::repo().join("tests/fixtures/sqs-s3-events.json"))
        .expect("fixture");
    let mut event: SqsEvent =
        serde_json::from_str(&text.replace("OBJECT_KEY", key)).expect("SQS event");
    event.records.truncate(1);
    let message: &mut SqsMessage = &mut event.records[0];
    message
        .attributes
        .insert("ApproximateReceiveCount".into(), receives.to_string());
    let id = message.message_id.clone().unwrap_or_default();
    (event, id)
}

async fn backend_pid(ctx: &Context) -> i32 {
    let client = ctx.pool.get().await.expect("client");
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0)
}

/// A load that fails on the database (its batch locked by someone else, so
/// the lock timeout stops it) reports the message for retry and closes its
/// connection: the pool's next connection is another session, and the
/// first one leaves the server.
#[tokio::test]
async fn a_connection_that_saw_an_error_is_closed_not_pooled() {
    require!(Service::Postgres);
    let db = Scratch::new("loader").await;
    let objects = tempfile::tempdir().expect("temp dir");
    let ctx = context(&db, objects.path()).await;
    let (batch_id, key) = post(&ctx).await;
    let before = backend_pid(&ctx).await;

    let mut holder = connect(&db.config()).await;
    let tx = holder.transaction().await.expect("begin");
    tx.execute(
        "SELECT 1 FROM pipeline.batches WHERE batch_id = $1 FOR UPDATE",
        &[&batch_id],
    )
    .await
    .expect("lock the batch");
    let (event, id) = delivery(&key, 1);
    let response = loader::handle(&ctx, event).await;
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failed, vec![id.as_str()]);
    let after = backend_pid(&ctx).await;
    assert_ne!(before, after, "the connection that failed was pooled again");
    tx.rollback().await.expect("rollback");

    let admin = connect(common::ADMIN).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let open: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                &[&before],
            )
            .await
            .expect("sessions")
            .get(0);
        if open == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "session {before} is still open after its error"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Not the last delivery: the batch waits for the next one.
    let client = ctx.pool.get().await.expect("client");
    let batch = db::batch(&**client, batch_id).await.expect("batch");
    assert_eq!(
        batch.map(|b| b.answer.status.to_string()).as_deref(),
        Some("received")
    );
}

/// A batch whose object cannot be read: deliveries before the last are
/// retried and leave the batch open; the last one fails the batch with the
/// error and completes the message, so nothing is dead-lettered and the
/// batch's status says why. A delivery after that changes nothing.
#[tokio::test]
async fn the_last_delivery_fails_the_batch_with_its_error() {
    require!(Service::Postgres);
    let db = Scratch::new("loader").await;
    let objects = tempfile::tempdir().expect("temp dir");
    let ctx = context(&db, objects.path()).await;
    let (batch_id, key) = post(&ctx).await;
    std::fs::remove_file(objects.path().join(&key)).expect("remove the object");

    let (event, id) = delivery(&key, 4);
    let response = loader::handle(&ctx, event).await;
    assert_eq!(response.batch_item_failures.len(), 1);
    assert_eq!(response.batch_item_failures[0].item_identifier, id);
    let status = |ctx: &Context| {
        let pool = ctx.pool.clone();
        async move {
            let client = pool.get().await.expect("client");
            db::batch(&**client, batch_id)
                .await
                .expect("batch")
                .expect("recorded")
                .answer
        }
    };
    assert!(!status(&ctx).await.status.is_final());

    let (event, _) = delivery(&key, 5);
    let response = loader::handle(&ctx, event).await;
    assert!(
        response.batch_item_failures.is_empty(),
        "the last delivery was left to the dead-letter queue"
    );
    let batch = status(&ctx).await;
    assert_eq!(batch.status.to_string(), "failed");
    assert_eq!(batch.error, None);
    assert_eq!(batch.inserted, Some(0));
    let failure = batch.failure.unwrap_or_default();
    assert!(
        failure.starts_with("gave up after 5 deliveries: ") && failure.contains(&key),
        "{failure}"
    );

    // Its status as the API answers it.
    let request = http::Request::get(format!("/v1/batches/{batch_id}"))
        .extension(pipeline_shared::api::Access::Any)
        .body(Bytes::new())
        .expect("request");
    let response = query::handle(&ctx, request).await;
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = serde_json::from_slice(response.body()).expect("json");
    assert_eq!(answer["status"], "failed");
    assert_eq!(answer["failure"], failure.as_str());

    let (event, _) = delivery(&key, 1);
    assert!(
        loader::handle(&ctx, event)
            .await
            .batch_item_failures
            .is_empty()
    );
    assert_eq!(
        status(&ctx).await.failure.as_deref(),
        Some(failure.as_str())
    );
}
