//! Many clients at once: every request is answered, none waits without end,
//! and every accepted batch loads, with the default pool and with a pool of
//! one connection.

use super::*;

use std::sync::Arc;

/// Batches posted in all, by this many clients at once.
const BATCHES: u32 = 2000;
const CLIENTS: u32 = 64;
/// A request not answered by then counts as hanging.
const ANSWER_WITHIN: Duration = Duration::from_secs(60);

/// What the burst's requests were answered.
#[derive(Default)]
struct Answers {
    accepted: Vec<String>,
    /// 503s, each with a `Retry-After`.
    busy: usize,
}

/// Posts `BATCHES` batches of two events from `CLIENTS` tasks; panics on an
/// answer other than 202, or 503 with `Retry-After`, and on a request that
/// is not answered.
async fn burst(local: &Arc<Local>) -> Answers {
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let local = local.clone();
        tasks.push(tokio::spawn(async move {
            let mut answers = Answers::default();
            for n in (client..BATCHES).step_by(CLIENTS as usize) {
                let body = event(2 * n, "burst") + &event(2 * n + 1, "burst");
                let request = local
                    .http
                    .post(format!("{}/v1/datasets/events/batches", local.url))
                    .header("x-api-key", &local.api_key)
                    .header("content-type", "application/x-ndjson")
                    .body(body)
                    .send();
                let response = tokio::time::timeout(ANSWER_WITHIN, request)
                    .await
                    .unwrap_or_else(|_| panic!("batch {n} had no answer in {ANSWER_WITHIN:?}"))
                    .expect("POST");
                let status = response.status().as_u16();
                let retry_after = response.headers().contains_key("retry-after");
                let answer: Value = response.json().await.unwrap_or(Value::Null);
                match status {
                    202 => answers
                        .accepted
                        .push(answer["batch_id"].as_str().unwrap_or_default().to_string()),
                    503 if retry_after => answers.busy += 1,
                    _ => panic!("batch {n}: {status} {answer}"),
                }
            }
            answers
        }));
    }
    let mut all = Answers::default();
    for task in tasks {
        let answers = task.await.expect("client task");
        all.accepted.extend(answers.accepted);
        all.busy += answers.busy;
    }
    all
}

/// Waits until no accepted batch is left unfinished, then checks that each
/// loaded with its two rows, once.
async fn all_loaded(local: &Local, answers: &Answers) {
    let db = local.db().await;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let open = count(
            &db,
            "SELECT count(*) FROM pipeline.batches WHERE status IN ('received', 'loading')",
        )
        .await;
        if open == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{open} batches still unfinished");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let accepted = answers.accepted.len() as i64;
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM pipeline.batches WHERE status = 'loaded' AND inserted = 2"
        )
        .await,
        accepted
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM public.events").await,
        2 * accepted
    );
    for batch_id in answers.accepted.iter().step_by(97) {
        let (status, batch) = local.get(&format!("/v1/batches/{batch_id}")).await;
        assert_eq!(
            (status, &batch["status"]),
            (200, &json!("loaded")),
            "{batch}"
        );
    }
}

#[tokio::test]
async fn a_burst_from_64_clients_is_answered_and_every_accepted_batch_loads() {
    require!(Service::Postgres);
    let local = Arc::new(Local::start("").await);
    let answers = burst(&local).await;
    eprintln!(
        "pool of 16: {} accepted, {} answered 503",
        answers.accepted.len(),
        answers.busy
    );
    assert!(!answers.accepted.is_empty());
    all_loaded(&local, &answers).await;
}

#[tokio::test]
async fn a_burst_against_a_pool_of_one_connection_is_answered_and_loads() {
    require!(Service::Postgres);
    let local = Arc::new(Local::start_with("", &["--pool-size", "1"]).await);
    let answers = burst(&local).await;
    eprintln!(
        "pool of 1: {} accepted, {} answered 503",
        answers.accepted.len(),
        answers.busy
    );
    assert!(!answers.accepted.is_empty());
    all_loaded(&local, &answers).await;
}
