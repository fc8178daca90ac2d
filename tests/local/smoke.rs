//! `pipeline smoke` against a running `pipeline local`.

use super::*;

const SMOKE: &str = "datasets:
  smoke:
    format: csv
    columns:
      - {name: id, type: uuid}
      - {name: at, type: timestamptz}
      - {name: note, type: text}
      - {name: n, type: bigint}
      - {name: extra, type: jsonb, nullable: true}
    primary_key: [id]
    on_conflict: ignore
";

#[tokio::test]
async fn smoke_checks_health_a_read_and_a_write_to_the_smoke_dataset_only() {
    require!(Service::Postgres);
    let local = Local::start(SMOKE).await;
    let out = client(&local, &["smoke"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<(&str, &str)> = stdout
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            Some((words.next()?, words.next()?))
        })
        .collect();
    assert_eq!(
        lines[..3],
        [("health", "ok"), ("read", "ok"), ("write", "ok")],
        "{stdout}"
    );
    assert!(stdout.ends_with(" passed its smoke checks\n"), "{stdout}");
    let db = local.db().await;
    assert_eq!(count(&db, "SELECT count(*) FROM public.smoke").await, 1);
    assert_eq!(count(&db, "SELECT count(*) FROM public.events").await, 0);
}

#[tokio::test]
async fn smoke_skips_the_write_without_a_smoke_dataset_and_fails_when_the_api_is_down() {
    require!(Service::Postgres);
    let mut local = Local::start("").await;
    let out = client(&local, &["--output", "json", "smoke"]);
    assert_eq!(out.status.code(), Some(0));
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["checks"][2]["result"], "skipped");
    assert_eq!(
        report["checks"][2]["detail"],
        "there is no dataset `smoke`: writes are checked only there, so that real data stays clean"
    );
    local.kill();
    let out = client(&local, &["smoke"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("health  failed"), "{stdout}");
    assert!(stdout.ends_with(" FAILED its smoke checks\n"), "{stdout}");
}
