//! Chunked loads that are killed, fail or are retried, and CSV chunks that
//! follow their quotes.

use super::*;

/// Polls until `sql` (a count) is above zero, or fails after 30 s with `what`.
pub(super) async fn wait_for(db: &tokio_postgres::Client, sql: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(db, sql).await == 0 {
        assert!(Instant::now() < deadline, "{what} never happened");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until a statement starting with `prefix` of `pipeline local` waits
/// for a lock the test holds.
pub(super) async fn wait_for_lock(db: &tokio_postgres::Client, prefix: &str) {
    wait_for(
        db,
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock' AND query LIKE '{prefix}%'"
        ),
        &format!("a wait of `{prefix}...` for the test's lock"),
    )
    .await;
}

#[tokio::test]
async fn a_chunked_load_killed_at_each_step_loads_exactly_once_after_restarts() {
    require!(Service::Postgres);
    let mut local = Local::start_with(
        "",
        &[
            "--chunk-size",
            "20000",
            "--workers",
            "2",
            "--merge-slice-rows",
            "500",
        ],
    )
    .await;
    let db = local.db().await;
    let blocker = local.db().await;
    // 3000 records, about 500 kB: some 25 chunks.
    const RECORDS: i64 = 3000;
    let body: String = (1..=RECORDS as u32).map(|i| event(i, "crash")).collect();

    // 1. Killed while beginning: its staging table waits for the dataset's table.
    blocker
        .batch_execute("BEGIN; LOCK TABLE public.events IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let (status, accepted) = local
        .post("/v1/datasets/events/batches", "application/x-ndjson", body)
        .await;
    assert_eq!(status, 202, "{accepted}");
    let batch_id = accepted["batch_id"].as_str().expect("id").to_string();
    let stage = format!("pipeline.\"stage_{}\"", batch_id.replace('-', ""));
    let chunks_sql = format!(
        "SELECT count(*) FROM pipeline.batch_chunks WHERE batch_id = '{batch_id}' AND status <> 'split'"
    );
    let loaded_sql = format!("{chunks_sql} AND status = 'loaded'");
    wait_for_lock(&db, "CREATE UNLOGGED TABLE").await;
    local.kill();
    blocker.batch_execute("ROLLBACK").await.expect("unlock");
    assert_eq!(count(&db, &chunks_sql).await, 0);

    // 2. Killed with some chunks loaded and others leased by the dead process.
    local.vars = vec![(
        "PIPELINE_LOCAL_TEST_PAUSE_AFTER_CHUNKS".to_string(),
        "4".to_string(),
    )];
    local.restart();
    wait_for(
        &db,
        &format!("SELECT count(*) FROM ({loaded_sql}) n WHERE count = 4"),
        "the load of the first 4 chunks",
    )
    .await;
    local.kill();
    let chunks = count(&db, &chunks_sql).await;
    assert!(chunks > 20, "{chunks} chunks");
    assert_eq!(count(&db, "SELECT count(*) FROM public.events").await, 0);

    // 3. Killed in the middle of chunks' COPY, which waits for the staging table.
    local.vars.clear();
    blocker
        .batch_execute(&format!("BEGIN; LOCK TABLE {stage} IN SHARE MODE"))
        .await
        .expect("lock");
    local.restart();
    wait_for_lock(&db, "COPY pipeline.").await;
    local.kill();
    blocker.batch_execute("ROLLBACK").await.expect("unlock");
    assert_eq!(count(&db, &loaded_sql).await, 4);

    // 4. Killed during the merge's first slice, which waits for the dataset's table.
    blocker
        .batch_execute("BEGIN; LOCK TABLE public.events IN SHARE MODE")
        .await
        .expect("lock");
    local.restart();
    wait_for_lock(&db, "WITH slice").await;
    local.kill();
    blocker.batch_execute("ROLLBACK").await.expect("unlock");
    assert_eq!(count(&db, &loaded_sql).await, chunks);
    assert_eq!(count(&db, "SELECT count(*) FROM public.events").await, 0);

    // 5. Killed in the middle of the merge: four slices of 500 rows are in,
    // the fifth waits for a row of record 2500 that the test is inserting.
    blocker
        .batch_execute(&format!(
            "BEGIN; INSERT INTO public.events (event_id, occurred_at, source, kind) \
             VALUES ('00000000-0000-4000-8000-{:012}', now(), 'test', 'test')",
            2500
        ))
        .await
        .expect("insert");
    local.restart();
    wait_for_lock(&db, "WITH slice").await;
    let merged = "SELECT count(*) FROM public.events WHERE pipeline_load IS NOT NULL";
    assert_eq!(count(&db, merged).await, 2000);
    let (status, page) = local.get("/v1/datasets/events/records?limit=10").await;
    assert_eq!(
        (status, page["records"].clone()),
        (200, json!([])),
        "{page}"
    );
    local.kill();
    blocker.batch_execute("ROLLBACK").await.expect("unlock");
    let status: String = db
        .query_one(
            "SELECT status FROM pipeline.batches WHERE batch_id = $1::text::uuid",
            &[&batch_id],
        )
        .await
        .expect("batch")
        .get(0);
    assert_eq!(status, "loading");

    // 6. Restarted once more: loaded, exactly once.
    local.restart();
    let batch = local.settled(&batch_id).await;
    assert_eq!(
        (
            batch["status"].clone(),
            batch["records"].clone(),
            batch["inserted"].clone(),
            batch["duplicates"].clone()
        ),
        (json!("loaded"), json!(RECORDS), json!(RECORDS), json!(0))
    );
    let rows = db
        .query_one(
            "SELECT count(*), count(DISTINCT event_id), count(DISTINCT user_id), min(user_id), max(user_id) FROM public.events",
            &[],
        )
        .await
        .expect("rows");
    let rows: Vec<i64> = (0..5).map(|i| rows.get(i)).collect();
    assert_eq!(rows, [RECORDS, RECORDS, RECORDS, 1, RECORDS]);
    let staging = count(
        &db,
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'pipeline' AND tablename LIKE 'stage_%'",
    )
    .await;
    assert_eq!(staging, 0);
}

#[tokio::test]
async fn an_invalid_record_in_a_chunk_fails_the_batch_with_its_line_in_the_whole_batch() {
    require!(Service::Postgres);
    let local = Local::start_with("", &["--chunk-size", "20000"]).await;
    let mut body: String = (1..=1499).map(|i| event(i, "x")).collect();
    body.push_str(&event(1500, "x").replace("\"user_id\":1500", "\"user_id\":\"many\""));
    body.extend((1501..=2000).map(|i| event(i, "x")));
    let (_, accepted) = local
        .post_with(
            "/v1/datasets/events/uploads",
            "application/json",
            serde_json::to_vec(
                &json!({"size_bytes": body.len(), "content_type": "application/x-ndjson"}),
            )
            .expect("json"),
            &[],
        )
        .await;
    assert_eq!(local.put_upload(&accepted, body).await, 200);
    let batch = local
        .settled(accepted["batch_id"].as_str().expect("id"))
        .await;
    assert_eq!(batch["status"], "failed");
    assert_eq!(
        batch["error"],
        json!({"line": 1500, "column": "user_id", "reason": "expected a number, found a string"})
    );
    let db = local.db().await;
    let rows = count(&db, "SELECT count(*) FROM public.events").await;
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn an_idempotent_retry_stores_a_batch_its_first_request_did_not_and_refuses_another_body() {
    require!(Service::Postgres);
    let local = Local::start("").await;
    let body = event(1, "a");
    let sha256: String = {
        use sha2::Digest;
        sha2::Sha256::digest(body.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    // As if an ingest died after recording the batch, before storing it.
    let db = local.db().await;
    let batch_id = uuid::Uuid::now_v7();
    let key = format!("raw/events/2024-01-01/{batch_id}.ndjson");
    db.execute(
        "INSERT INTO pipeline.batches (batch_id, dataset, object_key, status, idempotency_key, records, sha256)
         VALUES ($1, 'events', $2, 'received', 'crash-1', 1, $3)",
        &[&batch_id, &key, &sha256],
    )
    .await
    .expect("insert");
    let key_header = [("idempotency-key", "crash-1")];
    let (status, accepted) = local
        .post_with(
            "/v1/datasets/events/batches",
            "application/x-ndjson",
            body.clone(),
            &key_header,
        )
        .await;
    assert_eq!(
        (status, accepted["batch_id"].clone()),
        (202, json!(batch_id.to_string()))
    );
    let batch = local.settled(&batch_id.to_string()).await;
    assert_eq!(
        (batch["status"].clone(), batch["inserted"].clone()),
        (json!("loaded"), json!(1))
    );

    let (status, refused) = local
        .post_with(
            "/v1/datasets/events/batches",
            "application/x-ndjson",
            event(2, "b"),
            &key_header,
        )
        .await;
    assert_eq!(status, 409);
    assert_eq!(refused["error"], "idempotency_conflict");
}

/// A CSV record whose sensor name holds a line break, so that it spans two lines.
fn reading(i: u32, value: &str, quality: &str) -> String {
    format!("\"sensor\n{i}\",2024-01-31T12:00:00Z,{value},{quality},true,2024-01-31\n")
}

#[tokio::test]
async fn a_large_csv_batch_loads_in_chunks_following_its_quotes() {
    require!(Service::Postgres);
    let local = Local::start_with("", &["--chunk-size", "8000", "--workers", "3"]).await;
    let mut body = String::from("sensor_id,read_at,value,quality,valid,day\n");
    body.extend((1..=2000).map(|i| reading(i, &format!("{i}.5"), "1")));
    body.push_str(&reading(7, "700.5", "9"));
    let (status, accepted) = local
        .post("/v1/datasets/readings/batches", "text/csv", body)
        .await;
    assert_eq!(status, 202, "{accepted}");
    let batch_id = accepted["batch_id"].as_str().expect("id").to_string();
    let batch = local.settled(&batch_id).await;
    assert_eq!(
        (
            batch["status"].clone(),
            batch["records"].clone(),
            batch["inserted"].clone(),
            batch["duplicates"].clone()
        ),
        (json!("loaded"), json!(2001), json!(2000), json!(1))
    );
    let db = local.db().await;
    let chunks = count(
        &db,
        &format!("SELECT count(*) FROM pipeline.batch_chunks WHERE batch_id = '{batch_id}' AND status <> 'split'"),
    )
    .await;
    assert!(chunks > 5, "{chunks} chunks");
    let (value, quality): (f64, i32) = {
        let row = db
            .query_one(
                "SELECT value, quality FROM public.readings WHERE sensor_id = $1",
                &[&"sensor\n7"],
            )
            .await
            .expect("row");
        (row.get(0), row.get(1))
    };
    assert_eq!(
        (value, quality),
        (700.5, 9),
        "the last occurrence wins under on_conflict: update"
    );

    // An invalid record deep in the batch: its line counts the quoted line breaks.
    let mut body = String::from("sensor_id,read_at,value,quality,valid,day\n");
    body.extend((1..=2000).map(|i| reading(i, "1.5", if i == 1500 { "x" } else { "1" })));
    // Inline, the batch is refused whole; uploaded, the loader finds the record.
    let upload = json!({"size_bytes": body.len(), "content_type": "text/csv"});
    let (_, accepted) = local
        .post(
            "/v1/datasets/readings/uploads",
            "application/json",
            serde_json::to_vec(&upload).expect("json"),
        )
        .await;
    assert_eq!(local.put_upload(&accepted, body).await, 200);
    let batch = local
        .settled(accepted["batch_id"].as_str().expect("id"))
        .await;
    assert_eq!(batch["status"], "failed");
    assert_eq!(
        batch["error"],
        json!({"line": 3000, "column": "quality", "reason": "expected an integer from -2147483648 to 2147483647, found `x`"})
    );
}
