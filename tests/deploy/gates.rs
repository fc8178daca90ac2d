//! What gates a rollout: linear steps on moto's aliases, health answers,
//! gate alarms, Pending versions and concurrency reservations.

use super::*;

/// Routes through Lambda (moto), then records where the alias points.
struct Observed<'a> {
    lambda: pipeline_cli::rollout::aws::Lambda,
    seen: &'a std::cell::RefCell<Vec<Route>>,
}

impl pipeline_cli::rollout::Aliases for Observed<'_> {
    async fn route(
        &self,
        function: &str,
        version: &str,
        canary: Option<(&str, f64)>,
    ) -> Result<(), pipeline_cli::rollout::CallError> {
        self.lambda.route(function, version, canary).await?;
        let a = self
            .lambda
            .client
            .get_alias()
            .function_name(function)
            .name("live")
            .send()
            .await
            .expect("alias");
        let weights = a
            .routing_config()
            .and_then(|r| r.additional_version_weights())
            .map(|w| w.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default();
        self.seen
            .borrow_mut()
            .push((a.function_version().unwrap_or("").to_string(), weights));
        Ok(())
    }
}

struct Quiet;

/// Gate alarms that exist and stay OK.
impl pipeline_cli::rollout::Gates for Quiet {
    async fn describe(
        &self,
        names: &[String],
    ) -> Result<Vec<pipeline_cli::rollout::Alarm>, pipeline_cli::rollout::CallError> {
        Ok(names
            .iter()
            .map(|name| pipeline_cli::rollout::Alarm {
                name: name.clone(),
                state: "OK".into(),
                reason: String::new(),
            })
            .collect())
    }
    async fn reset(&self, _: &[String], _: &str) -> Result<(), pipeline_cli::rollout::CallError> {
        Ok(())
    }
    async fn invocations(
        &self,
        _: &str,
        _: &str,
        _: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, pipeline_cli::rollout::CallError> {
        Ok(0)
    }
}

/// The gate alarms' version is the monitoring stack's business, which this
/// test leaves out (the canary test below checks it through the binary).
impl pipeline_cli::rollout::Watch for Quiet {
    async fn watch(
        &self,
        _: &[(pipeline_cli::spec::model::FunctionId, String)],
    ) -> Result<(), pipeline_cli::rollout::CallError> {
        Ok(())
    }
}

struct Memory(std::cell::RefCell<Option<pipeline_cli::rollout::State>>);

impl pipeline_cli::rollout::Store for Memory {
    async fn load(
        &self,
        _: &str,
    ) -> Result<Option<pipeline_cli::rollout::State>, pipeline_cli::rollout::CallError> {
        Ok(self.0.borrow().clone())
    }
    /// Conditional on the tag, as S3Store's writes are.
    async fn save(
        &self,
        state: &mut pipeline_cli::rollout::State,
    ) -> Result<bool, pipeline_cli::rollout::CallError> {
        let stored = self.0.borrow().as_ref().and_then(|s| s.tag.clone());
        if stored != state.tag {
            return Ok(false);
        }
        state.tag = Some(uuid::Uuid::new_v4().to_string());
        *self.0.borrow_mut() = Some(state.clone());
        Ok(true)
    }
}

/// Time that passes only when the rollout sleeps.
struct Instantly(std::cell::Cell<chrono::DateTime<chrono::Utc>>);

impl pipeline_cli::rollout::Clock for Instantly {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.0.get()
    }
    async fn sleep(&self, d: Duration) {
        self.0
            .set(self.0.get() + chrono::Duration::from_std(d).unwrap_or_default());
    }
}

struct NoReport;

impl pipeline_cli::rollout::Reporter for NoReport {
    fn report(&self, _: &pipeline_cli::rollout::Event) {}
}

#[test]
fn a_linear_rollout_moves_moto_aliases_step_by_step_to_the_new_version() {
    require!(Service::Moto);
    use pipeline_cli::rollout::{Phase, Rollouts, State, Target, steps};
    use pipeline_cli::spec::model::Strategy;
    let p = Project::new(&[]);
    let first = p.bootstrap_and_deploy("dev");
    let query = first["outputs"]["QueryFunctionName"]
        .as_str()
        .expect("QueryFunctionName")
        .to_string();
    let rt = runtime();
    let lambda = rt.block_on(async { aws_sdk_lambda::Client::new(&p.sdk().await) });
    // A second version of new code, as a deploy publishes it.
    let version = rt.block_on(async {
        let zip = std::fs::read(p.dir.path().join("artifacts/ingest.zip")).expect("zip");
        lambda
            .update_function_code()
            .function_name(&query)
            .zip_file(aws_sdk_lambda::primitives::Blob::new(zip))
            .send()
            .await
            .expect("update code");
        let (version, published) = pipeline_cli::rollout::aws::Lambda {
            client: lambda.clone(),
        }
        .version(&query)
        .await
        .expect("version");
        assert!(published);
        version
    });
    assert_eq!(version, "2");
    let seen = std::cell::RefCell::new(Vec::new());
    let mut spec = pipeline_cli::spec::Loader::new(Some(p.dir.path().join("environments")))
        .load("dev")
        .expect("dev")
        .spec
        .rollout;
    spec.percent = Some(30);
    spec.interval_minutes = Some(2);
    let mut state = State {
        environment: "dev".into(),
        strategy: Strategy::Linear,
        steps: steps(Strategy::Linear, &spec),
        step: 0,
        phase: Phase::InProgress,
        started_at: String::new(),
        updated_at: String::new(),
        targets: vec![Target {
            function: pipeline_cli::spec::model::FunctionId::Query,
            name: query.clone(),
            from: "1".into(),
            to: "2".into(),
        }],
        alarms: vec![],
        finished: vec![],
        tag: None,
    };
    let observed = Observed {
        lambda: pipeline_cli::rollout::aws::Lambda {
            client: lambda.clone(),
        },
        seen: &seen,
    };
    let (store, clock) = (
        Memory(Default::default()),
        Instantly(std::cell::Cell::new(chrono::Utc::now())),
    );
    let rollouts = Rollouts {
        aliases: &observed,
        gates: &Quiet,
        watch: &Quiet,
        store: &store,
        clock: &clock,
        reporter: &NoReport,
        alarms: vec!["pipeline-dev-query-errors".into()],
        poll: Duration::from_secs(15),
        min_invocations: Default::default(),
    };
    let outcome = rt.block_on(rollouts.run(&mut state));
    assert_eq!(outcome, Ok(pipeline_cli::rollout::Outcome::Promoted));
    let weights = |w: f64| vec![("2".to_string(), w)];
    assert_eq!(
        *seen.borrow(),
        [
            ("1".to_string(), weights(0.3)),
            ("1".to_string(), weights(0.6)),
            ("1".to_string(), weights(0.9)),
            ("2".to_string(), vec![]),
        ]
    );
    assert_eq!(p.alias(&query), ("2".into(), vec![]));

    // Then a canary to a third version: 30% for the bake, then all.
    seen.borrow_mut().clear();
    rt.block_on(async {
        lambda
            .update_function_configuration()
            .function_name(&query)
            .memory_size(1536)
            .send()
            .await
            .expect("update configuration");
    });
    let (version, _) = rt
        .block_on(observed.lambda.version(&query))
        .expect("version");
    assert_eq!(version, "3", "a configuration change makes a version too");
    let mut state = State {
        strategy: Strategy::Canary,
        steps: steps(Strategy::Canary, &spec),
        step: 0,
        phase: Phase::InProgress,
        targets: vec![Target {
            function: pipeline_cli::spec::model::FunctionId::Query,
            name: query.clone(),
            from: "2".into(),
            to: "3".into(),
        }],
        ..state
    };
    let outcome = rt.block_on(rollouts.run(&mut state));
    assert_eq!(outcome, Ok(pipeline_cli::rollout::Outcome::Promoted));
    assert_eq!(
        *seen.borrow(),
        [
            ("2".to_string(), vec![("3".to_string(), 0.3)]),
            ("3".to_string(), vec![])
        ]
    );
    assert_eq!(p.alias(&query), ("3".into(), vec![]));
}

/// An API function's answer to GET /v1/health, as API Gateway's proxy
/// integration takes it.
fn health_answer(status: u16, body: &Value) -> String {
    serde_json::json!({
        "statusCode": status,
        "headers": {"content-type": "application/json"},
        "body": body.to_string(),
        "isBase64Encoded": false,
    })
    .to_string()
}

/// Before, only a function error stopped a deploy: a new query version
/// whose health route answered 503 (its database down) took the traffic.
/// moto does not run the functions' code: their answers are queued
/// (`lambda_results`); with none queued, server.py (R4) answers the health
/// route as a healthy function does.
#[test]
fn a_new_version_whose_health_route_answers_5xx_or_404_takes_no_traffic() {
    require!(Service::Moto);
    let p = Project::new(&[]);
    let first = p.bootstrap_and_deploy("dev");
    let query = first["outputs"]["QueryFunctionName"]
        .as_str()
        .expect("QueryFunctionName")
        .to_string();
    assert_eq!(p.alias(&query), ("1".into(), vec![]));
    p.package("query", "v2");
    let deploy = ["deploy", "--env", "dev", "--yes"];
    let down = serde_json::json!({"error": {"code": "unavailable", "message": "the database does not answer"}});
    p.lambda_results(&[&health_answer(503, &down)]);
    assert_eq!(
        p.fails(&deploy),
        (
            Some(1),
            format!(
                "the smoke invocation of query version 2 failed: GET /v1/health answered 503: {down}"
            ),
            "no traffic moved; the previous versions still serve".into()
        )
    );
    assert_eq!(p.alias(&query), ("1".into(), vec![]));
    // A version without the health route is no better.
    let missing = serde_json::json!({"error": {"code": "not_found", "message": "there is no GET /v1/health"}});
    p.lambda_results(&[&health_answer(404, &missing)]);
    assert_eq!(
        p.fails(&deploy).1,
        format!(
            "the smoke invocation of query version 2 failed: GET /v1/health answered 404: {missing}"
        )
    );
    assert_eq!(p.alias(&query), ("1".into(), vec![]));
    // Healthy: it serves.
    p.ok(&deploy);
    assert_eq!(p.alias(&query), ("2".into(), vec![]));
}

/// An environment gated on `replica-lag` with two replicas, and on external
/// alarms: 55 metric alarms and a composite one, more than DescribeAlarms
/// answers in one page (server.py R2 pages as CloudWatch does, and answers
/// composite alarms only to a request for them). Before, the gate asked for
/// `pipeline-gated-replica-lag`, which does not exist, and DescribeAlarms
/// left it out: the gate could never fire; nor could the composite alarm,
/// nor any alarm past the first page. The monitoring stack makes the
/// pipeline's own alarms (server.py R1).
#[test]
fn every_gate_alarm_must_exist_and_each_one_keeps_traffic_back() {
    require!(Service::Moto);
    let external: Vec<String> = (0..55)
        .map(|i| format!("ext-{i:02}"))
        .chain(std::iter::once("team-composite".to_string()))
        .collect();
    let spec = format!(
        "extends: dev
api:
  waf: {{rate_limit: 1000}}
database:
  multi_az: true
  read_replicas: 2
rollout:
  strategy: canary
  percent: 10
  bake_minutes: 1
  poll_seconds: 5
  alarms: [replica-lag]
  external_alarms: [{}]
",
        external.join(", ")
    );
    let p = Project::new(&[("gated.yaml", &spec)]);
    for name in &external[..55] {
        p.error_alarm(name, "Team/Db");
    }
    p.ok(&["bootstrap", "--env", "gated"]);
    let deploy = ["deploy", "--env", "gated", "--yes"];
    assert_eq!(
        p.fails(&deploy),
        (
            Some(1),
            "the gate alarm team-composite does not exist, so it could never send traffic back"
                .into(),
            "deploy the monitoring stack that makes them, or fix `rollout.alarms` and `rollout.external_alarms`; no traffic moved".into()
        )
    );
    let ingest = "pipeline-gated-ingest";
    assert_eq!(p.alias(ingest), ("$LATEST".into(), vec![]));
    p.cloudwatch(&[
        ("Action", "PutCompositeAlarm"),
        ("Version", "2010-08-01"),
        ("AlarmName", "team-composite"),
        ("AlarmRule", "ALARM(\"ext-00\") OR ALARM(\"ext-01\")"),
    ]);
    let first = p.json(&["--output", "json", "deploy", "--env", "gated", "--yes"]);
    assert_eq!(first["rollout"], "all-at-once promoted");
    assert_eq!(p.alias(ingest), ("1".into(), vec![]));

    // The second replica's lag, in ALARM before the rollout, keeps the
    // canary from starting: every gate is read before the first shift.
    p.package("ingest", "v2");
    let lag = "pipeline-gated-replica-lag-2";
    p.set_alarm(lag, "ALARM", "Threshold Crossed: 1 datapoint [40.0] > 30.0");
    assert_eq!(
        p.fails(&deploy),
        (
            Some(2),
            format!(
                "gate alarms are in ALARM before any traffic moved: {lag} (Threshold Crossed: 1 datapoint [40.0] > 30.0)"
            ),
            "no traffic moved; the previous versions still serve. Find what the alarms say, then deploy again".into()
        )
    );
    assert_eq!(p.alias(ingest), ("1".into(), vec![]));
    // So does the composite alarm, on the answer's second page.
    p.set_alarm(lag, "OK", "recovered");
    p.set_alarm("team-composite", "ALARM", "ext-01 is in ALARM");
    assert_eq!(
        p.fails(&deploy).1,
        "gate alarms are in ALARM before any traffic moved: team-composite (ext-01 is in ALARM)"
    );
    assert_eq!(p.alias(ingest), ("1".into(), vec![]));
}

/// Before, a deploy invoked a version as soon as it was published; one
/// still Pending cannot be invoked. server.py (R5) keeps each new version
/// Pending for its first GetFunctionConfiguration calls, and refuses to
/// invoke it meanwhile, as Lambda does.
#[test]
fn new_versions_are_invoked_once_they_are_active() {
    require!(Service::Moto);
    let p = Project::with_moto(&[], &[("PIPELINE_MOTO_PENDING", "3")]);
    let first = p.bootstrap_and_deploy("dev");
    assert_eq!(first["rollout"], "all-at-once promoted");
    let query = first["outputs"]["QueryFunctionName"]
        .as_str()
        .expect("QueryFunctionName")
        .to_string();
    p.package("query", "v2");
    p.ok(&["deploy", "--env", "dev", "--yes"]);
    assert_eq!(p.alias(&query), ("2".into(), vec![]));

    // A version that fails instead stops the deploy, with Lambda's reason.
    let p = Project::with_moto(
        &[],
        &[
            ("PIPELINE_MOTO_PENDING", "2"),
            (
                "PIPELINE_MOTO_PENDING_FAILS",
                "ImageAccessDenied: Lambda cannot pull the function's image",
            ),
        ],
    );
    p.ok(&["bootstrap", "--env", "dev"]);
    assert_eq!(
        p.fails(&["deploy", "--env", "dev", "--yes"]),
        (
            Some(1),
            "version 1 of pipeline-dev-ingest cannot be invoked: its state is Failed: Lambda cannot pull the function's image (ImageAccessDenied)".into(),
            "no traffic moved; the previous versions still serve".into()
        )
    );
    assert_eq!(p.alias("pipeline-dev-ingest"), ("$LATEST".into(), vec![]));
}

/// Each function's `reserved_concurrency` of this spec, in that order.
fn reserving(ingest: u32, loader: u32, query: u32) -> String {
    format!(
        "extends: dev
functions:
  ingest: {{reserved_concurrency: {ingest}}}
  loader: {{reserved_concurrency: {loader}}}
  query: {{reserved_concurrency: {query}}}
"
    )
}

/// Before, reservations the account could not take failed the app stack
/// half way (server.py R3 refuses them as Lambda does, and serves
/// GetAccountSettings). moto's quota is Lambda's default, 1,000.
#[test]
fn reservations_beyond_the_accounts_concurrency_are_refused_before_any_stack_moves() {
    require!(Service::Moto);
    let p = Project::new(&[
        ("big.yaml", &reserving(500, 300, 150)),
        ("a.yaml", &reserving(150, 150, 150)),
        ("b.yaml", &reserving(100, 100, 200)),
    ]);
    p.ok(&["bootstrap", "--env", "big"]);
    assert_eq!(
        p.fails(&["deploy", "--env", "big", "--yes"]),
        (
            Some(2),
            "the functions of `big` would reserve 950 concurrent executions (ingest 500, loader 300, query 150), but at most 900 can be reserved in eu-west-1: the account's Lambda quota \"Concurrent executions\" is 1000, other functions reserve 0, and Lambda keeps 100 unreserved".into(),
            "ask for a \"Concurrent executions\" quota of at least 1050 in Service Quotas (AWS Lambda, eu-west-1), or lower `reserved_concurrency` in the spec; no stack was changed".into()
        )
    );
    let status = p.json(&["--output", "json", "status", "--env", "big"]);
    assert!(
        stack_statuses(&status)[1..]
            .iter()
            .all(|(_, s)| s == "NOT_DEPLOYED"),
        "{status}"
    );

    // `a` reserves 450, `b` 400: 150 stay unreserved. `b` may go to 450,
    // its own 400 being given back by its deploy, and no further.
    p.bootstrap_and_deploy("a");
    p.bootstrap_and_deploy("b");
    let spec = p.dir.path().join("environments/b.yaml");
    std::fs::write(&spec, reserving(100, 100, 250)).expect("spec");
    p.ok(&["deploy", "--env", "b", "--yes"]);
    std::fs::write(&spec, reserving(100, 100, 251)).expect("spec");
    assert_eq!(
        p.fails(&["deploy", "--env", "b", "--yes"]),
        (
            Some(2),
            "the functions of `b` would reserve 451 concurrent executions (ingest 100, loader 100, query 251), but at most 450 can be reserved in eu-west-1: the account's Lambda quota \"Concurrent executions\" is 1000, other functions reserve 450, and Lambda keeps 100 unreserved".into(),
            "ask for a \"Concurrent executions\" quota of at least 1001 in Service Quotas (AWS Lambda, eu-west-1), or lower `reserved_concurrency` in the spec; no stack was changed".into()
        )
    );
}

/// The invocations a new version served, as the rollout counts them for
/// `rollout.min_invocations`: CloudWatch's GetMetricStatistics of Lambda's
/// `Invocations`, summed over the version's datapoints through the `live`
/// alias (moto keeps what is put; Lambda's own datapoints are put here as
/// Lambda reports them, with `FunctionName`, `Resource` and
/// `ExecutedVersion`), not another version's nor those before the bake.
#[test]
fn a_new_versions_invocations_are_counted_from_cloudwatch() {
    require!(Service::Moto);
    use pipeline_cli::rollout::Gates;
    let p = Project::new(&[]);
    let now = chrono::Utc::now();
    let minutes = |m: i64| now - chrono::Duration::minutes(m);
    runtime().block_on(async {
        let http = pipeline_cli::http::client();
        for (version, count, at) in [
            ("2", 3, minutes(3)),
            ("2", 4, minutes(1)),
            ("1", 50, minutes(1)),
            ("2", 9, minutes(30)),
        ] {
            put_invocations(&http, &p.moto.url, version, count, at).await;
        }
        let cloudwatch = pipeline_cli::rollout::aws::CloudWatch::new(&p.sdk().await);
        let served = cloudwatch
            .invocations("pipeline-dev-query", "2", minutes(5))
            .await
            .expect("invocations");
        assert_eq!(served, 7);
        let none = cloudwatch
            .invocations("pipeline-dev-query", "3", minutes(5))
            .await
            .expect("invocations");
        assert_eq!(none, 0);
    });
}

/// Puts a datapoint of Lambda's `Invocations` of a version of the query
/// function through its `live` alias, as Lambda reports it.
async fn put_invocations(
    http: &reqwest::Client,
    moto: &str,
    version: &str,
    count: u32,
    at: chrono::DateTime<chrono::Utc>,
) {
    let dimensions = [
        ("FunctionName", "pipeline-dev-query"),
        ("Resource", "pipeline-dev-query:live"),
        ("ExecutedVersion", version),
    ];
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("Action", "PutMetricData")
        .append_pair("Version", "2010-08-01")
        .append_pair("Namespace", "AWS/Lambda")
        .append_pair("MetricData.member.1.MetricName", "Invocations")
        .append_pair("MetricData.member.1.Value", &count.to_string())
        .append_pair("MetricData.member.1.Unit", "Count")
        .append_pair("MetricData.member.1.Timestamp", &at.to_rfc3339());
    for (i, (name, value)) in dimensions.iter().enumerate() {
        let member = format!("MetricData.member.1.Dimensions.member.{}", i + 1);
        form.append_pair(&format!("{member}.Name"), name)
            .append_pair(&format!("{member}.Value"), value);
    }
    let answer = http
        .post(moto)
        .header("content-type", "application/x-www-form-urlencoded")
        // moto takes the region from the credential scope (unsigned else).
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=testing/20260101/eu-west-1/monitoring/aws4_request, SignedHeaders=host, Signature=0",
        )
        .body(form.finish())
        .send()
        .await
        .expect("PutMetricData");
    let status = answer.status();
    assert!(status.is_success(), "{status}: {:?}", answer.text().await);
}
