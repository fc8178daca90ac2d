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
        chunk_queue: None,
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
    let page = body_json(&response);
    let users: Vec<&Value> = page["records"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| &r["user_id"])
        .collect();
    assert_eq!(users, vec![&Value::from(7)]);

    // The loader's direct invocation by the deploy.
    let migrated = loader::invoke(&ctx, serde_json::json!({"action": "migrate"}))
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
