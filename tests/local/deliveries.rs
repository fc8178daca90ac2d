//! The local queue delivers a message at most `max_receives` times, as SQS
//! does, and no batch is left `loading` behind a spent message: the
//! loader's last delivery fails it with its error, and a message whose last
//! delivery was abandoned fails its batch as it goes to the dead letters.

use super::*;

/// Records a batch whose object was never stored, and puts the S3
/// notification of that object on the local queue, received `receives`
/// times already: its batch id and object key.
async fn unreadable_batch(db: &tokio_postgres::Client, receives: i32) -> (String, String) {
    let batch_id = uuid::Uuid::now_v7();
    let key = format!("raw/events/2024-01-31/{batch_id}.ndjson");
    db.execute(
        "INSERT INTO pipeline.batches (batch_id, dataset, object_key, status) VALUES ($1, 'events', $2, 'received')",
        &[&batch_id, &key],
    )
    .await
    .expect("record the batch");
    // As S3 writes it: the body of the SQS event fixture's first message.
    let fixture = std::fs::read_to_string(common::repo().join("tests/fixtures/sqs-s3-events.json"))
        .expect("fixture");
    let event: Value = serde_json::from_str(&fixture).expect("fixture JSON");
    let notification = event["Records"][0]["body"]
        .as_str()
        .expect("a message body")
        .replace("OBJECT_KEY", &key);
    db.execute(
        "INSERT INTO pipeline.local_queue (body, object_key, receives) VALUES ($1, $2, $3)",
        &[&notification, &key, &receives],
    )
    .await
    .expect("queue the notification");
    (batch_id.to_string(), key)
}

#[tokio::test]
async fn a_message_is_delivered_at_most_max_receives_times_and_its_batch_fails() {
    require!(Service::Postgres);
    let local = Local::start("queue:\n  max_receives: 3\n").await;
    let db = local.db().await;

    // Delivered three times, failing each time: the third fails the batch.
    let (spent, key) = unreadable_batch(&db, 0).await;
    let batch = local.settled(&spent).await;
    assert_eq!(batch["status"], "failed", "{batch}");
    assert_eq!(batch["error"], Value::Null);
    let failure = batch["failure"].as_str().unwrap_or_default();
    assert!(
        failure.starts_with("gave up after 3 deliveries: ") && failure.contains(&key),
        "{failure}"
    );
    // The batch is failed inside the invocation; the worker deletes the
    // message once the invocation has answered.
    super::chunks::wait_for(
        &db,
        &format!(
            "SELECT count(*) FROM (SELECT count(*) FROM pipeline.local_queue WHERE object_key = '{key}') n WHERE count = 0"
        ),
        "the message's deletion from the queue",
    )
    .await;

    // Received three times already, by a process that died with it: never
    // delivered again, but dead-lettered, and its batch fails saying so.
    let (abandoned, key) = unreadable_batch(&db, 3).await;
    let batch = local.settled(&abandoned).await;
    assert_eq!(batch["status"], "failed", "{batch}");
    assert_eq!(
        batch["failure"],
        "its message was dead-lettered after 3 deliveries; the last one did not finish"
    );
    let row = db
        .query_one(
            "SELECT receives, dead FROM pipeline.local_queue WHERE object_key = $1",
            &[&key],
        )
        .await
        .expect("the dead letter");
    assert_eq!((row.get::<_, i32>(0), row.get::<_, bool>(1)), (3, true));
}

/// A load that outlasts the loader's timeout (its table locked by someone
/// else) is stopped at the deadline, as Lambda stops it: its connection is
/// closed, so its session ends on the server instead of holding the batch's
/// lock; the next delivery tries again, and the last one fails the batch
/// with the reason. Nothing is loaded, and no session of the pipeline is
/// left waiting.
#[tokio::test]
async fn a_load_past_the_function_timeout_is_stopped_and_the_last_one_fails_its_batch() {
    require!(Service::Postgres);
    let local =
        Local::start_with("queue:\n  max_receives: 2\n", &["--function-timeout", "5"]).await;
    let mut db = local.db().await;
    let lock = db.transaction().await.expect("begin");
    lock.batch_execute("LOCK TABLE public.events IN SHARE MODE")
        .await
        .expect("lock the table");
    let (status, accepted) = local
        .post(
            "/v1/datasets/events/batches",
            "application/x-ndjson",
            event(1, "slow"),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let batch_id = accepted["batch_id"].as_str().expect("batch id");
    let batch = local.settled(batch_id).await;
    assert_eq!(batch["status"], "failed", "{batch}");
    assert_eq!(
        batch["failure"],
        "gave up after 2 deliveries: the invocation reached its deadline (1.5s before the function's timeout) before the message was handled"
    );
    let other = connect(&format!(
        "host=127.0.0.1 port=5432 user=postgres dbname={}",
        local.database()
    ))
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting = count(
            &other,
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND wait_event_type = 'Lock'",
                local.database()
            ),
        )
        .await;
        if waiting == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{waiting} sessions still wait on the lock"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    lock.rollback().await.expect("unlock");
    assert_eq!(count(&db, "SELECT count(*) FROM public.events").await, 0);
}
