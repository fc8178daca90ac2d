//! Canary rollouts through the binary: alarms roll back, a killed rollout
//! is promoted or aborted, failed migrations move no traffic.

use super::*;

fn shifted_to(percent: u64) -> impl Fn(&Value) -> bool {
    move |v| v["event"] == "shifted" && v["percent"] == percent
}

#[test]
fn a_canary_rolls_back_on_an_alarm_and_a_killed_one_is_promoted_or_aborted() {
    require!(Service::Moto);
    let p = Project::new(&[("live.yaml", LIVE)]);
    // The first versions take all the traffic at once: the aliases served
    // `$LATEST`, which takes no weights.
    let first = p.bootstrap_and_deploy("live");
    assert_eq!(first["rollout"], "all-at-once promoted");
    let ingest = first["outputs"]["IngestFunctionName"]
        .as_str()
        .expect("ingest")
        .to_string();
    assert_eq!(p.alias(&ingest), ("1".into(), vec![]));
    // moto's CloudFormation skips alarms: the gate alarm is made here.
    let alarm = "pipeline-live-ingest-errors";
    p.error_alarm(alarm, "AWS/Lambda");

    // The gate alarms watch every version behind the alias, outside a
    // rollout, and the new version alone during its bake.
    let monitoring = "pipeline-live-monitoring";
    let gate = || p.parameter(monitoring, "IngestGateVersion");
    assert_eq!(gate(), "all");

    // New ingest code: 10% for the bake, until the alarm fires.
    p.package("ingest", "v2");
    let deploy = ["--output", "json", "deploy", "--env", "live", "--yes"];
    let (child, _lines) = p.start_until(&deploy, shifted_to(10));
    assert_eq!(p.alias(&ingest), ("1".into(), vec![("2".into(), 0.1)]));
    assert_eq!(gate(), "2");
    p.set_alarm(alarm, "ALARM", "Threshold Crossed: 1 datapoint [4.0] > 1.0");
    let out = child.wait_with_output().expect("deploy");
    assert_eq!(
        failure(&out),
        (
            Some(3),
            format!(
                "the rollout was rolled back: {alarm} is in ALARM (Threshold Crossed: 1 datapoint [4.0] > 1.0)"
            ),
            "all traffic is on the previous versions; fix the cause and deploy again".into()
        )
    );
    assert_eq!(p.alias(&ingest), ("1".into(), vec![]));
    assert_eq!(gate(), "all");
    p.set_alarm(alarm, "OK", "fixed");

    // A deploy killed mid-bake leaves the rollout visible; promote ends it.
    let (mut child, _lines) = p.start_until(&deploy, shifted_to(10));
    child.kill().expect("kill");
    child.wait().expect("wait");
    assert_eq!(
        p.fails(&["deploy", "--env", "live", "--yes", "--force-unlock"]),
        (
            Some(2),
            "a rollout of `live` is in flight: step 1/2, 10% on the new versions".into(),
            "finish it first: `pipeline rollout promote --env live` or `pipeline rollout abort --env live`".into()
        )
    );
    let state = p.json(&["--output", "json", "rollout", "status", "--env", "live"]);
    assert_eq!(
        (&state["phase"], &state["step"]),
        (&"in_progress".into(), &0.into())
    );
    let text = p.ok(&["rollout", "status", "--env", "live"]);
    assert!(
        text.starts_with("canary rollout of live: in progress, step 1/2, new versions take 10%\n"),
        "{text}"
    );
    // The killed deploy left the gates on the version it was baking.
    assert_eq!(gate(), "2");
    p.ok(&["rollout", "promote", "--env", "live"]);
    assert_eq!(p.alias(&ingest), ("2".into(), vec![]));
    assert_eq!(gate(), "all");

    // Killed again with newer code: abort sends the traffic back.
    p.package("ingest", "v3");
    let unlock = [
        "--output",
        "json",
        "deploy",
        "--env",
        "live",
        "--yes",
        "--force-unlock",
    ];
    let (mut child, _lines) = p.start_until(&unlock, shifted_to(10));
    child.kill().expect("kill");
    child.wait().expect("wait");
    assert_eq!(p.alias(&ingest), ("2".into(), vec![("3".into(), 0.1)]));
    assert_eq!(gate(), "3");
    let text = p.ok(&["rollout", "abort", "--env", "live", "--function", "ingest"]);
    assert!(
        text.starts_with("rollout aborted: all traffic is on the previous versions (ingest 2→3)"),
        "{text}"
    );
    assert_eq!(p.alias(&ingest), ("2".into(), vec![]));
    assert_eq!(gate(), "all");
    let state = p.json(&["--output", "json", "rollout", "status", "--env", "live"]);
    assert_eq!(state["phase"], "aborted");
}

/// Deploys dev with the Lambda answers `results` queued: the deploy must fail
/// with `code` and `message`, no traffic moved, and the loader's alias still
/// on version 1.
fn refused_before_traffic(p: &Project, loader: &str, results: &[&str], code: i32, message: &str) {
    p.lambda_results(results);
    assert_eq!(
        p.fails(&["deploy", "--env", "dev", "--yes"]),
        (
            Some(code),
            message.to_string(),
            "no traffic moved; the previous versions still serve".into()
        )
    );
    assert_eq!(p.alias(loader), ("1".into(), vec![]));
}

#[test]
fn failed_migrations_or_smoke_invocations_move_no_traffic() {
    require!(Service::Moto);
    let p = Project::new(&[]);
    let first = p.bootstrap_and_deploy("dev");
    let loader = first["outputs"]["LoaderFunctionName"]
        .as_str()
        .expect("LoaderFunctionName")
        .to_string();
    assert_eq!(p.alias(&loader), ("1".into(), vec![]));

    p.package("loader", "v2");
    // A migration that can lose data is refused as the loader reports it
    // (its error kind and message): exit 2, the setting named.
    let message = "migrating dataset `events` needs changes that can lose data: drop column `kind`; set `datasets.events.allow_destructive_changes: true` to make them";
    let refused = format!(r#"{{"errorType":"MigrationRefused","errorMessage":"{message}"}}"#);
    refused_before_traffic(&p, &loader, &[&refused], 2, message);
    // Other migration failures are failures (exit 1).
    let failed =
        r#"{"errorType":"MessageError","errorMessage":"database: deadlock detected (40P01)"}"#;
    let message = format!("the migrations for loader version 2 failed: Unhandled: {failed}");
    refused_before_traffic(&p, &loader, &[failed], 1, &message);
    // Migrations pass, the smoke invocation crashes.
    let crashed = r#"{"errorType":"Runtime.ExitError","errorMessage":"RequestId: 1 Error: Runtime exited with error: signal: aborted"}"#;
    let message = format!("the smoke invocation of loader version 2 failed: Unhandled: {crashed}");
    refused_before_traffic(&p, &loader, &["{}", crashed], 1, &message);
    // Migrations pass, the loader's health action cannot reach its database.
    let unreachable = r#"{"errorType":"MessageError","errorMessage":"the database pool: Timeout occurred while creating a new object"}"#;
    let message =
        format!("the smoke invocation of loader version 2 failed: Unhandled: {unreachable}");
    refused_before_traffic(&p, &loader, &["{}", unreachable], 1, &message);

    // Both pass: the new version serves.
    let deployed = p.json(&["--output", "json", "deploy", "--env", "dev", "--yes"]);
    assert_eq!(
        deployed["versions_published"], 0,
        "version 2 was published by the first try"
    );
    assert_eq!(p.alias(&loader), ("2".into(), vec![]));
}

/// A migration the dataset allowed although previous versions cannot load
/// into its tables (a retype, as the loader's migrate action reports it):
/// the canary environment's traffic moves all at once.
#[test]
fn a_migration_old_versions_cannot_share_moves_all_traffic_at_once() {
    require!(Service::Moto);
    let p = Project::new(&[("live.yaml", LIVE)]);
    let first = p.bootstrap_and_deploy("live");
    let loader = first["outputs"]["LoaderFunctionName"]
        .as_str()
        .expect("LoaderFunctionName")
        .to_string();
    p.error_alarm("pipeline-live-ingest-errors", "AWS/Lambda");
    p.package("loader", "v2");
    let report = r#"{"statements":["ALTER TABLE public.\"events\" ALTER COLUMN \"kind\" TYPE integer USING \"kind\"::integer"],"destructive":["dataset `events`: change column `kind` from text to integer"]}"#;
    p.lambda_results(&[report]);
    let deployed = p.json(&["--output", "json", "deploy", "--env", "live", "--yes"]);
    assert_eq!(deployed["rollout"], "all-at-once promoted");
    assert_eq!(p.alias(&loader), ("2".into(), vec![]));
}
