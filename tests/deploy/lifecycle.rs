//! A whole environment's life against moto: bootstrap, deploy, redeploy,
//! inspect and destroy, and the guards that refuse a deploy.

use super::*;

#[test]
fn bootstrap_deploy_redeploy_change_inspect_and_destroy_dev() {
    require!(Service::Moto);
    let p = Project::new(&[]);
    let rt = runtime();

    // Nothing can be deployed before the bootstrap stack exists.
    assert_eq!(
        p.fails(&["deploy", "--env", "dev", "--yes"]),
        (
            Some(2),
            "environment `dev` is not bootstrapped: there is no stack pipeline-dev-bootstrap"
                .into(),
            "run `pipeline bootstrap --env dev` once, then deploy again".into()
        )
    );

    let boot = p.json(&["--output", "json", "bootstrap", "--env", "dev"]);
    let bucket = boot["assets_bucket"].as_str().expect("bucket").to_string();
    assert_eq!(bucket, "pipeline-dev-assets-123456789012-eu-west-1");
    assert!(
        boot["repository_uri"]
            .as_str()
            .is_some_and(|u| u.ends_with("/pipeline-dev-functions"))
    );
    // Bootstrapping again changes nothing.
    let again = p.ok(&["bootstrap", "--env", "dev"]);
    assert!(
        again.starts_with("pipeline-dev-bootstrap: no changes\n"),
        "{again}"
    );

    // Every stack is new.
    let out = p.run(&["diff", "--env", "dev", "--exit-code"]);
    assert_eq!(code(&out), Some(2), "{}", common::stderr(&out));
    let diff = common::stdout(&out);
    for stack in ["network", "data", "monitoring", "app"] {
        assert!(
            diff.contains(&format!("pipeline-dev-{stack}: create\n")),
            "{diff}"
        );
    }
    assert!(diff.contains("  + Database "), "{diff}");

    // Without a terminal, changes need --yes; no stack is left behind (the
    // packages are uploaded: they are named by their content).
    assert_eq!(
        p.fails(&["deploy", "--env", "dev"]),
        (
            Some(2),
            "stack pipeline-dev-network has changes, and there is no terminal to confirm them"
                .into(),
            "review the changes with `pipeline diff`, then deploy with `--yes`".into()
        )
    );
    assert_eq!(rt.block_on(p.objects(&bucket, "assets/")).len(), 3);
    let status = p.json(&["--output", "json", "status", "--env", "dev"]);
    assert!(
        stack_statuses(&status)[1..]
            .iter()
            .all(|(_, s)| s == "NOT_DEPLOYED"),
        "{status}"
    );

    // From nothing: every stack created (the packages are there already).
    let deployed = p.json(&["--output", "json", "deploy", "--env", "dev", "--yes"]);
    assert_eq!(deployed["event"], "deployed");
    assert_eq!(
        (&deployed["packages"], &deployed["uploaded"]),
        (&3.into(), &0.into())
    );
    let changed: Vec<bool> = deployed["stacks"]
        .as_array()
        .expect("stacks")
        .iter()
        .map(|s| s["changed"] == true)
        .collect();
    assert_eq!(changed, [true; 4]);
    let api_url = deployed["outputs"]["ApiUrl"].as_str().expect("ApiUrl");
    assert!(
        api_url.starts_with("https://")
            && api_url.ends_with(".execute-api.eu-west-1.amazonaws.com/live"),
        "{api_url}"
    );
    let written: Value = serde_json::from_slice(
        &std::fs::read(p.dir.path().join("out/dev/outputs.json")).expect("outputs.json"),
    )
    .expect("json");
    assert_eq!(written["pipeline-dev-app"]["ApiUrl"], api_url);
    assert!(
        written["pipeline-dev-data"]["DbSecretArn"]
            .as_str()
            .is_some_and(|a| a.starts_with("arn:aws:secretsmanager:"))
    );
    let mut assets = rt.block_on(p.objects(&bucket, "assets/"));
    assets.sort();
    assert_eq!(assets.len(), 3, "{assets:?}");
    // The app template is over CloudFormation's 51,200-byte inline limit
    // (its OpenAPI body and one role per function): it went through the
    // bucket, by URL, and the stack holds it as synthesized.
    let uploaded = rt.block_on(p.objects(&bucket, "templates/"));
    assert_eq!(uploaded.len(), 1, "{uploaded:?}");
    let held = rt.block_on(p.stack_template("pipeline-dev-app"));
    p.ok(&["synth", "--env", "dev"]);
    let synthesized: Value = serde_json::from_slice(
        &std::fs::read(p.dir.path().join("out/dev/app.template.json")).expect("app template"),
    )
    .expect("json");
    assert!(synthesized.to_string().len() > pipeline_cli::deploy::MAX_TEMPLATE_BODY);
    assert_eq!(held, synthesized);

    // Unchanged: nothing uploaded, nothing executed.
    let text = p.ok(&["deploy", "--env", "dev", "--yes"]);
    assert!(
        text.contains(
            "dev is up to date: no changes in 4 stacks\npackages: 0 uploaded, 3 already there; versions published: 0\n"
        ),
        "{text}"
    );
    for stack in ["network", "data", "monitoring", "app"] {
        assert!(
            text.contains(&format!("pipeline-dev-{stack}: no changes\n")),
            "{text}"
        );
    }
    let out = p.run(&["diff", "--env", "dev", "--exit-code"]);
    assert_eq!(
        code(&out),
        Some(0),
        "{}{}",
        common::stdout(&out),
        common::stderr(&out)
    );
    assert!(common::stdout(&out).ends_with("dev is up to date\n"));

    // One function changes: only its package goes up, only the app stack moves.
    p.package("ingest", "v2");
    let out = p.run(&["diff", "--env", "dev", "--exit-code"]);
    assert_eq!(code(&out), Some(2), "{}", common::stderr(&out));
    let diff = common::stdout(&out);
    assert!(
        diff.contains("pipeline-dev-network: no changes\n")
            && diff.contains("pipeline-dev-app: update\n"),
        "{diff}"
    );
    let deployed = p.json(&["--output", "json", "deploy", "--env", "dev", "--yes"]);
    assert_eq!(deployed["uploaded"], 1);
    assert_eq!(deployed["versions_published"], 1);
    let changed: Vec<bool> = deployed["stacks"]
        .as_array()
        .expect("stacks")
        .iter()
        .map(|s| s["changed"] == true)
        .collect();
    assert_eq!(changed, [false, false, false, true]);
    assert_eq!(rt.block_on(p.objects(&bucket, "assets/")).len(), 4);
    // The function runs the new package.
    let ingest = deployed["outputs"]["IngestFunctionName"]
        .as_str()
        .expect("name")
        .to_string();
    let new_zip = std::fs::read(p.dir.path().join("artifacts/ingest.zip")).expect("zip");
    let sha = rt.block_on(async {
        let lambda = aws_sdk_lambda::Client::new(&p.sdk().await);
        let f = lambda
            .get_function()
            .function_name(&ingest)
            .send()
            .await
            .expect("function");
        f.configuration()
            .and_then(|c| c.code_sha256().map(str::to_string))
    });
    use base64::Engine as _;
    use sha2::Digest as _;
    let expected = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&new_zip));
    assert_eq!(sha.as_deref(), Some(expected.as_str()));

    // Status and outputs.
    let status = p.json(&["--output", "json", "status", "--env", "dev"]);
    let statuses = stack_statuses(&status);
    assert_eq!(
        statuses[0],
        ("pipeline-dev-bootstrap".into(), "CREATE_COMPLETE".into())
    );
    assert_eq!(
        statuses[4],
        ("pipeline-dev-app".into(), "UPDATE_COMPLETE".into())
    );
    let functions: Vec<(&str, &str)> = status["functions"]
        .as_array()
        .expect("functions")
        .iter()
        .map(|f| {
            (
                f["function"].as_str().unwrap_or(""),
                f["live_version"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        functions,
        [("ingest", "2"), ("loader", "1"), ("query", "1")]
    );
    let outputs = p.json(&["--output", "json", "outputs", "--env", "dev"]);
    assert_eq!(outputs["pipeline-dev-app"]["ApiUrl"], api_url);
    let text = p.ok(&["outputs", "--env", "dev"]);
    assert!(
        text.contains(&format!("  ApiUrl                       {api_url}\n")),
        "{text}"
    );

    // Logs of a function, filtered.
    let group = written["pipeline-dev-monitoring"]["IngestLogGroupName"]
        .as_str()
        .expect("log group")
        .to_string();
    rt.block_on(put_events(
        &p,
        &group,
        "s1",
        &[
            (-3_600_000, "an old ERROR"),
            (-1000, "batch stored"),
            (-500, "ERROR cannot reach the database"),
        ],
    ));
    let text = p.ok(&[
        "logs",
        "--env",
        "dev",
        "--function",
        "ingest",
        "--since",
        "10m",
        "--filter",
        "ERROR",
    ]);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.trim_end()
            .ends_with(" ERROR cannot reach the database"),
        "{text}"
    );
    let text = p.ok(&[
        "logs",
        "--env",
        "dev",
        "--function",
        "ingest",
        "--since",
        "2h",
    ]);
    assert_eq!(text.lines().count(), 3, "{text}");

    // --follow prints what arrives later, until Ctrl-C, which exits 0.
    let follow = [
        "--output",
        "json",
        "logs",
        "--env",
        "dev",
        "--function",
        "ingest",
        "--since",
        "1m",
        "--follow",
    ];
    let (mut child, rx) = p.start_until(&follow, |v| v["message"] == "batch stored");
    let next = || -> Value {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("a log line");
        serde_json::from_str(&line).expect("json")
    };
    assert_eq!(next()["message"], "ERROR cannot reach the database");
    rt.block_on(put_events(&p, &group, "s2", &[(0, "a later line")]));
    let later = next();
    assert_eq!(
        (&later["message"], &later["stream"]),
        (&"a later line".into(), &"s2".into())
    );
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    assert_eq!(child.wait().expect("wait").code(), Some(0));

    // Destroy: refused without a terminal unless --yes; says what is kept.
    assert_eq!(
        p.fails(&["destroy", "--env", "dev"]),
        (
            Some(2),
            "destroying `dev` needs a confirmation".into(),
            "pass --yes to destroy without a terminal".into()
        )
    );
    let text = p.ok(&["destroy", "--env", "dev", "--yes"]);
    assert!(
        text.ends_with("destroyed dev: 4 stacks deleted\n"),
        "{text}"
    );
    let order: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(": DELETE_COMPLETE after "))
        .map(|l| l.split(':').next().unwrap_or(""))
        .collect();
    assert_eq!(
        order,
        [
            "pipeline-dev-app",
            "pipeline-dev-monitoring",
            "pipeline-dev-data",
            "pipeline-dev-network"
        ]
    );
    let status = p.json(&["--output", "json", "status", "--env", "dev"]);
    let statuses = stack_statuses(&status);
    assert_eq!(
        statuses[0].1, "CREATE_COMPLETE",
        "the bootstrap stack stays"
    );
    assert!(
        statuses[1..].iter().all(|(_, s)| s == "NOT_DEPLOYED"),
        "{status}"
    );
}

/// The bootstrap sets the account's API Gateway logging role itself, and
/// tries again while API Gateway refuses a role IAM has not yet made
/// visible to it (injected into moto, which accepts any role at once); a
/// role the account already has is kept. Before, an
/// `AWS::ApiGateway::Account` resource of the bootstrap stack set it: in
/// AWS it fails when API Gateway checks the new role too early, moto
/// skips the resource type, and the account had no role here.
#[test]
fn the_bootstrap_sets_the_account_logging_role_once_api_gateway_accepts_it() {
    require!(Service::Moto);
    let p = Project::with_moto(&[], &[("PIPELINE_MOTO_ROLE_NOT_YET", "2")]);
    let rt = runtime();
    let boot = p.json(&["--output", "json", "bootstrap", "--env", "dev"]);
    let role = &boot["logging_role"];
    assert_eq!(
        (&role["status"], &role["attempts"]),
        (&"set".into(), &3.into()),
        "{boot}"
    );
    let arn = role["arn"].as_str().expect("arn").to_string();
    assert!(arn.starts_with("arn:aws:iam::123456789012:role/"), "{arn}");
    assert_eq!(rt.block_on(p.account_logging_role()), Some(arn.clone()));
    let again = p.ok(&["bootstrap", "--env", "dev"]);
    assert!(
        again.contains(&format!("  API logging    {arn} (the account's, kept)\n")),
        "{again}"
    );
}

/// A role API Gateway keeps refusing: the bootstrap gives up after its
/// tries (about two minutes in AWS), says why and how to go on, and the
/// account has no role set.
#[test]
fn a_logging_role_api_gateway_keeps_refusing_stops_the_bootstrap_with_the_reason() {
    require!(Service::Moto);
    let p = Project::with_moto(&[], &[("PIPELINE_MOTO_ROLE_NOT_YET", "100")]);
    let (code, message, help) = p.fails(&["bootstrap", "--env", "dev"]);
    assert_eq!(code, Some(1));
    let role = "arn:aws:iam::123456789012:role/pipeline-dev-bootstrap-ApiGatewayLogsRole";
    assert!(
        message.starts_with("API Gateway does not accept ")
            && message.contains(role)
            && message.ends_with(
                " as the account's CloudWatch logging role yet, after 7 tries: The role ARN does not have required permissions set to API Gateway"
            ),
        "{message}"
    );
    assert_eq!(
        help,
        "a new role takes a while to reach every AWS service; run `pipeline bootstrap --env dev` again in a minute"
    );
    assert_eq!(runtime().block_on(p.account_logging_role()), None);
}

#[test]
fn a_second_deploy_is_refused_while_the_first_holds_the_lock() {
    require!(Service::Moto);
    let p = Project::new(&[]);
    let boot = p.json(&["--output", "json", "bootstrap", "--env", "dev"]);
    let bucket = boot["assets_bucket"].as_str().expect("bucket").to_string();
    runtime().block_on(async {
        p.s3()
            .await
            .put_object()
            .bucket(&bucket)
            .key("locks/dev.json")
            .body(
                br#"{"started_at":"2026-11-27T10:00:00+00:00","by":"ci","pid":41}"#
                    .to_vec()
                    .into(),
            )
            .send()
            .await
            .expect("lock");
    });
    assert_eq!(
        p.fails(&["deploy", "--env", "dev", "--yes"]),
        (
            Some(2),
            "another deploy of `dev` is in progress (started 2026-11-27T10:00:00+00:00 by ci, pid 41)".into(),
            "wait for it to finish; if it died, deploy again with --force-unlock".into()
        )
    );
    let status = p.json(&["--output", "json", "status", "--env", "dev"]);
    assert_eq!(stack_statuses(&status)[1].1, "NOT_DEPLOYED");

    let deployed = p.json(&[
        "--output",
        "json",
        "deploy",
        "--env",
        "dev",
        "--yes",
        "--force-unlock",
    ]);
    assert_eq!(deployed["event"], "deployed");
    // The lock is gone once the deploy is done.
    assert!(runtime().block_on(p.objects(&bucket, "locks/")).is_empty());
}

#[test]
fn credentials_of_another_account_change_nothing() {
    require!(Service::Moto);
    let p = Project::new(&[("acct.yaml", "extends: dev\naccount: \"111111111111\"\n")]);
    assert_eq!(
        p.fails(&["bootstrap", "--env", "acct"]),
        (
            Some(2),
            "the AWS credentials are for account 123456789012, but the environment belongs to account 111111111111".into(),
            "use the profile of account 111111111111 (`--profile`, AWS_PROFILE), or fix `account` in the spec; nothing was changed".into()
        )
    );
    let status = p.json(&["--output", "json", "status", "--env", "acct"]);
    assert!(
        stack_statuses(&status)
            .iter()
            .all(|(_, s)| s == "NOT_DEPLOYED")
    );
}

#[test]
fn spec_errors_stop_a_deploy_before_any_aws_call() {
    require!(Service::Moto);
    let dir = common::workspace(&[("bad.yaml", "extends: dev\ndatabase:\n  read_replicas: 9\n")]);
    // An endpoint nobody listens on: a call would fail differently.
    let out = common::command(dir.path(), &["deploy", "--env", "bad", "--yes"])
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("PIPELINE_ARTIFACTS", dir.path())
        .output()
        .expect("run");
    assert_eq!(code(&out), Some(2));
    let err = common::stderr(&out);
    assert!(err.contains("bad.yaml:3:"), "{err}");
    assert!(err.contains("nothing was sent to AWS"), "{err}");
}

#[test]
fn a_missing_package_says_how_to_make_it() {
    require!(Service::Moto);
    let p = Project::new(&[]);
    std::fs::remove_file(p.dir.path().join("artifacts/query.zip")).expect("rm");
    let (code, message, help) = p.fails(&["deploy", "--env", "dev", "--yes"]);
    assert_eq!(code, Some(1));
    assert_eq!(
        message,
        format!(
            "there is no query.zip in {}",
            p.dir.path().join("artifacts").display()
        )
    );
    assert_eq!(
        help,
        "`pipeline build --env <env>` writes the packages to out/<env>/"
    );
}

/// AWS throttles callers above its rates. The SDK's clients try again by
/// themselves; before, the hand-signed DescribeAlarms client did not, and
/// a throttled gate read failed the deploy. server.py (R6) throttles the
/// first calls of the operations named, in each service's wire format.
#[test]
fn a_deploy_goes_through_throttling() {
    require!(Service::Moto);
    let p = Project::with_moto(
        &[("live.yaml", LIVE)],
        &[(
            "PIPELINE_MOTO_THROTTLE",
            "cloudformation:DescribeStacks=2,lambda:GetFunctionConfiguration=1,lambda:Invoke=1,cloudwatch:DescribeAlarms=3",
        )],
    );
    let first = p.bootstrap_and_deploy("live");
    assert_eq!(first["rollout"], "all-at-once promoted");
    let ingest = first["outputs"]["IngestFunctionName"]
        .as_str()
        .expect("ingest")
        .to_string();
    assert_eq!(p.alias(&ingest), ("1".into(), vec![]));
}

const GUARDED: &str = "extends: dev
api:
  waf: {rate_limit: 1000}
database:
  multi_az: true
  deletion_protection: true
";

/// Whether RDS (moto) protects each instance from deletion, as the
/// DescribeDBInstances query API answers (in XML).
fn protected_instances(p: &Project) -> Vec<bool> {
    let body = runtime().block_on(async {
        pipeline_cli::http::client()
            .post(format!("{}/", p.moto.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=testing/20260101/eu-west-1/rds/aws4_request, SignedHeaders=host, Signature=0",
            )
            .body("Action=DescribeDBInstances&Version=2014-10-31")
            .send()
            .await
            .expect("rds")
            .text()
            .await
            .expect("rds answer")
    });
    body.split("<DeletionProtection>")
        .skip(1)
        .map(|rest| rest.starts_with("true<"))
        .collect()
}

#[test]
fn a_protected_database_rolls_back_cleanly_is_made_again_and_can_be_destroyed() {
    require!(Service::Moto);
    // The first create of the data stack fails after its database was
    // made. A protected instance cannot be deleted, so its rollback would
    // end in ROLLBACK_FAILED (moto refuses the delete as RDS does): the
    // first create makes the database unprotected.
    let reason = "Resource handler returned message: \"Service Unavailable\"";
    let p = Project::with_moto(
        &[("guarded.yaml", GUARDED)],
        &[(
            "PIPELINE_MOTO_FAIL",
            &format!("DbSecretAttachment@1={reason}"),
        )],
    );
    p.ok(&["bootstrap", "--env", "guarded"]);
    let (code, message, help) = p.fails(&["deploy", "--env", "guarded", "--yes"]);
    assert_eq!(
        (code, message.as_str(), help.as_str()),
        (
            Some(1),
            format!(
                "stack pipeline-guarded-data failed: ROLLBACK_COMPLETE\n  DbSecretAttachment (AWS::SecretsManager::SecretTargetAttachment) CREATE_FAILED: {reason}"
            )
            .as_str(),
            "the failed first create was rolled back; fix the cause and deploy again (the empty stack is deleted and created anew)"
        )
    );
    assert_eq!(protected_instances(&p), Vec::<bool>::new());

    // The next deploy deletes the stack, creates it, and turns protection on.
    let deployed = p.json(&["--output", "json", "deploy", "--env", "guarded", "--yes"]);
    let data = deployed["stacks"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == "pipeline-guarded-data")
        .cloned()
        .unwrap_or_default();
    assert_eq!(data["status"], "UPDATE_COMPLETE", "{deployed}");
    assert_eq!(protected_instances(&p), [true]);

    // CloudFormation cannot delete a protected instance: destroy turns the
    // protection off first (the final snapshot is still taken).
    let destroyed = p.json(&[
        "--output", "json", "destroy", "--env", "guarded", "--yes", "--force",
    ]);
    assert_eq!(destroyed["event"], "destroyed", "{destroyed}");
    assert_eq!(protected_instances(&p), Vec::<bool>::new());
}

const COGNITO: &str = "extends: dev
account: \"123456789012\"
api:
  auth: cognito
  clients:
    ci: [events.write, events.read]
  metering_keys: true
";

/// An environment with `auth: cognito` deploys its user pool, its domain,
/// its resource server and its clients with the API (and, with
/// `metering_keys`, a usage plan key per client), and its outputs name the
/// token endpoint, each client's id and its key's id.
#[test]
fn a_cognito_environment_deploys_its_user_pool_and_clients() {
    require!(Service::Moto);
    let p = Project::new(&[("cog.yaml", COGNITO)]);
    p.ok(&["bootstrap", "--env", "cog"]);
    let deployed = p.json(&["--output", "json", "deploy", "--env", "cog", "--yes"]);
    assert_eq!(deployed["event"], "deployed", "{deployed}");
    let outputs = &deployed["outputs"];
    assert!(
        outputs["TokenUrl"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://")
                && u.ends_with(".auth.eu-west-1.amazoncognito.com/oauth2/token")),
        "{outputs}"
    );
    for id in ["ApiClientCiId", "ApiKeyCiId"] {
        assert!(
            outputs[id].as_str().is_some_and(|v| !v.is_empty()),
            "{id}: {outputs}"
        );
    }
}
