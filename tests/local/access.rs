//! `auth: cognito` in `pipeline local`: clients with a read or a write
//! scope per dataset get tokens at `/oauth2/token` (client credentials, as
//! Cognito's token endpoint), and each token reaches what its scopes allow
//! and nothing else, as API Gateway's authorizer (401) and the handlers
//! (the batch's own dataset) decide in AWS.

use super::*;

const SPEC: &str = "account: \"123456789012\"
api:
  auth: cognito
  clients:
    writer: [events.write, events.read]
    reader: [events.read]
    sensors: [readings.read]
";

/// A request with a bearer token (or none): its status and body.
async fn call(
    local: &Local,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let mut request = local
        .http
        .request(method, format!("{}{path}", local.url))
        .header("content-type", "application/x-ndjson")
        .body(body.to_string());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A GET with a bearer token (or none): its status and body.
async fn get(local: &Local, path: &str, token: Option<&str>) -> (u16, Value) {
    call(local, reqwest::Method::GET, path, token, "").await
}

/// Runs a client command of the real binary against `local`, with no API
/// key given: the CLI finds its client in the clients file `pipeline local`
/// keeps in `.pipeline/<env>/` (its default data directory; the tests'
/// instance keeps it in `data/`, and it is copied there first).
fn client_cli(local: &Local, args: &[&str]) -> std::process::Output {
    let kept = local.dir.path().join(".pipeline").join(&local.env);
    std::fs::create_dir_all(&kept).expect("mkdir");
    std::fs::copy(
        local.dir.path().join("data").join("clients.json"),
        kept.join("clients.json"),
    )
    .expect("copy");
    Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .args(args)
        .args(["--env", &local.env, "--url", &local.url])
        .current_dir(local.dir.path())
        .env("NO_COLOR", "1")
        .env_remove("PIPELINE_API_KEY")
        .output()
        .expect("run pipeline")
}

#[tokio::test]
async fn a_token_reaches_what_its_scopes_allow_and_nothing_else() {
    require!(Service::Postgres);
    let local = Local::start(SPEC).await;
    let (writer, reader, sensors) = (
        local.token("writer").await,
        local.token("reader").await,
        local.token("sensors").await,
    );
    use reqwest::Method;
    let batch = event(1, "click");

    // No token, or a forged one: 401, as API Gateway answers.
    let (status, answer) = call(&local, Method::GET, "/v1/datasets/events/records", None, "").await;
    assert_eq!((status, &answer["message"]), (401, &json!("Unauthorized")));
    let forged = format!("{}x", &reader[..reader.len() - 1]);
    let (status, _) = get(&local, "/v1/datasets/events/records", Some(&forged)).await;
    assert_eq!(status, 401);

    // The writer sends and reads back; its batch loads.
    let (status, accepted) = call(
        &local,
        Method::POST,
        "/v1/datasets/events/batches",
        Some(&writer),
        &batch,
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    let batch_id = accepted["batch_id"].as_str().expect("batch id").to_string();

    // The reader reads `events`, and the batch's status, but sends nothing
    // and reads no other dataset: the operation wants a scope it lacks.
    let (status, page) = get(&local, "/v1/datasets/events/records", Some(&reader)).await;
    assert_eq!(status, 200, "{page}");
    let (status, _) = get(&local, &format!("/v1/batches/{batch_id}"), Some(&reader)).await;
    assert_eq!(status, 200);
    for (method, path) in [
        (Method::POST, "/v1/datasets/events/batches"),
        (Method::POST, "/v1/datasets/events/uploads"),
        (Method::GET, "/v1/datasets/readings/records"),
    ] {
        let (status, answer) = call(&local, method.clone(), path, Some(&reader), &batch).await;
        assert_eq!(status, 401, "{method} {path}: {answer}");
    }

    // A token of another dataset passes the gateway on the batch routes
    // (any scope), and the handler answers the batch as missing: nothing is
    // learnt of datasets beyond its scopes.
    let (status, answer) = get(&local, &format!("/v1/batches/{batch_id}"), Some(&sensors)).await;
    assert_eq!(status, 404, "{answer}");
    let (status, _) = get(&local, "/v1/datasets/readings/records", Some(&sensors)).await;
    assert_eq!(status, 200);

    // The CLI gets its tokens itself: from the clients file `pipeline local`
    // keeps in `.pipeline/<env>/` (its default data directory), for the
    // client named.
    std::fs::write(local.dir.path().join("one.ndjson"), event(2, "view")).expect("write");
    let out = client_cli(
        &local,
        &[
            "push",
            "-d",
            "events",
            "one.ndjson",
            "--wait",
            "--client",
            "writer",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = client_cli(
        &local,
        &[
            "--output", "json", "query", "-d", "events", "--client", "reader",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page: Value = serde_json::from_slice(&out.stdout).expect("json page");
    assert_eq!(page["records"].as_array().map(Vec::len), Some(2), "{page}");
    let out = client_cli(
        &local,
        &["push", "-d", "events", "one.ndjson", "--client", "reader"],
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unauthorized"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// With `metering_keys`, each client also has an API key of the usage
/// plan, and a request needs both: the token (else 401) and a key (else
/// 403), as API Gateway checks them. The CLI sends the client's key from
/// the clients file beside its token.
#[tokio::test]
async fn metering_keys_go_beside_the_tokens() {
    require!(Service::Postgres);
    let local = Local::start(&format!("{SPEC}  metering_keys: true\n")).await;
    let reader = local.token("reader").await;
    let file: Value = serde_json::from_slice(
        &std::fs::read(local.dir.path().join("data").join("clients.json")).expect("clients.json"),
    )
    .expect("json");
    let key = file["clients"]["reader"]["api_key"]
        .as_str()
        .expect("a metering key");
    let get = |token: Option<&str>, key: Option<&str>| {
        let mut request = local
            .http
            .get(format!("{}/v1/datasets/events/records", local.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        async move { request.send().await.expect("request").status().as_u16() }
    };
    assert_eq!(get(Some(&reader), None).await, 403);
    assert_eq!(get(Some(&reader), Some("local-wrong")).await, 403);
    assert_eq!(get(None, Some(key)).await, 401);
    assert_eq!(get(Some(&reader), Some(key)).await, 200);

    let out = client_cli(
        &local,
        &[
            "--output", "json", "query", "-d", "events", "--client", "reader",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
