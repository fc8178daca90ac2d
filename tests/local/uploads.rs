//! Large batches through uploads: presigned and multipart uploads, part
//! pages, the inline limit, invalid uploads, parallel chunks.

use super::*;

#[tokio::test]
async fn push_goes_through_an_upload_when_large_and_query_reads_back() {
    require!(Service::Postgres);
    let local = Local::start("api:\n  max_inline_batch_kib: 1\n").await;
    let body: String = (1..=20).map(|i| event(i, "big")).collect();
    assert!(body.len() > 1024);
    std::fs::write(local.dir.path().join("batch.ndjson"), &body).expect("write batch");
    let out = client(&local, &["push", "-d", "events", "batch.ndjson", "--wait"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("loaded batch ")
            && stdout.ends_with(" into events: 20 records, 20 inserted, 0 duplicates\n"),
        "{stdout}"
    );

    let out = client(
        &local,
        &[
            "--output",
            "json",
            "query",
            "-d",
            "events",
            "-w",
            "user_id>=5",
            "-w",
            "user_id<8",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page: Value = serde_json::from_slice(&out.stdout).expect("json page");
    let ids: Vec<i64> = page["records"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["user_id"].as_i64())
        .collect();
    assert_eq!(ids, vec![5, 6, 7]);
}

/// Lambda's 6 MB applies to the event, where the body is a JSON string:
/// a body under the inline limit whose quotes and line breaks take it over
/// is a 413 from the API, and `push` sends it through an upload.
#[tokio::test]
async fn the_inline_limit_counts_the_body_as_escaped_in_the_lambda_event() {
    require!(Service::Postgres);
    let local = Local::start("api:\n  max_inline_batch_kib: 1\n").await;
    let body: String = (1..=6).map(|i| event(i, "q")).collect();
    let escaped = serde_json::to_string(&body).expect("json").len() - 2;
    assert!(
        body.len() <= 1024 && escaped > 1024,
        "{} {escaped}",
        body.len()
    );
    let (status, answer) = local
        .post(
            "/v1/datasets/events/batches",
            "application/x-ndjson",
            body.clone(),
        )
        .await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(
        answer["message"],
        format!(
            "the batch is {} bytes ({escaped} as a JSON string in the Lambda event), over the inline limit of 1024 bytes; send it through an upload: POST /v1/datasets/events/uploads",
            body.len()
        )
    );
    std::fs::write(local.dir.path().join("batch.ndjson"), &body).expect("write batch");
    let out = client(
        &local,
        &[
            "--output",
            "json",
            "push",
            "-d",
            "events",
            "batch.ndjson",
            "--wait",
        ],
    );
    let pushed: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(
        (pushed["via"].as_str(), pushed["status"].as_str()),
        (Some("upload"), Some("loaded"))
    );
}

/// An upload of more parts than one answer holds URLs for (Lambda answers
/// at most 6 MB): the first 1,000 come with the upload, the others from
/// `parts_url` a page at a time, and `push` uploads them all.
#[tokio::test]
async fn part_urls_beyond_the_first_thousand_come_a_page_at_a_time() {
    require!(Service::Postgres);
    let local = Local::start_with(
        "api:\n  max_inline_batch_kib: 1\n",
        &["--upload-part-size", "100"],
    )
    .await;
    let body: String = (1..=1000).map(|i| event(i, "paged")).collect();
    let parts = body.len().div_ceil(100);
    assert!(parts > 1000 && parts < 2000, "{parts}");
    let upload = start_upload(&local, body.len()).await;
    let listed = upload["parts"].as_array().expect("parts");
    assert_eq!(listed.len(), parts);
    let with_url = listed.iter().filter(|p| p["url"].is_string()).count();
    assert_eq!(with_url, 1000);
    let batch_id = upload["batch_id"].as_str().expect("batch id");
    assert_eq!(upload["parts_url"], format!("/v1/batches/{batch_id}/parts"));
    let (status, page) = local
        .post(
            &format!("/v1/batches/{batch_id}/parts"),
            "application/json",
            json!({"upload_id": upload["upload_id"], "part_numbers": [1001, 1002]}).to_string(),
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let numbers: Vec<u64> = page["parts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| p["part_number"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(numbers, vec![1001, 1002]);
    assert!(
        page["parts"][0]["url"]
            .as_str()
            .is_some_and(|u| u.contains("partNumber=1001")),
        "{page}"
    );

    std::fs::write(local.dir.path().join("batch.ndjson"), &body).expect("write batch");
    let out = client(
        &local,
        &[
            "--output",
            "json",
            "push",
            "-d",
            "events",
            "batch.ndjson",
            "--wait",
        ],
    );
    let pushed: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(pushed["batch"]["inserted"], 1000, "{pushed}");
    let db = local.db().await;
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM public.events WHERE kind = 'paged'"
        )
        .await,
        1000
    );
}

/// Starts an NDJSON upload of `size` bytes through the API, which must
/// accept it: its answer.
async fn start_upload(local: &Local, size: usize) -> Value {
    let request = json!({"size_bytes": size, "content_type": "application/x-ndjson"});
    let (status, upload) = local
        .post(
            "/v1/datasets/events/uploads",
            "application/json",
            request.to_string(),
        )
        .await;
    assert_eq!(status, 201, "{upload}");
    upload
}

/// `push --wait` of `body` as `batch.ndjson`, which must succeed through an
/// upload: its JSON answer.
fn push_upload(local: &Local, body: &str) -> Value {
    std::fs::write(local.dir.path().join("batch.ndjson"), body).expect("write batch");
    let args = [
        "--output",
        "json",
        "push",
        "-d",
        "events",
        "batch.ndjson",
        "--wait",
    ];
    let out = client(local, &args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pushed: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(pushed["via"], "upload");
    pushed
}

/// An upload that outlasts its URLs (an hour in AWS) goes on with fresh
/// ones: a part whose URL has expired (storage answers 403) gets a new URL
/// from the API and goes up again. `pipeline local` signs its first URLs
/// expired (a fault injected for this test, as a client slower than the
/// URLs' lifetime meets it).
#[tokio::test]
async fn parts_whose_urls_expired_go_up_with_fresh_ones() {
    require!(Service::Postgres);
    let mut local = Local::start_with(
        "api:\n  max_inline_batch_kib: 1\n",
        &["--upload-part-size", "1000"],
    )
    .await;
    let body: String = (1..=100).map(|i| event(i, "expired")).collect();
    let parts = body.len().div_ceil(1000);
    // Every URL of a first upload, and the first three of push's.
    local.vars = vec![(
        "PIPELINE_LOCAL_TEST_EXPIRED_URLS".to_string(),
        (parts + 3).to_string(),
    )];
    local.restart();
    let upload = start_upload(&local, body.len()).await;
    let url = upload["parts"][0]["url"].as_str().expect("part 1's URL");
    let put = local.http.put(url).body("x").send().await.expect("PUT");
    assert_eq!(put.status().as_u16(), 403, "an expired URL is refused");

    let pushed = push_upload(&local, &body);
    assert_eq!(pushed["batch"]["inserted"], 100);
}

#[tokio::test]
async fn a_batch_above_the_part_size_goes_up_in_parts_and_loads_once() {
    require!(Service::Postgres);
    let local = Local::start_with(
        "api:\n  max_inline_batch_kib: 1\n",
        &["--upload-part-size", "1000"],
    )
    .await;
    let body: String = (1..=100).map(|i| event(i, "multi")).collect();
    assert!(body.len() > 5000);
    let pushed = push_upload(&local, &body);
    assert_eq!(pushed["batch"]["inserted"], 100);
    let db = local.db().await;
    let rows = count(
        &db,
        "SELECT count(*) FROM public.events WHERE kind = 'multi'",
    )
    .await;
    assert_eq!(rows, 100);
    // The joined object is the file, byte for byte, and no part is left over.
    let batch_id = pushed["batch_id"].as_str().expect("batch id");
    let objects = local.dir.path().join("data").join("objects");
    let stored = walk(&objects);
    let object = stored
        .iter()
        .find(|p| p.to_string_lossy().contains(batch_id) && !p.to_string_lossy().contains(".meta"))
        .expect("object stored");
    assert!(std::fs::read_to_string(object).expect("read") == body);
    assert!(
        stored
            .iter()
            .all(|p| !p.to_string_lossy().contains(".multipart")),
        "{stored:?}"
    );
}

#[tokio::test]
async fn a_multipart_completion_with_a_missing_part_is_refused() {
    require!(Service::Postgres);
    let local = Local::start_with("", &["--upload-part-size", "100"]).await;
    let body: String = (1..=5).map(|i| event(i, "gap")).collect();
    let upload = json!({"size_bytes": body.len(), "content_type": "application/x-ndjson"});
    let (status, started) = local
        .post(
            "/v1/datasets/events/uploads",
            "application/json",
            serde_json::to_vec(&upload).expect("json"),
        )
        .await;
    assert_eq!(status, 201, "{started}");
    assert!(started.get("url").is_none(), "{started}");
    let parts = started["parts"].as_array().expect("parts");
    assert_eq!(parts.len(), body.len().div_ceil(100));
    let http = pipeline_cli::http::client();
    let first = &parts[0];
    let response = http
        .put(first["url"].as_str().expect("url"))
        .body(body[..100].to_string())
        .send()
        .await
        .expect("PUT part");
    assert_eq!(response.status(), 200);
    let etag = response.headers()["etag"]
        .to_str()
        .expect("etag")
        .to_string();
    let batch_id = started["batch_id"].as_str().expect("batch id");
    let complete = json!({
        "upload_id": started["upload_id"],
        "parts": [{"part_number": 1, "etag": etag}, {"part_number": 2, "etag": "\"x\""}],
    });
    let (status, answer) = local
        .post(
            &format!("/v1/batches/{batch_id}/complete"),
            "application/json",
            serde_json::to_vec(&complete).expect("json"),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"], "invalid_upload");
    assert_eq!(answer["message"], "part 2 was not uploaded");
    let (status, batch) = local.get(&format!("/v1/batches/{batch_id}")).await;
    assert_eq!((status, batch["status"].as_str()), (200, Some("received")));
}

#[tokio::test]
async fn an_invalid_upload_fails_its_batch_with_the_first_error() {
    require!(Service::Postgres);
    let local = Local::start("api:\n  max_inline_batch_kib: 1\n").await;
    let mut body: String = (1..=10).map(|i| event(i, "x")).collect();
    body.push_str(&event(11, "x").replace("\"user_id\":11", "\"user_id\":true"));
    std::fs::write(local.dir.path().join("batch.ndjson"), &body).expect("write batch");
    let out = client(&local, &["push", "-d", "events", "batch.ndjson", "--wait"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(
        stdout
            .ends_with(" failed: line 11, column `user_id`: expected a number, found a boolean\n"),
        "{stdout}"
    );
    let db = local.db().await;
    let rows = count(&db, "SELECT count(*) FROM public.events").await;
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn a_rejected_inline_push_lists_file_line_and_reason() {
    require!(Service::Postgres);
    let local = Local::start("").await;
    std::fs::write(local.dir.path().join("bad.ndjson"), "{\"event_id\":1}\n").expect("write");
    let out = client(&local, &["push", "-d", "events", "bad.ndjson"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "  × the batch was rejected, nothing was stored:
  │   bad.ndjson:1: column `event_id`: expected a string, found a number
  │   bad.ndjson:1: column `occurred_at`: missing value
  │   bad.ndjson:1: column `source`: missing value
  │   bad.ndjson:1: column `kind`: missing value

"
    );
}

#[tokio::test]
async fn a_large_batch_loads_in_parallel_chunks_exactly_once() {
    require!(Service::Postgres);
    let local = Local::start_with("", &["--chunk-size", "20000", "--workers", "3"]).await;
    // 2000 records, about 330 kB: some 16 chunks. Record 5 comes back at the end.
    let mut body: String = (1..=1999).map(|i| event(i, "chunked")).collect();
    body.push_str(&event(5, "again"));
    let (status, accepted) = local
        .post("/v1/datasets/events/batches", "application/x-ndjson", body)
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
        (json!("loaded"), json!(2000), json!(1999), json!(1))
    );
    let db = local.db().await;
    let chunks: i64 = db
        .query_one("SELECT count(*) FROM pipeline.batch_chunks WHERE batch_id = $1::text::uuid AND status = 'loaded'", &[&batch_id])
        .await
        .expect("chunks")
        .get(0);
    assert!(chunks > 10, "{chunks} chunks");
    let kind: String = db
        .query_one("SELECT kind FROM public.events WHERE user_id = 5", &[])
        .await
        .expect("row")
        .get(0);
    assert_eq!(
        kind, "chunked",
        "the first occurrence wins under on_conflict: ignore"
    );
    let staging = count(
        &db,
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'pipeline' AND tablename LIKE 'stage_%'",
    )
    .await;
    assert_eq!(staging, 0);
}

/// An upload larger than it declared fails its batch at once, reading
/// none of it: within the delivery that finds it, nothing loaded, nothing
/// dead-lettered. Its upload is over: asking again with its idempotency key
/// answers the batch without any URL, and asking for part URLs is refused
/// (409), rather than handing out a URL that could replace its object.
#[tokio::test]
async fn an_upload_larger_than_declared_fails_at_once_and_gets_no_more_urls() {
    require!(Service::Postgres);
    let local = Local::start("").await;
    let body: String = (1..=3).map(|i| event(i, "liar")).collect();
    let upload = json!({
        "size_bytes": body.len(),
        "content_type": "application/x-ndjson",
        "idempotency_key": "liar-1",
    });
    let (status, started) = local
        .post(
            "/v1/datasets/events/uploads",
            "application/json",
            serde_json::to_vec(&upload).expect("json"),
        )
        .await;
    assert_eq!(status, 201, "{started}");
    let more: String = body.clone() + &event(4, "liar");
    assert_eq!(local.put_upload(&started, more.clone()).await, 200);
    let batch_id = started["batch_id"].as_str().expect("batch id");
    let batch = local.settled(batch_id).await;
    assert_eq!(batch["status"], "failed", "{batch}");
    assert_eq!(
        batch["failure"],
        format!(
            "the object is {} bytes, but its batch declared {}: nothing of it was loaded",
            more.len(),
            body.len()
        )
    );
    let db = local.db().await;
    assert_eq!(count(&db, "SELECT count(*) FROM public.events").await, 0);
    assert_eq!(
        count(&db, "SELECT count(*) FROM pipeline.local_queue").await,
        0
    );

    let (status, again) = local
        .post(
            "/v1/datasets/events/uploads",
            "application/json",
            serde_json::to_vec(&upload).expect("json"),
        )
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["batch_id"], batch_id);
    for field in ["url", "parts", "upload_id"] {
        assert!(again.get(field).is_none(), "{again}");
    }
    let (status, parts) = local
        .post(
            &format!("/v1/batches/{batch_id}/parts"),
            "application/json",
            serde_json::to_vec(&json!({"upload_id": "x", "part_numbers": [1]})).expect("json"),
        )
        .await;
    assert_eq!(
        (status, &parts["error"]),
        (409, &json!("invalid_upload")),
        "{parts}"
    );
}

/// A single upload's URL takes one PUT that sends `If-None-Match: *`, as
/// the answer's `headers` say (S3 signs it into the URL, and the raw
/// bucket's policy refuses a PUT without it): without the header it is
/// refused (403), and once the object is stored a second PUT cannot
/// replace it (412). The batch loads what the first PUT sent, once.
#[tokio::test]
async fn a_single_upload_cannot_replace_its_object() {
    require!(Service::Postgres);
    let local = Local::start("").await;
    let body: String = (1..=2).map(|i| event(i, "first")).collect();
    let upload = start_upload(&local, body.len()).await;
    assert_eq!(upload["headers"], json!({"If-None-Match": "*"}));
    let url = upload["url"].as_str().expect("url");
    let put = |body: String, conditional: bool| {
        let request = local.http.put(url).body(body);
        match conditional {
            true => request.header("If-None-Match", "*"),
            false => request,
        }
        .send()
    };
    let bare = put(body.clone(), false).await.expect("PUT");
    assert_eq!(bare.status().as_u16(), 403);
    assert!(
        bare.text()
            .await
            .unwrap_or_default()
            .contains("If-None-Match: *")
    );
    let first = put(body.clone(), true).await.expect("PUT");
    assert_eq!(first.status().as_u16(), 200);
    let replaced: String = (1..=2).map(|i| event(i, "replaced")).collect();
    let second = put(replaced, true).await.expect("PUT");
    assert_eq!(second.status().as_u16(), 412);
    let batch_id = upload["batch_id"].as_str().expect("batch id");
    let batch = local.settled(batch_id).await;
    assert_eq!(
        (&batch["status"], &batch["inserted"]),
        (&json!("loaded"), &json!(2)),
        "{batch}"
    );
    let db = local.db().await;
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM public.events WHERE kind = 'first'"
        )
        .await,
        2
    );
}
