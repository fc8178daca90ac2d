//! Rollouts in `pipeline local`, as in AWS: a changed environment file is
//! migrated, published as a new version and rolled out under the
//! environment's strategy, with the previous and the new handlers side by
//! side (ingest, loader and query each through their alias). Batches are
//! pushed all along, through the rollout and through a rollback; every one
//! the API accepted ends `loaded` with its rows, exactly once.

use super::*;

/// The test's dataset, version 1; `{extra}` adds columns.
fn spec(strategy: &str, columns: &str, day_format: &str) -> String {
    format!(
        r#"rollout: {{{strategy}, poll_seconds: 5, alarms: [ingest-errors, loader-errors, query-errors]}}
waivers: [{{rule: single-az, reason: "rollouts tried on one machine"}}, {{rule: no-waf, reason: "no web ACL in front of pipeline local"}}]
datasets:
  trips:
    format: ndjson
    columns:
      - {{name: id, type: bigint}}
      - {{name: day, type: date, format: "{day_format}"}}
{columns}
    primary_key: [id]
    on_conflict: ignore
"#
    )
}

const CANARY: &str = "strategy: canary, percent: 50, bake_minutes: 1";
const CITY: &str = "      - {name: city, type: text}";

/// A batch of two records, `id` and `id + 1`, in a shape of the records.
type Shape = fn(i64) -> Value;

/// What the pusher sent and what the API answered.
#[derive(Debug, Default)]
struct Pushed {
    /// Accepted batches: their ids, and their records' ids.
    accepted: Vec<(String, Vec<i64>)>,
    /// Batches of the second shape (the new version's) accepted while the
    /// previous version still served part of the traffic.
    new_before_promotion: usize,
    /// How many were refused (a shape the answering version does not take).
    refused: usize,
}

/// Pushes batches without pause, cycling through `shapes`, until `stop`.
fn pusher(
    local: &Local,
    shapes: Vec<Shape>,
    stop: tokio::sync::watch::Receiver<bool>,
    promoted: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<Pushed> {
    let (http, url, key) = (local.http.clone(), local.url.clone(), local.api_key.clone());
    tokio::spawn(async move {
        let mut pushed = Pushed::default();
        let mut id = 0i64;
        while !*stop.borrow() {
            let which = (id as usize / 2) % shapes.len();
            let shape = shapes[which];
            let before_promotion = !promoted.load(std::sync::atomic::Ordering::SeqCst);
            let ids = vec![id, id + 1];
            let body: String = ids.iter().map(|i| format!("{}\n", shape(*i))).collect();
            id += 2;
            let response = http
                .post(format!("{url}/v1/datasets/trips/batches"))
                .header("x-api-key", &key)
                .header("content-type", "application/x-ndjson")
                .body(body)
                .send()
                .await
                .expect("POST");
            let status = response.status().as_u16();
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            match status {
                202 => {
                    pushed.accepted.push((
                        answer["batch_id"].as_str().expect("batch id").to_string(),
                        ids,
                    ));
                    pushed.new_before_promotion += usize::from(which == 1 && before_promotion);
                }
                400 => pushed.refused += 1,
                other => panic!("POST answered {other}: {answer}"),
            }
        }
        pushed
    })
}

impl Local {
    fn env_file(&self) -> PathBuf {
        self.dir
            .path()
            .join("environments")
            .join(format!("{}.yaml", self.env))
    }

    /// Writes the environment file anew, as a user editing it would.
    fn edit(&self, yaml: &str) {
        std::fs::write(self.env_file(), format!("extends: dev\n{yaml}")).expect("write the spec");
    }

    /// `pipeline rollout <action> --local` from another process.
    fn rollout(&self, action: &str) -> (std::process::Output, Value) {
        let output = common::pipeline(
            self.dir.path(),
            &[
                "--output", "json", "rollout", action, "--env", &self.env, "--local",
            ],
        );
        let state = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
        (output, state)
    }

    /// Every accepted batch is `loaded`, and the table holds each of their
    /// records exactly once.
    async fn all_loaded(&self, pushed: &Pushed) {
        for (batch_id, _) in &pushed.accepted {
            let batch = self.settled(batch_id).await;
            assert_eq!(batch["status"], "loaded", "{batch}");
        }
        let records = pushed
            .accepted
            .iter()
            .map(|(_, ids)| ids.len())
            .sum::<usize>() as i64;
        let db = self.db().await;
        let (rows, distinct): (i64, i64) = {
            let row = db
                .query_one("SELECT count(*), count(DISTINCT id) FROM public.trips", &[])
                .await
                .expect("count");
            (row.get(0), row.get(1))
        };
        assert_eq!((rows, distinct), (records, records));
    }
}

/// Starts a local pipeline on `before`, pushes batches in `shapes` while
/// `after` rolls out, and checks that every accepted batch loaded once, some
/// of them while both versions served.
async fn rolls_out(before: &str, after: &str, shapes: Vec<Shape>) -> (Local, Pushed) {
    let local = Local::start_with(before, &["--rollout-speed", "20"]).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let promoted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pushing = pusher(&local, shapes, stopped, promoted.clone());
    local.edit(after);
    let canary = local
        .event("shifted to 50%", |e| {
            e["event"] == "shifted" && e["percent"] == 50
        })
        .await;
    assert_eq!(canary["targets"][0]["from"], "1", "{canary}");
    assert_eq!(canary["targets"][0]["to"], "2", "{canary}");
    local.event("promoted", |e| e["event"] == "promoted").await;
    promoted.store(true, std::sync::atomic::Ordering::SeqCst);
    local
        .event("the rollout's end", |e| e["event"] == "rollout_ended")
        .await;
    let (_, state) = local.rollout("status");
    assert_eq!(
        (&state["phase"], &state["strategy"]),
        (&json!("promoted"), &json!("canary"))
    );
    // Pushes go on a little while the new version serves everything.
    let (_, promoted) = local.get("/v1/datasets/trips/records?limit=1").await;
    assert!(promoted["records"].is_array(), "{promoted}");
    let _ = stop.send(true);
    let pushed = pushing.await.expect("the pusher");
    // The new version's batches flowed while both versions served: each
    // met either loader.
    assert!(pushed.new_before_promotion >= 5, "{pushed:?}");
    local.all_loaded(&pushed).await;
    (local, pushed)
}

/// The value the table holds for `column` of record `id`, as text.
async fn stored(local: &Local, id: i64, column: &str) -> Option<String> {
    local
        .db()
        .await
        .query_one(
            &format!("SELECT {column}::text FROM public.trips WHERE id = $1"),
            &[&id],
        )
        .await
        .expect("the row")
        .get(0)
}

fn trip(id: i64) -> Value {
    json!({"id": id, "day": "2024-01-31", "city": "Oslo"})
}

#[tokio::test]
async fn a_canary_adds_a_nullable_column_while_batches_flow() {
    require!(Service::Postgres);
    let before = spec(CANARY, CITY, "%Y-%m-%d");
    let after = spec(
        CANARY,
        &format!("{CITY}\n      - {{name: tag, type: text, nullable: true}}"),
        "%Y-%m-%d",
    );
    let tagged: Shape = |id| json!({"id": id, "day": "2024-01-31", "city": "Oslo", "tag": "new"});
    let (local, pushed) = rolls_out(&before, &after, vec![trip, tagged]).await;
    // Every accepted tagged record kept its tag, whichever loader met it.
    for (_, ids) in &pushed.accepted {
        for id in ids {
            let tag = stored(&local, *id, "tag").await;
            let sent = ((id / 2) % 2 == 1).then(|| "new".to_string());
            assert_eq!(tag, sent, "record {id}");
        }
    }
}

#[tokio::test]
async fn a_canary_adds_a_column_with_a_default_while_batches_flow() {
    require!(Service::Postgres);
    let before = spec(CANARY, CITY, "%Y-%m-%d");
    let after = spec(
        CANARY,
        &format!("{CITY}\n      - {{name: channel, type: text, default: web}}"),
        "%Y-%m-%d",
    );
    let app: Shape = |id| json!({"id": id, "day": "2024-01-31", "city": "Oslo", "channel": "app"});
    let (local, pushed) = rolls_out(&before, &after, vec![trip, app]).await;
    for (_, ids) in &pushed.accepted {
        for id in ids {
            let sent = if (id / 2) % 2 == 1 { "app" } else { "web" };
            assert_eq!(
                stored(&local, *id, "channel").await.as_deref(),
                Some(sent),
                "record {id}"
            );
        }
    }
}

#[tokio::test]
async fn a_canary_removes_a_column_while_batches_flow() {
    require!(Service::Postgres);
    let before = spec(CANARY, CITY, "%Y-%m-%d");
    let after = spec(CANARY, "", "%Y-%m-%d");
    let without: Shape = |id| json!({"id": id, "day": "2024-01-31"});
    let (local, pushed) = rolls_out(&before, &after, vec![trip, without]).await;
    // The column is kept, nullable: records sent with it kept their value.
    for (_, ids) in &pushed.accepted {
        for id in ids {
            let sent = ((id / 2) % 2 == 0).then(|| "Oslo".to_string());
            assert_eq!(stored(&local, *id, "city").await, sent, "record {id}");
        }
    }
}

#[tokio::test]
async fn a_canary_changes_a_date_format_while_batches_flow() {
    require!(Service::Postgres);
    let before = spec(CANARY, CITY, "%Y-%m-%d");
    let after = spec(CANARY, CITY, "%d.%m.%Y");
    let dotted: Shape = |id| json!({"id": id, "day": "31.01.2024", "city": "Oslo"});
    let (local, pushed) = rolls_out(&before, &after, vec![trip, dotted]).await;
    for (_, ids) in &pushed.accepted {
        for id in ids {
            assert_eq!(
                stored(&local, *id, "day").await.as_deref(),
                Some("2024-01-31")
            );
        }
    }
}

/// A linear rollout aborted by `pipeline rollout abort --local` from
/// another process in the middle of a bake: all traffic goes back to the
/// previous version and stays there, batches accepted by the new version
/// load with the previous loader, and the state says aborted.
#[tokio::test]
async fn an_abort_from_another_process_rolls_back_while_batches_flow() {
    require!(Service::Postgres);
    let linear = "strategy: linear, percent: 25, interval_minutes: 1";
    let before = spec(linear, CITY, "%Y-%m-%d");
    let after = spec(
        linear,
        &format!("{CITY}\n      - {{name: tag, type: text, nullable: true}}"),
        "%Y-%m-%d",
    );
    let local = Local::start_with(&before, &["--rollout-speed", "4"]).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let tagged: Shape = |id| json!({"id": id, "day": "2024-01-31", "city": "Oslo", "tag": "new"});
    let never = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pushing = pusher(&local, vec![trip, tagged], stopped, never);
    local.edit(&after);
    local
        .event("shifted to 50%", |e| {
            e["event"] == "shifted" && e["percent"] == 50
        })
        .await;
    let (output, _) = local.rollout("abort");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let ended = local
        .event("ended by the abort", |e| e["event"] == "rollout_ended")
        .await;
    assert!(
        ended["message"]
            .as_str()
            .is_some_and(|m| m.contains("`pipeline rollout abort`")),
        "{ended}"
    );
    let (_, state) = local.rollout("status");
    assert_eq!(state["phase"], "aborted", "{state}");
    assert_eq!(state["step"], 1, "{state}");
    let db = local.db().await;
    let aliases = count(
        &db,
        "SELECT count(*) FROM pipeline.local_aliases WHERE version = 1 AND canary IS NULL",
    )
    .await;
    assert_eq!(aliases, 3);
    let (output, _) = local.rollout("promote");
    assert_eq!(output.status.code(), Some(2), "the rollout is over");
    let _ = stop.send(true);
    let pushed = pushing.await.expect("the pusher");
    local.all_loaded(&pushed).await;
    let printed = local.events.lock().map(|e| e.clone()).unwrap_or_default();
    assert!(
        !printed.iter().any(|e| e["event"] == "promoted"),
        "{printed:#?}"
    );
}

/// A change the spec does not allow (a retype) is refused by a running
/// `pipeline local`, naming `allow_destructive_changes`, and the previous
/// version serves on; allowed, it moves all traffic at once, saying why. A
/// change made while `pipeline local` was stopped rolls out at its restart.
#[tokio::test]
async fn refused_forced_and_restarted_changes() {
    require!(Service::Postgres);
    let n = |kind: &str| format!("{CITY}\n      - {{name: n, type: {kind}, nullable: true}}");
    let mut local = Local::start_with(
        &spec(CANARY, &n("int"), "%Y-%m-%d"),
        &["--rollout-speed", "20"],
    )
    .await;
    local.edit(&spec(CANARY, &n("bigint"), "%Y-%m-%d"));
    let refused = local
        .event("refused", |e| e["event"] == "deploy_failed")
        .await;
    assert_eq!(
        refused["message"],
        "not deployed, the previous version serves on: migrating dataset `trips` needs changes that can lose data: change column `n` from integer to bigint; set `datasets.trips.allow_destructive_changes: true` to make them"
    );
    let (status, answer) = local
        .post(
            "/v1/datasets/trips/batches",
            "application/x-ndjson",
            format!("{}\n", trip(1)),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    let batch_id = answer["batch_id"].as_str().expect("batch id").to_string();
    assert_eq!(local.settled(&batch_id).await["status"], "loaded");

    let allowed = spec(CANARY, &n("bigint"), "%Y-%m-%d").replace(
        "    on_conflict: ignore",
        "    on_conflict: ignore\n    allow_destructive_changes: true",
    );
    local.edit(&allowed);
    let forced = local
        .event("all at once", |e| e["event"] == "all_at_once")
        .await;
    assert!(
        forced["message"]
            .as_str()
            .is_some_and(|m| m.contains("change column `n` from integer to bigint")),
        "{forced}"
    );
    local.event("promoted", |e| e["event"] == "promoted").await;
    let (_, state) = local.rollout("status");
    assert_eq!(
        (&state["phase"], &state["strategy"]),
        (&json!("promoted"), &json!("all-at-once"))
    );

    local.kill();
    let tagged = format!(
        "{}\n      - {{name: tag, type: text, nullable: true}}",
        n("bigint")
    );
    local.edit(&spec(CANARY, &tagged, "%Y-%m-%d").replace(
        "    on_conflict: ignore",
        "    on_conflict: ignore\n    allow_destructive_changes: true",
    ));
    local.restart();
    let canary = local
        .event("shifted to 50%", |e| {
            e["event"] == "shifted" && e["percent"] == 50
        })
        .await;
    assert_eq!(
        (&canary["targets"][0]["from"], &canary["targets"][0]["to"]),
        (&json!("2"), &json!("3"))
    );
    local.event("promoted", |e| e["event"] == "promoted").await;
    let (status, answer) = local
        .post(
            "/v1/datasets/trips/batches",
            "application/x-ndjson",
            "{\"id\": 2, \"day\": \"2024-01-31\", \"city\": \"Oslo\", \"tag\": \"after\"}\n",
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    let batch_id = answer["batch_id"].as_str().expect("batch id").to_string();
    assert_eq!(local.settled(&batch_id).await["status"], "loaded");
}
