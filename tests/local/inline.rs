//! Inline batches over HTTP: read back exactly, idempotency, duplicates,
//! malformed input, a killed loader, the OpenAPI document, the fuzzer.

use super::*;

#[tokio::test]
async fn push_wait_and_read_back_the_exact_records() {
    require!(Service::Postgres);
    let local = Local::start("").await;
    let body: String = (1..=3)
        .map(|i| event(i, if i == 2 { "view" } else { "click" }))
        .collect();
    let (status, accepted) = local
        .post("/v1/datasets/events/batches", "application/x-ndjson", body)
        .await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["records"], 3);
    let batch_id = accepted["batch_id"].as_str().expect("batch id").to_string();
    assert_eq!(accepted["status_url"], format!("/v1/batches/{batch_id}"));
    let batch = local.settled(&batch_id).await;
    assert_eq!(
        (
            batch["status"].clone(),
            batch["inserted"].clone(),
            batch["duplicates"].clone()
        ),
        (json!("loaded"), json!(3), json!(0))
    );

    let (status, page) = local
        .get("/v1/datasets/events/records?kind=click&limit=1")
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        page["records"],
        json!([{
            "event_id": "00000000-0000-4000-8000-000000000001",
            "occurred_at": "2024-01-31T12:00:01+00:00",
            "source": "web",
            "kind": "click",
            "user_id": 1,
            "amount": "1.25",
            "payload": {"n": 1},
        }])
    );
    let cursor = page["next_cursor"].as_str().expect("more pages");
    let (_, page) = local
        .get(&format!(
            "/v1/datasets/events/records?kind=click&limit=1&cursor={cursor}"
        ))
        .await;
    assert_eq!(page["records"][0]["user_id"], 3);
    assert_eq!(page["next_cursor"], Value::Null);
    let (_, page) = local
        .get("/v1/datasets/events/records?user_id.gte=2&user_id.lt=3")
        .await;
    assert_eq!(page["records"].as_array().map(Vec::len), Some(1));

    // CSV datasets too.
    let csv = "sensor_id,read_at,value,quality,valid,day\ns1,2024-01-31T12:00:00Z,1.5,3,true,2024-01-31\n";
    let (status, accepted) = local
        .post(
            "/v1/datasets/readings/batches",
            "text/csv; charset=utf-8",
            csv,
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    local
        .settled(accepted["batch_id"].as_str().expect("id"))
        .await;
    let (_, page) = local
        .get("/v1/datasets/readings/records?sensor_id=s1")
        .await;
    assert_eq!(
        page["records"],
        json!([{"sensor_id": "s1", "read_at": "2024-01-31T12:00:00+00:00", "value": 1.5, "quality": 3, "valid": true, "day": "2024-01-31"}])
    );
}

#[tokio::test]
async fn an_idempotency_key_returns_the_first_batch_and_stores_nothing_new() {
    require!(Service::Postgres);
    let local = Local::start("").await;
    let key = [("idempotency-key", "order-42")];
    let (s1, first) = local
        .post_with(
            "/v1/datasets/events/batches",
            "application/x-ndjson",
            event(1, "a"),
            &key,
        )
        .await;
    let (s2, second) = local
        .post_with(
            "/v1/datasets/events/batches",
            "application/x-ndjson",
            event(1, "a"),
            &key,
        )
        .await;
    assert_eq!((s1, s2), (202, 202));
    assert_eq!(first["batch_id"], second["batch_id"]);
    local.settled(first["batch_id"].as_str().expect("id")).await;
    let db = local.db().await;
    let batches = count(&db, "SELECT count(*) FROM pipeline.batches").await;
    assert_eq!(batches, 1);
    let objects = std::fs::read_dir(local.dir.path().join("data/objects/raw/events"))
        .expect("objects")
        .count();
    assert_eq!(objects, 1);
}

#[tokio::test]
async fn a_batch_delivered_twice_loads_once() {
    require!(Service::Postgres);
    let local = Local::start("").await;
    let body: String = (1..=5).map(|i| event(i, "a")).collect();
    let (_, accepted) = local
        .post("/v1/datasets/events/batches", "application/x-ndjson", body)
        .await;
    let batch_id = accepted["batch_id"].as_str().expect("id").to_string();
    local.settled(&batch_id).await;
    // Deliver the same S3 notification again, as SQS may.
    let db = local.db().await;
    let (body, key): (String, String) = {
        let object = db
            .query_one(
                "SELECT object_key FROM pipeline.batches WHERE batch_id = $1::text::uuid",
                &[&batch_id],
            )
            .await
            .expect("batch");
        let key: String = object.get(0);
        (
            format!(
                "{{\"Records\":[{{\"eventVersion\":\"2.1\",\"eventSource\":\"aws:s3\",\"awsRegion\":\"local\",\"eventTime\":\"2024-01-01T00:00:00.000Z\",\"eventName\":\"ObjectCreated:Put\",\"userIdentity\":{{\"principalId\":\"x\"}},\"requestParameters\":{{\"sourceIPAddress\":\"127.0.0.1\"}},\"responseElements\":{{}},\"s3\":{{\"s3SchemaVersion\":\"1.0\",\"configurationId\":\"x\",\"bucket\":{{\"name\":\"local\",\"ownerIdentity\":{{\"principalId\":\"x\"}},\"arn\":\"arn:aws:s3:::local\"}},\"object\":{{\"key\":\"{key}\",\"size\":1}}}}}}]}}"
            ),
            key,
        )
    };
    db.execute(
        "INSERT INTO pipeline.local_queue (body, object_key) VALUES ($1, $2)",
        &[&body, &key],
    )
    .await
    .expect("enqueue");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = count(&db, "SELECT count(*) FROM pipeline.local_queue").await;
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the redelivery was not consumed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rows = count(&db, "SELECT count(*) FROM public.events").await;
    assert_eq!(rows, 5);
    let (_, batch) = local.get(&format!("/v1/batches/{batch_id}")).await;
    assert_eq!(
        (batch["inserted"].clone(), batch["duplicates"].clone()),
        (json!(5), json!(0))
    );
}

#[tokio::test]
async fn malformed_input_is_refused_with_line_and_reason_and_nothing_is_loaded() {
    require!(Service::Postgres);
    let local = Local::start("api:\n  max_inline_batch_kib: 2048\n").await;
    let post = |body: Vec<u8>, content_type: &'static str| {
        let local = &local;
        async move {
            local
                .post("/v1/datasets/events/batches", content_type, body)
                .await
        }
    };
    let ndjson = "application/x-ndjson";
    let good = event(1, "a");

    let type_error = good.replace("\"user_id\":1", "\"user_id\":\"one\"");
    let (status, body) = post(format!("{good}{type_error}").into_bytes(), ndjson).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error": "invalid_batch", "truncated": false,
               "message": "1 of 2 records are invalid; nothing was stored",
               "errors": [{"line": 2, "column": "user_id", "reason": "expected a number, found a string"}]})
    );

    let missing = good.replace("\"source\":\"web\",", "");
    let (status, body) = post(missing.into_bytes(), ndjson).await;
    assert_eq!(
        (status, body["errors"][0].clone()),
        (
            400,
            json!({"line": 1, "column": "source", "reason": "missing value"})
        )
    );

    let unknown = good.replace(
        "\"source\":\"web\"",
        "\"source\":\"web\",\"colour\":\"red\"",
    );
    let (status, body) = post(unknown.into_bytes(), ndjson).await;
    assert_eq!(
        (status, body["errors"][0].clone()),
        (
            400,
            json!({"line": 1, "column": "colour", "reason": "unknown column"})
        )
    );

    let mut bad_utf8 = good.clone().into_bytes();
    bad_utf8.extend_from_slice(b"{\"kind\":\"\xff\"}\n");
    let (status, body) = post(bad_utf8, ndjson).await;
    assert_eq!(
        (status, body["errors"][0].clone()),
        (
            400,
            json!({"line": 2, "reason": "invalid UTF-8 at byte 10 of the line"})
        )
    );

    let long = format!("{good}{{\"source\":\"{}\"}}\n", "x".repeat(1024 * 1024 + 1));
    let (status, body) = post(long.into_bytes(), ndjson).await;
    assert_eq!(
        (status, body["errors"][0].clone()),
        (
            400,
            json!({"line": 2, "reason": "the record is longer than 1048576 bytes"})
        )
    );

    let (status, body) = post(Vec::new(), ndjson).await;
    assert_eq!(
        (status, body["errors"][0].clone()),
        (400, json!({"line": 1, "reason": "the batch is empty"}))
    );

    let (status, body) = post(good.clone().into_bytes(), "text/csv").await;
    assert_eq!(
        (status, body),
        (
            415,
            json!({"error": "unsupported_media_type", "message": "dataset `events` takes `application/x-ndjson`, found `text/csv`"})
        )
    );

    let (status, body) = local
        .post("/v1/datasets/nope/batches", ndjson, good.clone())
        .await;
    assert_eq!(
        (status, body),
        (
            404,
            json!({"error": "not_found", "message": "there is no dataset `nope`; the datasets are: events, readings"})
        )
    );

    let big = event(1, &"k".repeat(3 * 1024 * 1024));
    let (status, body) = post(big.into_bytes(), ndjson).await;
    assert_eq!(status, 413);
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .ends_with("send it through an upload: POST /v1/datasets/events/uploads"),
        "{body}"
    );

    let db = local.db().await;
    let batches = count(&db, "SELECT count(*) FROM pipeline.batches").await;
    let rows = count(&db, "SELECT count(*) FROM public.events").await;
    assert_eq!((batches, rows), (0, 0));
    assert!(!local.dir.path().join("data/objects/raw").exists());
}

#[tokio::test]
async fn a_loader_killed_mid_load_leaves_no_rows_and_loads_once_after_restart() {
    require!(Service::Postgres);
    let mut local = Local::start("").await;
    // Hold a lock that the loader's COPY waits for, so that the process can be
    // killed while its load transaction is open.
    let blocker = local.db().await;
    blocker
        .batch_execute("BEGIN; LOCK TABLE public.events IN SHARE MODE")
        .await
        .expect("lock");
    let body: String = (1..=1000).map(|i| event(i, "a")).collect();
    let (_, accepted) = local
        .post("/v1/datasets/events/batches", "application/x-ndjson", body)
        .await;
    let batch_id = accepted["batch_id"].as_str().expect("id").to_string();
    let db = local.db().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let waiting = count(&db, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'COPY%'").await;
        if waiting > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the loader never started copying"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    local.kill();
    blocker.batch_execute("ROLLBACK").await.expect("unlock");
    let rows = count(&db, "SELECT count(*) FROM public.events").await;
    assert_eq!(rows, 0);
    let status: String = db
        .query_one(
            "SELECT status FROM pipeline.batches WHERE batch_id = $1::text::uuid",
            &[&batch_id],
        )
        .await
        .expect("batch")
        .get(0);
    assert_eq!(status, "loading");

    local.restart();
    // The message was received by the killed process; it comes back when its
    // visibility timeout passes (1 s here).
    let batch = local.settled(&batch_id).await;
    assert_eq!(
        (batch["status"].clone(), batch["inserted"].clone()),
        (json!("loaded"), json!(1000))
    );
    let rows = count(&db, "SELECT count(*) FROM public.events").await;
    assert_eq!(rows, 1000);
}

#[tokio::test]
async fn serves_its_openapi_document_and_requires_the_api_key() {
    require!(Service::Postgres);
    let local = Local::start("").await;
    let doc: Value = reqwest::get(format!("{}/openapi.json", local.url))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(doc["info"]["title"], format!("pipeline-{}-api", local.env));
    assert!(doc["paths"]["/v1/datasets/events/batches"]["post"].is_object());
    assert_eq!(doc["servers"], json!([{"url": local.url}]));
    let response = reqwest::get(format!("{}/v1/health", local.url))
        .await
        .expect("get");
    assert_eq!(response.status().as_u16(), 403);
    // A key of the right form that is not the key is refused too.
    let mut wrong = local.api_key.clone().into_bytes();
    let last = wrong.len() - 1;
    wrong[last] = if wrong[last] == b'0' { b'1' } else { b'0' };
    let response = local
        .http
        .get(format!("{}/v1/health", local.url))
        .header("x-api-key", String::from_utf8(wrong).expect("ascii"))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status().as_u16(), 403);
    // Its file is its owner's alone.
    use std::os::unix::fs::PermissionsExt;
    let file = local.dir.path().join("data").join("api-key");
    let mode = std::fs::metadata(&file)
        .expect("the key's file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let (status, health) = local.get("/v1/health").await;
    assert_eq!(
        (status, health),
        (200, json!({"status": "ok", "environment": local.env}))
    );
    // Every operation of the document reaches a handler: none is answered
    // by the router's 405 or its 404 for a path no function serves.
    let batch = uuid::Uuid::now_v7().to_string();
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            let path = path.replace("{batch_id}", &batch);
            let (status, answer) = match method.as_str() {
                "get" => local.get(&path).await,
                "post" => local.post(&path, "application/json", "{}").await,
                other => panic!("{other} {path}: an operation the router does not take"),
            };
            let message = answer["message"].as_str().unwrap_or_default();
            assert!(
                status != 405 && !message.starts_with("no route"),
                "{method} {path} answered {status}: {answer}"
            );
            operations += 1;
        }
    }
    assert!(
        operations >= pipeline_contract::ROUTES.len(),
        "{operations} operations"
    );
}

/// schemathesis, every check, against `pipeline local` for two minutes,
/// through its coverage, fuzzing and stateful phases: no failure. Its
/// settings (tests/schemathesis/) say where a schema-valid request may still
/// be refused, and why.
#[tokio::test]
async fn schemathesis_finds_no_failure_in_two_minutes() {
    require!(Service::Postgres, Service::Schemathesis);
    let local = Local::start("").await;
    // Every dataset of every shipped environment is in this one.
    let mut loader = pipeline_cli::spec::Loader::new(Some(common::repo().join("environments")));
    let here = loader.load("dev").expect("dev");
    for env in ["dit", "uat", "prod"] {
        let spec = loader.load(env).expect("spec");
        for dataset in spec.spec.datasets.keys() {
            assert!(here.spec.datasets.contains_key(dataset), "{env}: {dataset}");
        }
    }
    schemathesis(
        &local,
        &format!("x-api-key: {}", local.api_key),
        120,
        "20261201",
    );
}

/// schemathesis, every check and phase, against `local`'s own document for
/// `max_time` seconds, with `header` on each request: no failure. Its
/// settings (tests/schemathesis/) say where a schema-valid request may
/// still be refused, and why.
fn schemathesis(local: &Local, header: &str, max_time: u32, seed: &str) {
    let settings = common::repo().join("tests").join("schemathesis");
    let out = Command::new(Service::Schemathesis.program())
        .arg("--config-file")
        .arg(settings.join("schemathesis.toml"))
        .args(["run", &format!("{}/openapi.json", local.url)])
        .args(["--header", header])
        // One worker: with two, schemathesis's threads parse sources with
        // `ast` at once, and CPython 3.11 keeps the AST builder's recursion
        // depth per interpreter, not per call, so a run could end in
        // "AST constructor recursion depth mismatch" (a judge's crash, not a
        // finding; seen once in CI).
        .args([
            "--checks",
            "all",
            "--max-time",
            &max_time.to_string(),
            "--workers",
            "1",
        ])
        .args(["--seed", seed])
        .env("PYTHONPATH", &settings)
        .env("SCHEMATHESIS_HOOKS", "pipeline_hooks")
        .env("NO_COLOR", "1")
        .current_dir(local.dir.path())
        .output()
        .expect("run schemathesis");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for phase in ["Coverage", "Fuzzing", "Stateful"] {
        assert!(
            text.contains(&format!("✅ {phase}")),
            "{phase} did not pass: {text}"
        );
    }
    assert!(!text.contains("failure"), "{text}");
}

/// schemathesis against `pipeline local` with `auth: cognito`, a token of
/// a client with every scope sent with each request: the document's
/// `oauth2` scheme, its scopes per operation and its 401 answers are what
/// the API does, and its checks of missing or wrong credentials (sent
/// without the token) find the 401 the document gives.
#[tokio::test]
async fn schemathesis_finds_no_failure_with_scoped_tokens() {
    require!(Service::Postgres, Service::Schemathesis);
    let local = Local::start(
        "account: \"123456789012\"
api:
  auth: cognito
  clients:
    all: [events.read, events.write, readings.read, readings.write]
",
    )
    .await;
    let token = local.token("all").await;
    schemathesis(
        &local,
        &format!("Authorization: Bearer {token}"),
        60,
        "20261208",
    );
}

#[tokio::test]
async fn ctrl_c_stops_cleanly() {
    require!(Service::Postgres);
    let mut local = Local::start("").await;
    let pid = local.child.id().to_string();
    let status = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill -INT");
    assert!(status.success());
    let exit = local.child.wait().expect("wait");
    assert_eq!(exit.code(), Some(0));
}

/// A dataset change that can lose data (a retype) is refused when
/// `pipeline local` starts, as `deploy` refuses it: exit 2, a message naming
/// `allow_destructive_changes`, and the table as it was.
#[tokio::test]
async fn a_retype_is_refused_at_start_with_exit_2_naming_the_setting() {
    require!(Service::Postgres);
    let notes = |kind: &str| {
        format!(
            "datasets:\n  notes:\n    format: ndjson\n    columns:\n      - {{name: id, type: bigint}}\n      - {{name: body, type: {kind}}}\n    primary_key: [id]\n    on_conflict: ignore\n"
        )
    };
    let mut local = Local::start(&notes("text")).await;
    let (status, _) = local
        .post(
            "/v1/datasets/notes/batches",
            "application/x-ndjson",
            "{\"id\": 1, \"body\": \"kept\"}\n",
        )
        .await;
    assert_eq!(status, 202);
    local.kill();
    let spec = local
        .dir
        .path()
        .join("environments")
        .join(format!("{}.yaml", local.env));
    std::fs::write(&spec, format!("extends: dev\n{}", notes("int"))).expect("spec");
    let out = Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .args([
            "--output",
            "json",
            "local",
            "--env",
            &local.env,
            "--port",
            "0",
            "--data-dir",
        ])
        .arg(local.dir.path().join("data"))
        .current_dir(local.dir.path())
        .env("NO_COLOR", "1")
        .env(
            "DATABASE_URL",
            "postgres://postgres@127.0.0.1:5432/postgres",
        )
        .output()
        .expect("run pipeline local");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let error: Value = stderr
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON error: {stderr}"));
    assert_eq!(
        error["error"]["message"],
        "migrating dataset `notes` needs changes that can lose data: change column `body` from text to integer; set `datasets.notes.allow_destructive_changes: true` to make them"
    );
    let db = local.db().await;
    let kind: String = db
        .query_one(
            "SELECT data_type::text FROM information_schema.columns WHERE table_name = 'notes' AND column_name = 'body'",
            &[],
        )
        .await
        .expect("column")
        .get(0);
    assert_eq!(kind, "text");
}
