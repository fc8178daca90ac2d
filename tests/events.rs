//! The handlers fed real Lambda event fixtures (API Gateway REST proxy
//! events, an SQS event carrying S3 notifications, an S3 test event and a
//! broken message), without AWS: the same conversions the functions' `main`
//! uses, a local object store and the real Postgres.

use crate::common;

use pipeline_testkit::{Service, require};

use aws_lambda_events::event::sqs::SqsEvent;
use pipeline_shared::api::Context;
use pipeline_shared::store::{LocalStore, Store};
use pipeline_shared::{db, lambda};
use serde_json::Value;

const ADMIN: &str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres";

fn fixture(name: &str) -> String {
    std::fs::read_to_string(common::repo().join("tests/fixtures").join(name)).expect("fixture")
}

async fn connect(config: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(config, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
}

fn body_json(response: &lambda_http::Response<lambda_http::Body>) -> Value {
    match response.body() {
        lambda_http::Body::Text(text) => serde_json::from_str(text).expect("json body"),
        other => panic!("expected a text body, got {other:?}"),
    }
}

/// The `user_id` of each record of a page of records.
fn user_ids(page: &Value) -> Vec<&Value> {
    page["records"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| &r["user_id"])
        .collect()
}

#[tokio::test]
async fn api_gateway_and_sqs_events_drive_the_handlers() {
    require!(Service::Postgres);
    let name = format!("pipeline_events_{}", uuid::Uuid::new_v4().simple());
    let admin = connect(ADMIN).await;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create database");
    let objects = tempfile::tempdir().expect("temp dir");
    let mut loader = pipeline_cli::spec::Loader::new(Some(common::repo().join("environments")));
    let env = loader.load("dev").expect("dev");
    let pool =
        pipeline_shared::runtime::pool(&format!("postgres://postgres@127.0.0.1:5432/{name}"), 2)
            .expect("pool");
    let ctx = Context {
        env: "dev".into(),
        datasets: env.spec.datasets.clone(),
        store: Store::Local(LocalStore::new(objects.path())),
        pool,
        max_inline_bytes: 1 << 20,
        chunk_bytes: 0,
        upload_part_bytes: pipeline_shared::store::DEFAULT_UPLOAD_PART_BYTES,
        merge_slice_rows: pipeline_shared::db::DEFAULT_SLICE_ROWS,
        max_decoded_ratio: pipeline_shared::compression::DEFAULT_DECODED_RATIO,
        chunk_queue: None,
        max_receives: None,
        definitions: Default::default(),
    };
    loader::migrate(&ctx).await.expect("migrate");

    // API Gateway: POST a batch.
    let event = lambda_http::request::from_str(&fixture("apigw-post-batch.json"))
        .expect("API Gateway event");
    let response = lambda::response(ingest::handle(&ctx, lambda::request(event)).await);
    assert_eq!(response.status(), 202);
    let accepted = body_json(&response);
    assert_eq!(accepted["records"], 2);
    assert_eq!(
        accepted["status_url"],
        format!(
            "/live/v1/batches/{}",
            accepted["batch_id"].as_str().unwrap_or("")
        )
    );
    // The same event again: its Idempotency-Key returns the first batch.
    let event = lambda_http::request::from_str(&fixture("apigw-post-batch.json"))
        .expect("API Gateway event");
    let again = body_json(&lambda::response(
        ingest::handle(&ctx, lambda::request(event)).await,
    ));
    assert_eq!(again["batch_id"], accepted["batch_id"]);

    // SQS: the S3 notification of that object, a test event, a broken message.
    let batch_id =
        uuid::Uuid::try_parse(accepted["batch_id"].as_str().unwrap_or("")).expect("uuid");
    let client = ctx.pool.get().await.expect("client");
    let batch = db::batch(&**client, batch_id)
        .await
        .expect("batch")
        .expect("exists");
    let sqs: SqsEvent = serde_json::from_str(
        &fixture("sqs-s3-events.json").replace("OBJECT_KEY", &batch.object_key),
    )
    .expect("SQS event");
    let response = loader::handle(&ctx, sqs.clone()).await;
    let failures: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failures, vec!["c0ffee00-0000-4000-8000-00000000dead"]);
    let batch = db::batch(&**client, batch_id)
        .await
        .expect("batch")
        .expect("exists");
    assert_eq!(
        (batch.answer.status.as_str(), batch.answer.inserted),
        ("loaded", Some(2))
    );
    // Redelivered: nothing changes.
    loader::handle(&ctx, sqs).await;
    let rows: i64 = client
        .query_one("SELECT count(*) FROM public.events", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(rows, 2);

    // API Gateway: GET records.
    let event = lambda_http::request::from_str(&fixture("apigw-get-records.json"))
        .expect("API Gateway event");
    let response = lambda::response(::query::handle(&ctx, lambda::request(event)).await);
    assert_eq!(response.status(), 200);
    assert_eq!(user_ids(&body_json(&response)), vec![&Value::from(7)]);

    // The loader's direct invocation by the deploy.
    let migrated = loader::invoke(&ctx, serde_json::json!({"action": "migrate"}), None)
        .await
        .expect("migrate action");
    assert_eq!(migrated, serde_json::json!({"statements": []}));

    drop(client);
    ctx.pool.close();
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .expect("drop database");
}

/// The functions' own executables (debug builds), each started against the local Lambda Runtime API
/// with the environment Lambda and the app template give it: the schema
/// through the migrations' function (the loader's executable), a batch posted to ingest, its S3
/// notification loaded by the loader, the record read back through query.
/// A failure comes back as Lambda reports it: an invocation's error with
/// its kind and message, an init that fails with the reason on its log.
#[tokio::test]
async fn the_bootstraps_answer_their_events_through_the_lambda_runtime_api() {
    use common::runtime_api::{Lab, fixture, post_batch, sqs_event};
    require!(Service::Postgres, Service::Moto);
    // The executables are no target of the test build (they set `test =
    // false`): build them as `cargo build` does, a no-op after scripts/test.
    // Without the variables cargo sets for this test process: ring's build
    // script watches CARGO_MANIFEST_DIR, and seeing it changed would rebuild
    // everything above ring, here and then in the next test build.
    let mut cargo = std::process::Command::new(env!("CARGO"));
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_BIN_")
            || name.starts_with("CARGO_MANIFEST_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "OUT_DIR",
            ]
            .contains(&name.as_ref())
        {
            cargo.env_remove(name.as_ref());
        }
    }
    let status = cargo
        .current_dir(common::repo())
        .args(["build", "--workspace", "--bins", "--locked", "--quiet"])
        .status()
        .expect("run cargo");
    assert!(status.success(), "cargo build --workspace --bins failed");
    let binaries = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent().map(std::path::Path::to_path_buf))
        .expect("the target directory");
    let name = format!("pipeline_bootstraps_{}", uuid::Uuid::new_v4().simple());
    let admin = connect(ADMIN).await;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create database");
    let outcome = async {
        let lab = Lab::new(&binaries, &admin, &name).await?;
        let migrated = lab.migrate().await?;
        assert!(
            migrated["statements"]
                .as_array()
                .is_some_and(|s| !s.is_empty()),
            "{migrated}"
        );

        let mut ingest = lab.start("ingest").await?;
        ingest.ready().await?;
        let (_, answer) = ingest
            .invoke(&post_batch(&fixture("apigw-post-batch.json")?))
            .await?;
        ingest.stop().await;
        assert_eq!(answer["statusCode"], 202, "{answer}");
        let accepted: Value = serde_json::from_str(answer["body"].as_str().unwrap_or_default())?;
        assert_eq!(accepted["records"], 2, "{accepted}");
        let batch_id = uuid::Uuid::parse_str(accepted["batch_id"].as_str().unwrap_or_default())?;

        let client = connect(&format!(
            "host=127.0.0.1 port=5432 user=postgres dbname={name}"
        ))
        .await;
        let key: String = client
            .query_one(
                "SELECT object_key FROM pipeline.batches WHERE batch_id = $1",
                &[&batch_id],
            )
            .await?
            .get(0);
        let mut loader = lab.start("loader").await?;
        loader.ready().await?;
        let (_, answer) = loader
            .invoke(&sqs_event(&fixture("sqs-s3-events.json")?, &key)?)
            .await?;
        loader.stop().await;
        assert_eq!(answer, serde_json::json!({"batchItemFailures": []}));
        let row = client
            .query_one(
                "SELECT status, inserted FROM pipeline.batches WHERE batch_id = $1",
                &[&batch_id],
            )
            .await?;
        assert_eq!(
            (row.get::<_, String>(0), row.get::<_, Option<i64>>(1)),
            ("loaded".to_string(), Some(2))
        );

        let mut query = lab.start("query").await?;
        query.ready().await?;
        let (_, answer) = query.invoke(&fixture("apigw-get-records.json")?).await?;
        query.stop().await;
        assert_eq!(answer["statusCode"], 200, "{answer}");
        let page: Value = serde_json::from_str(answer["body"].as_str().unwrap_or_default())?;
        assert_eq!(user_ids(&page), vec![&Value::from(7)]);

        // A migration whose secret is not there fails the invocation.
        let mut migrate = lab
            .start_with("migrate", |env| {
                env.insert("DB_SECRET_ARN".into(), "pipeline-missing".into());
            })
            .await?;
        migrate.ready().await?;
        let answer = migrate
            .send(&serde_json::json!({"action": "migrate"}))
            .await?;
        migrate.stop().await;
        assert!(answer.error, "{}", answer.body);
        assert_eq!(answer.body["errorType"], "ConfigError");
        let message = answer.body["errorMessage"].as_str().unwrap_or_default();
        assert!(
            message.starts_with(
                "the database secret pipeline-missing: service error: ResourceNotFoundException"
            ),
            "{message}"
        );

        // Without its environment, the init fails before asking for an event.
        let mut query = lab
            .start_with("query", |env| {
                env.remove("PIPELINE_ENV");
            })
            .await?;
        let (status, log, asked) = query.exited().await?;
        assert!(!status.success());
        assert!(!asked);
        let line: Value = serde_json::from_str(log.trim())?;
        assert_eq!(
            (&line["level"], &line["fields"]),
            (
                &Value::from("ERROR"),
                &serde_json::json!({
                    "message": "init failed",
                    "error": "environment variable PIPELINE_ENV is not set"
                })
            ),
            "{log}"
        );
        Ok::<_, common::runtime_api::Fail>(())
    }
    .await;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .expect("drop database");
    if let Err(e) = outcome {
        panic!("{e}");
    }
}
