//! The monitoring stack: log groups, alarms (and the gate alarms' versions), notifications, dashboard.

use super::*;

#[derive(Debug, Serialize)]
pub struct MonitoringContext {
    pub common: Common,
    pub params: Vec<Param>,
    pub log_retention_days: u32,
    pub log_group_skips: Vec<Skip>,
    pub log_groups: Vec<LogGroup>,
    pub emails: Vec<String>,
    pub alarms: Vec<Alarm>,
    /// The dashboard's body, a JSON string with `${...}` references for
    /// `Fn::Sub` (made by `dashboard::body` from the alarms, when the spec
    /// asks for a dashboard).
    pub dashboard: Option<String>,
    pub replica_count: usize,
    /// The functions' gate version parameters and their conditions.
    pub gate_versions: Vec<GateVersion>,
    pub all_versions: &'static str,
}

#[derive(Debug, Serialize)]
pub struct GateVersion {
    pub parameter: &'static str,
    /// True when the parameter names a version, not [`ALL_VERSIONS`].
    pub condition: String,
}

#[derive(Debug, Serialize)]
pub struct LogGroup {
    pub logical_id: String,
    pub name: String,
}

/// One CloudWatch alarm.
#[derive(Debug, Clone, Serialize)]
pub struct Alarm {
    pub logical_id: String,
    /// The name a rollout gate refers to (`ingest-errors`).
    pub key: String,
    pub name: String,
    pub description: String,
    pub namespace: &'static str,
    pub metric: &'static str,
    pub dimensions: Vec<Dimension>,
    /// `Sum`, `Average`, `Maximum`, `Minimum`, or a percentile such as `p99`.
    pub statistic: &'static str,
    pub extended: bool,
    pub threshold: f64,
    pub comparison: &'static str,
    /// Seconds of one period: 60 for the alarms that gate the environment's
    /// rollouts, whose bake lasts minutes, else 300.
    pub period: u32,
    /// Evaluation periods, and of them the breaching ones that raise it.
    pub periods: u32,
    pub datapoints: u32,
    /// `Dimensions` as the template writes it: the list, or an `Fn::If`
    /// that adds the gate version (see [`gate_version_parameter`]).
    pub dimensions_cfn: serde_json::Value,
    /// `Metrics` (metric math) when the alarm watches an expression over
    /// the metric rather than the metric itself.
    pub metrics: Option<serde_json::Value>,
}

impl Dimension {
    fn cfn(&self) -> serde_json::Value {
        let value = if self.reference {
            serde_json::json!({"Ref": self.value})
        } else {
            serde_json::json!(self.value)
        };
        serde_json::json!({"Name": self.name, "Value": value})
    }
}

fn dimensions_cfn(dimensions: &[Dimension]) -> serde_json::Value {
    serde_json::Value::Array(dimensions.iter().map(Dimension::cfn).collect())
}

/// The condition that a function's gate version parameter names a version.
pub fn gate_version_condition(function: FunctionId) -> String {
    format!("{}Set", gate_version_parameter(function))
}

#[derive(Debug, Clone, Serialize)]
pub struct Dimension {
    pub name: &'static str,
    /// A literal value, or (when `reference` is set) a parameter name.
    pub value: String,
    pub reference: bool,
}

fn literal(name: &'static str, value: String) -> Dimension {
    Dimension {
        name,
        value,
        reference: false,
    }
}

fn reference(name: &'static str, param: &str) -> Dimension {
    Dimension {
        name,
        value: param.to_string(),
        reference: true,
    }
}

pub fn function_name(prefix: &str, function: FunctionId) -> String {
    format!("{prefix}-{function}")
}

/// The migrations' function (see `app::MigratorContext`).
pub fn migrator_name(prefix: &str) -> String {
    format!("{prefix}-migrate")
}

/// The monitoring stack's parameter that points a function's gate alarms at
/// one version (`IngestGateVersion`): the deploy engine sets it to the
/// version a rollout moves to before the first shift of traffic, and back to
/// [`ALL_VERSIONS`] when the rollout ends (promoted, rolled back or aborted).
pub fn gate_version_parameter(function: FunctionId) -> String {
    format!("{}GateVersion", pascal(function.as_str()))
}

/// The gate version parameter's value when no rollout is under way: the
/// alarms watch every version behind the `live` alias.
pub const ALL_VERSIONS: &str = "all";

pub fn api_name(prefix: &str) -> String {
    format!("{prefix}-api")
}

/// Every alarm of an environment, in a fixed order.
pub fn alarms(env: &str, spec: &Spec) -> Vec<Alarm> {
    let prefix = format!("{}-{env}", spec.project);
    let t = &spec.monitoring.alarms;
    let mut out = Vec::new();
    // Gates resolve as `rollout::gate_alarms` does: `replica-lag` stands for
    // `replica-lag-1` and `replica-lag-2` too.
    let gates: Vec<String> = spec
        .rollout
        .alarms
        .iter()
        .filter_map(|g| serde_json::to_value(g).ok()?.as_str().map(str::to_string))
        .collect();
    let gates = |key: &str| {
        gates.iter().any(|g| {
            key == g
                || key
                    .strip_prefix(&format!("{g}-"))
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
    };
    // Lambda and API Gateway send their metrics each minute (Lambda Developer
    // Guide: Working with Lambda function metrics), so a gate reads minutes.
    let window = |key: &str| {
        if gates(key) {
            "in a minute"
        } else {
            "in 5 minutes"
        }
    };
    let add = |key: String,
               description: String,
               namespace,
               metric,
               dimensions: Vec<Dimension>,
               statistic: &'static str,
               threshold: f64,
               comparison| {
        Alarm {
            logical_id: format!("{}Alarm", pascal(&key)),
            name: format!("{prefix}-{key}"),
            period: if gates(&key) { 60 } else { 300 },
            key,
            description,
            namespace,
            metric,
            dimensions_cfn: dimensions_cfn(&dimensions),
            dimensions,
            extended: statistic.starts_with('p'),
            statistic,
            threshold,
            comparison,
            periods: 1,
            datapoints: 1,
            metrics: None,
        }
    };
    for (name, f) in spec.functions.all() {
        let fname = function_name(&prefix, name);
        // Through the `live` alias (`Resource`), and of one version of it
        // (`ExecutedVersion`) while a rollout names one: a canary's share is
        // watched alone, not drowned in the previous version's traffic
        // (Lambda Developer Guide: Working with Lambda function metrics,
        // dimensions FunctionName, Resource, ExecutedVersion).
        let alias = vec![
            literal("FunctionName", fname.clone()),
            literal("Resource", format!("{fname}:{STAGE}")),
        ];
        let of_version = |a: &mut Alarm| {
            let mut with_version = dimensions_cfn(&a.dimensions);
            if let Some(list) = with_version.as_array_mut() {
                list.push(serde_json::json!({
                    "Name": "ExecutedVersion",
                    "Value": {"Ref": gate_version_parameter(name)}
                }));
            }
            a.dimensions_cfn = serde_json::json!({"Fn::If": [
                gate_version_condition(name),
                with_version,
                a.dimensions_cfn.clone()
            ]});
        };
        let key = format!("{name}-errors");
        out.push(add(
            key.clone(),
            format!(
                "{name}: {} or more errors {}",
                t.function_errors,
                window(&key)
            ),
            "AWS/Lambda",
            "Errors",
            alias.clone(),
            "Sum",
            f64::from(t.function_errors),
            "GreaterThanOrEqualToThreshold",
        ));
        if let Some(a) = out.last_mut() {
            of_version(a);
        }
        // Throttled requests run no version of the function: its throttles.
        let key = format!("{name}-throttles");
        out.push(add(
            key.clone(),
            format!(
                "{name}: {} or more throttled invocations {}",
                t.function_throttles,
                window(&key)
            ),
            "AWS/Lambda",
            "Throttles",
            vec![literal("FunctionName", fname.clone())],
            "Sum",
            f64::from(t.function_throttles),
            "GreaterThanOrEqualToThreshold",
        ));
        let limit_ms =
            u64::from(f.timeout_seconds) * 1000 * u64::from(t.function_p99_percent_of_timeout)
                / 100;
        out.push(add(
            format!("{name}-duration"),
            format!(
                "{name}: p99 duration above {limit_ms} ms ({}% of the timeout)",
                t.function_p99_percent_of_timeout
            ),
            "AWS/Lambda",
            "Duration",
            alias,
            "p99",
            limit_ms as f64,
            "GreaterThanThreshold",
        ));
        if let Some(a) = out.last_mut() {
            of_version(a);
        }
    }
    let api = || vec![literal("ApiName", api_name(&prefix))];
    out.push(add(
        "api-5xx".into(),
        format!(
            "API: {} or more 5XX responses {}",
            t.api_5xx,
            window("api-5xx")
        ),
        "AWS/ApiGateway",
        "5XXError",
        api(),
        "Sum",
        f64::from(t.api_5xx),
        "GreaterThanOrEqualToThreshold",
    ));
    out.push(add(
        "api-latency".into(),
        format!("API: p99 latency above {} ms", t.api_p99_latency_ms),
        "AWS/ApiGateway",
        "Latency",
        api(),
        "p99",
        f64::from(t.api_p99_latency_ms),
        "GreaterThanThreshold",
    ));
    let db = || vec![reference("DBInstanceIdentifier", "DbInstanceId")];
    out.push(add(
        "db-cpu".into(),
        format!("database: CPU above {}%", t.db_cpu_percent),
        "AWS/RDS",
        "CPUUtilization",
        db(),
        "Average",
        f64::from(t.db_cpu_percent),
        "GreaterThanThreshold",
    ));
    out.push(add(
        "db-storage".into(),
        format!(
            "database: less than {} GiB of free storage",
            t.db_free_storage_gb
        ),
        "AWS/RDS",
        "FreeStorageSpace",
        db(),
        "Minimum",
        f64::from(t.db_free_storage_gb) * 1024.0 * 1024.0 * 1024.0,
        "LessThanThreshold",
    ));
    out.push(add(
        "db-connections".into(),
        format!("database: more than {} connections", t.db_connections),
        "AWS/RDS",
        "DatabaseConnections",
        db(),
        "Maximum",
        f64::from(t.db_connections),
        "GreaterThanThreshold",
    ));
    for i in 1..=spec.database.read_replicas {
        let key = if spec.database.read_replicas == 1 {
            "replica-lag".to_string()
        } else {
            format!("replica-lag-{i}")
        };
        out.push(add(
            key,
            format!(
                "read replica {i}: lag above {} seconds",
                t.replica_lag_seconds
            ),
            "AWS/RDS",
            "ReplicaLag",
            vec![reference(
                "DBInstanceIdentifier",
                &format!("Replica{i}InstanceId"),
            )],
            "Maximum",
            f64::from(t.replica_lag_seconds),
            "GreaterThanThreshold",
        ));
    }
    // New dead letters, not the ones waiting: an old one would raise the alarm
    // for as long as it is kept, and roll back every canary. A message that
    // the redrive policy moves to the dead-letter queue is not counted in its
    // NumberOfMessagesSent (SQS Developer Guide: Using dead-letter queues,
    // NumberOfMessagesSent and NumberOfMessagesReceived don't match), so the
    // alarm watches the rise of the queue's depth, in flight included (an
    // operator reading the letters moves them there and back), minute by
    // minute (SQS metrics come at one-minute intervals: Monitoring Amazon SQS
    // queues using CloudWatch) with DIFF (CloudWatch User Guide: Using metric
    // math). An empty queue unused for six hours is inactive and has no data,
    // which FILL makes 0, so its first dead letter is a rise; as a queue
    // woken from inactivity reports up to 15 minutes late, and FILL makes a
    // late last minute 0, the alarm is 1 out of 20 minutes (an M out of N
    // alarm, as the FILL documentation advises).
    let mut dead = add(
        "dead-letters".into(),
        "dead-letter queue: messages failed every delivery in the last 20 minutes".into(),
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        vec![reference("QueueName", "DeadLetterQueueName")],
        "Maximum",
        1.0,
        "GreaterThanOrEqualToThreshold",
    );
    dead.period = 60;
    dead.periods = 20;
    dead.datapoints = 1;
    let input = |id: &str, metric: &str| {
        serde_json::json!({
            "Id": id,
            "ReturnData": false,
            "MetricStat": {
                "Metric": {"Namespace": dead.namespace, "MetricName": metric, "Dimensions": dead.dimensions_cfn},
                "Period": dead.period,
                "Stat": dead.statistic
            }
        })
    };
    dead.metrics = Some(serde_json::json!([
        input("visible", "ApproximateNumberOfMessagesVisible"),
        input("inflight", "ApproximateNumberOfMessagesNotVisible"),
        {
            "Id": "arrived",
            "Label": "Messages moved to the dead-letter queue",
            "Expression": "DIFF(FILL(visible + inflight, 0))",
            "ReturnData": true
        }
    ]));
    out.push(dead);
    out.push(add(
        "queue-age".into(),
        format!(
            "queue: oldest message older than {} seconds",
            t.queue_age_seconds
        ),
        "AWS/SQS",
        "ApproximateAgeOfOldestMessage",
        vec![reference("QueueName", "QueueName")],
        "Maximum",
        f64::from(t.queue_age_seconds),
        "GreaterThanThreshold",
    ));
    out
}

pub fn monitoring(env: &str, spec: &Spec) -> MonitoringContext {
    let common = Common::new(
        env,
        spec,
        "monitoring",
        "log groups, alarms, notifications, dashboard",
    );
    let prefix = common.prefix.clone();
    let mut params = vec![
        from_output(
            "KeyArn",
            "data",
            "KMS key that encrypts logs and notifications",
        ),
        from_output("QueueName", "data", "Queue feeding the loader"),
        from_output(
            "DeadLetterQueueName",
            "data",
            "Dead-letter queue of the loader's queue",
        ),
        from_output("DbInstanceId", "data", "Identifier of the primary database"),
    ];
    const REPLICA_IDS: [&str; 5] = [
        "Replica1InstanceId",
        "Replica2InstanceId",
        "Replica3InstanceId",
        "Replica4InstanceId",
        "Replica5InstanceId",
    ];
    for id in REPLICA_IDS
        .iter()
        .take(usize::from(spec.database.read_replicas))
    {
        params.push(from_output(id, "data", "Identifier of a read replica"));
    }
    let mut gate_versions = Vec::new();
    for (name, _) in spec.functions.all() {
        let param: &'static str = match name {
            FunctionId::Ingest => "IngestGateVersion",
            FunctionId::Loader => "LoaderGateVersion",
            FunctionId::Query => "QueryGateVersion",
        };
        debug_assert_eq!(param, gate_version_parameter(name));
        params.push(Param {
            name: param,
            kind: "String",
            description: "Version of the function a rollout moves to, which its alarms watch alone; `all`: every version behind the live alias",
            default: Some(ALL_VERSIONS),
            source: Source::Deploy {
                value: DeployValue::GateVersion,
            },
        });
        gate_versions.push(GateVersion {
            parameter: param,
            condition: gate_version_condition(name),
        });
    }
    let mut log_groups: Vec<LogGroup> = spec
        .functions
        .all()
        .iter()
        .map(|(name, _)| LogGroup {
            logical_id: format!("{}LogGroup", pascal(name.as_str())),
            name: format!("/aws/lambda/{}", function_name(&prefix, *name)),
        })
        .collect();
    log_groups.push(LogGroup {
        logical_id: "ApiAccessLogGroup".into(),
        name: format!("/aws/apigateway/{prefix}-access"),
    });
    let days = spec.monitoring.log_retention_days;
    let log_group_skips = if days < 365 {
        vec![skip(
            "CKV_AWS_338",
            format!(
                "`monitoring.log_retention_days` is {days} in the spec; this environment does not keep logs for a year"
            ),
        )]
    } else {
        Vec::new()
    };
    MonitoringContext {
        common,
        params,
        log_retention_days: days,
        log_group_skips,
        log_groups,
        emails: spec.monitoring.notify.clone(),
        alarms: alarms(env, spec),
        dashboard: None,
        replica_count: usize::from(spec.database.read_replicas),
        gate_versions,
        all_versions: ALL_VERSIONS,
    }
}
