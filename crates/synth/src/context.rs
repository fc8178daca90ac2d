//! Typed contexts of the templates: everything a template shows is computed
//! here, so templates only lay it out.

use ipnet::Ipv4Net;
use serde::Serialize;

use pipeline_spec::model::{AuthMode, Endpoint, FunctionId, Packaging, Spec};

/// A checkov check deliberately skipped on a resource, with the reason.
#[derive(Debug, Clone, Serialize)]
pub struct Skip {
    pub id: &'static str,
    pub comment: String,
}

fn skip(id: &'static str, comment: impl Into<String>) -> Skip {
    Skip {
        id,
        comment: comment.into(),
    }
}

/// Where a stack parameter's value comes from at deploy time.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// An output of an earlier stack of the same environment.
    Output {
        stack: &'static str,
        output: &'static str,
    },
    /// Where a function's code is: the S3 key of its package (uploaded
    /// under its SHA-256), or its image's URI with the image's digest.
    Asset { asset: &'static str },
    /// A value the deploy engine provides (the assets bucket of the bootstrap stack, alias versions).
    Deploy { value: &'static str },
}

/// One parameter of a stack.
#[derive(Debug, Clone, Serialize)]
pub struct Param {
    pub name: &'static str,
    /// CloudFormation parameter type.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub description: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<&'static str>,
    pub source: Source,
}

fn from_output(name: &'static str, stack: &'static str, description: &'static str) -> Param {
    Param {
        name,
        kind: "String",
        description,
        default: None,
        source: Source::Output {
            stack,
            output: name,
        },
    }
}

fn list_from_output(name: &'static str, stack: &'static str, description: &'static str) -> Param {
    Param {
        kind: "CommaDelimitedList",
        ..from_output(name, stack, description)
    }
}

/// What every template knows.
#[derive(Debug, Clone, Serialize)]
pub struct Common {
    pub project: String,
    pub env: String,
    /// `<project>-<env>`: the prefix of stack and resource names.
    pub prefix: String,
    pub description: String,
    pub prod_like: bool,
    /// Deletion policy of resources that hold data. Kept ones are
    /// `RetainExceptOnCreate`: deleted when the create that made them rolls
    /// back, so a fixed name is free again for the next create, and kept by
    /// every other operation (CloudFormation Template Reference:
    /// DeletionPolicy attribute).
    pub deletion_policy: &'static str,
    /// Their UpdateReplacePolicy, which takes Delete, Retain or Snapshot only
    /// (CloudFormation Template Reference: UpdateReplacePolicy attribute).
    pub replace_policy: &'static str,
}

/// The deletion policy of what outlives its stack.
pub const KEEP: &str = "RetainExceptOnCreate";

impl Common {
    fn new(env: &str, spec: &Spec, stack: &str, what: &str) -> Common {
        let prod_like = spec.prod_like();
        Common {
            project: spec.project.clone(),
            env: env.to_string(),
            prefix: format!("{}-{env}", spec.project),
            description: format!("{} {env}: {stack} stack ({what})", spec.project),
            prod_like,
            deletion_policy: if prod_like { KEEP } else { "Delete" },
            replace_policy: if prod_like { "Retain" } else { "Delete" },
        }
    }
}

// -------------------------------------------------------------- bootstrap

#[derive(Debug, Serialize)]
pub struct BootstrapContext {
    pub common: Common,
    pub bucket_skips: Vec<Skip>,
    /// ECR lifecycle rules, as the JSON text ECR takes.
    pub lifecycle_policy: String,
    /// Deletion policy of the bucket, role and repository, which outlive the
    /// stack but not a rolled-back first create of it ([`KEEP`]).
    pub keep: &'static str,
}

/// Images of each function the ECR repository keeps.
const KEPT_IMAGES: u32 = 30;

/// The bootstrap stack: where the deploy puts function packages (and
/// templates too large to pass inline) and function images.
pub fn bootstrap(env: &str, spec: &Spec) -> BootstrapContext {
    // Deploys tag each function's images `<function>-<digest>`; the newest
    // ones stay, so that recent versions can still take traffic back.
    let mut rules = vec![serde_json::json!({
        "rulePriority": 1,
        "description": "Keep the 50 newest untagged images",
        "selection": {"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 50},
        "action": {"type": "expire"}
    })];
    for (i, (name, _)) in spec.functions.all().iter().enumerate() {
        rules.push(serde_json::json!({
            "rulePriority": i + 2,
            "description": format!("Keep the {KEPT_IMAGES} newest images of the {name} function"),
            "selection": {"tagStatus": "tagged", "tagPrefixList": [format!("{name}-")], "countType": "imageCountMoreThan", "countNumber": KEPT_IMAGES},
            "action": {"type": "expire"}
        }));
    }
    let lifecycle = serde_json::json!({ "rules": rules });
    BootstrapContext {
        common: Common::new(
            env,
            spec,
            "bootstrap",
            "assets bucket and image repository of the deploy",
        ),
        bucket_skips: vec![skip(
            "CKV_AWS_18",
            "holds only build outputs named by their SHA-256, written by the deploy; CloudTrail records who wrote them",
        )],
        lifecycle_policy: lifecycle.to_string(),
        keep: KEEP,
    }
}

// ---------------------------------------------------------------- network

#[derive(Debug, Serialize)]
pub struct NetworkContext {
    pub common: Common,
    pub cidr: String,
    pub subnets: Vec<Subnet>,
    pub interface_endpoints: Vec<InterfaceEndpoint>,
    pub proxy: bool,
}

#[derive(Debug, Serialize)]
pub struct Subnet {
    pub logical_id: String,
    pub index: usize,
    pub cidr: String,
}

#[derive(Debug, Serialize)]
pub struct InterfaceEndpoint {
    pub logical_id: String,
    pub service: &'static str,
}

pub fn network(env: &str, spec: &Spec) -> NetworkContext {
    // Validation guarantees a /16 to /24 block, so eight subnets fit.
    let subnets = spec
        .network
        .cidr
        .parse::<Ipv4Net>()
        .ok()
        .and_then(|net| net.subnets(net.prefix_len() + 3).ok())
        .map(|s| s.take(usize::from(spec.network.azs)).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut endpoints = spec.network.endpoints.clone();
    endpoints.sort();
    NetworkContext {
        common: Common::new(
            env,
            spec,
            "network",
            "VPC, private subnets, security groups, VPC endpoints",
        ),
        cidr: spec.network.cidr.clone(),
        subnets: subnets
            .iter()
            .enumerate()
            .map(|(index, net)| Subnet {
                logical_id: format!("PrivateSubnet{}", index + 1),
                index,
                cidr: net.to_string(),
            })
            .collect(),
        interface_endpoints: endpoints
            .iter()
            .filter(|e| **e != Endpoint::S3)
            .map(|e| InterfaceEndpoint {
                logical_id: format!("{}Endpoint", pascal(e.service())),
                service: e.service(),
            })
            .collect(),
        proxy: spec.database.proxy,
    }
}

// ---------------------------------------------------------------- data

#[derive(Debug, Serialize)]
pub struct DataContext {
    pub common: Common,
    pub params: Vec<Param>,
    pub key_pending_days: u32,
    pub raw: RawContext,
    pub queue: QueueContext,
    pub db: DbContext,
    pub replicas: Vec<Replica>,
    pub cors_origins: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct RawContext {
    pub retention_days: u32,
    pub versioning: bool,
    pub skips: Vec<Skip>,
    pub log_skips: Vec<Skip>,
    pub log_retention_days: u32,
}

#[derive(Debug, Serialize)]
pub struct QueueContext {
    pub visibility_timeout: u32,
    pub max_receives: u32,
    pub dead_letter_retention_seconds: u32,
}

#[derive(Debug, Serialize)]
pub struct DbContext {
    pub engine_version: String,
    pub family: String,
    pub instance_class: String,
    pub storage_gb: u32,
    pub max_storage_gb: Option<u32>,
    pub multi_az: bool,
    pub backup_retention_days: u8,
    /// The spec's `database.deletion_protection`, except on a first create.
    pub deletion_protection: bool,
    pub proxy: bool,
    pub performance_insights: bool,
    pub monitoring_interval: u8,
    pub name: String,
    pub policy: &'static str,
    pub skips: Vec<Skip>,
}

#[derive(Debug, Serialize)]
pub struct Replica {
    pub logical_id: String,
    pub skips: Vec<Skip>,
}

/// The database skips that follow from a scaled-down spec, or from a first
/// create (`protected` false while the spec protects the database).
fn db_skips(spec: &Spec, replica: bool, protected: bool) -> Vec<Skip> {
    let db = &spec.database;
    let mut skips = Vec::new();
    if replica {
        skips.push(skip("CKV_AWS_16", "read replica: it is always encrypted with the primary's KMS key, and RDS refuses StorageEncrypted and KmsKeyId on a same-region replica"));
        skips.push(skip("CKV_AWS_157", "read replica: it serves reads and is rebuilt from the primary, whose availability `database.multi_az` sets"));
    } else if !db.multi_az {
        skips.push(skip(
            "CKV_AWS_157",
            "scaled-down environment: `database.multi_az` is false in the spec",
        ));
    }
    if !db.deletion_protection {
        skips.push(skip("CKV_AWS_293", "scaled-down environment: `database.deletion_protection` is false so that it can be torn down"));
    } else if !protected {
        skips.push(skip("CKV_AWS_293", "first create of the stack: a rollback must be able to delete the instance; the deploy turns protection on with an update right after the create"));
    }
    if db.enhanced_monitoring_seconds == 0 {
        skips.push(skip(
            "CKV_AWS_118",
            "scaled-down environment: `database.enhanced_monitoring_seconds` is 0 in the spec",
        ));
    }
    if !db.performance_insights {
        skips.push(skip(
            "CKV_AWS_353",
            "scaled-down environment: `database.performance_insights` is false in the spec",
        ));
    }
    skips
}

/// The data stack. With `first_create` (the deploy creates the stack now),
/// the database instances are rendered without deletion protection: a
/// protected instance can't be deleted, so the rollback of a failed create
/// would end in ROLLBACK_FAILED and the stack could not be created again.
/// The deploy renders the stack again without `first_create` and updates it
/// at once after the create succeeds, which turns protection on in place, so
/// a database that holds data is protected from its first update on
/// (CloudFormation Template Reference: AWS::RDS::DBInstance,
/// DeletionProtection: "can't be deleted when deletion protection is
/// enabled"; update requires no interruption).
pub fn data(env: &str, spec: &Spec, first_create: bool) -> DataContext {
    let db = &spec.database;
    let protected = db.deletion_protection && !first_create;
    let mut params = vec![
        list_from_output("SubnetIds", "network", "Private subnets of the database"),
        from_output(
            "DatabaseSecurityGroupId",
            "network",
            "Security group of the database",
        ),
    ];
    if db.proxy {
        params.push(from_output(
            "ProxySecurityGroupId",
            "network",
            "Security group of the RDS Proxy",
        ));
    }
    let mut raw_skips = Vec::new();
    if !spec.storage.raw.versioning {
        raw_skips.push(skip("CKV_AWS_21", "`storage.raw.versioning` is false in the spec: raw batches are written once and never overwritten"));
    }
    let prod_like = spec.prod_like();
    DataContext {
        common: Common::new(
            env,
            spec,
            "data",
            "KMS key, raw bucket, queues, database; stateful",
        ),
        params,
        key_pending_days: if prod_like { 30 } else { 7 },
        raw: RawContext {
            retention_days: spec.storage.raw.retention_days,
            versioning: spec.storage.raw.versioning,
            skips: raw_skips,
            log_skips: vec![
                skip(
                    "CKV_AWS_18",
                    "this bucket is the access-log target; logging it into itself would loop",
                ),
                skip(
                    "CKV_AWS_145",
                    "S3 server access logging delivers only to buckets encrypted with SSE-S3",
                ),
            ],
            log_retention_days: if prod_like { 365 } else { 90 },
        },
        queue: QueueContext {
            visibility_timeout: spec.queue.visibility_timeout_seconds,
            max_receives: spec.queue.max_receives,
            dead_letter_retention_seconds: spec.queue.dead_letter_retention_days * 86_400,
        },
        db: DbContext {
            engine_version: db.engine_version.clone(),
            family: format!("postgres{}", db.major_version()),
            instance_class: db.instance_class.clone(),
            storage_gb: db.storage_gb,
            max_storage_gb: db.max_storage_gb,
            multi_az: db.multi_az,
            backup_retention_days: db.backup_retention_days,
            deletion_protection: protected,
            proxy: db.proxy,
            performance_insights: db.performance_insights,
            monitoring_interval: db.enhanced_monitoring_seconds,
            name: db.name.clone(),
            policy: if prod_like { "Snapshot" } else { "Delete" },
            skips: db_skips(spec, false, protected),
        },
        replicas: (1..=db.read_replicas)
            .map(|i| Replica {
                logical_id: format!("Replica{i}"),
                skips: db_skips(spec, true, protected),
            })
            .collect(),
        cors_origins: spec.api.cors_origins.clone(),
    }
}

// ---------------------------------------------------------------- monitoring

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
pub fn gate_version_condition(function: impl std::fmt::Display) -> String {
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

pub fn function_name(prefix: &str, function: impl std::fmt::Display) -> String {
    format!("{prefix}-{function}")
}

/// The monitoring stack's parameter that points a function's gate alarms at
/// one version (`IngestGateVersion`): the deploy engine sets it to the
/// version a rollout moves to before the first shift of traffic, and back to
/// [`ALL_VERSIONS`] when the rollout ends (promoted, rolled back or aborted).
pub fn gate_version_parameter(function: impl std::fmt::Display) -> String {
    format!("{}GateVersion", pascal(&function.to_string()))
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
                value: "gate_version",
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
            name: format!("/aws/lambda/{}", function_name(&prefix, name)),
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

// ---------------------------------------------------------------- app

#[derive(Debug, Serialize)]
pub struct AppContext {
    pub common: Common,
    pub params: Vec<Param>,
    pub functions: Vec<FunctionContext>,
    pub api: ApiContext,
    /// The REST API's OpenAPI body, with the API Gateway integrations.
    pub openapi: String,
    pub deployment_id: String,
    /// Instances the query function reads from: the replicas, or the primary.
    pub read_targets: usize,
    pub batch_size: u32,
    pub max_concurrency: Option<u32>,
    /// The ingest function's inline limit, in bytes.
    pub max_inline_bytes: u64,
    pub access_log_format: String,
    pub proxy: bool,
    pub db_name: String,
}

#[derive(Debug, Serialize)]
pub struct FunctionContext {
    pub name: &'static str,
    /// `Ingest`, `Loader`, `Query`: the prefix of its logical ids.
    pub id: String,
    pub function_name: String,
    pub memory_mb: u32,
    pub timeout_seconds: u32,
    pub reserved_concurrency: Option<u32>,
    pub architecture: &'static str,
    pub log_level: &'static str,
    /// Whether the code ships as a container image (else as a zip).
    pub image: bool,
    pub db_user: String,
    /// Whether it reads the raw bucket / writes it / consumes the queue / reads the replicas / reads the secret.
    pub reads_raw: bool,
    pub writes_raw: bool,
    /// Whether it looks objects up under `raw/` and so needs `s3:ListBucket`
    /// there: without it S3 answers HeadObject of a missing key with 403,
    /// not 404 (Amazon S3 API Reference, HeadObject: Permissions).
    pub lists_raw: bool,
    pub consumes_queue: bool,
    /// Whether it sends messages to the KMS-encrypted queue (the loader's chunk fan-out).
    pub sends_to_queue: bool,
    /// Whether it needs `kms:GenerateDataKey` on the environment key: writers of
    /// SSE-KMS objects, and producers of an encrypted queue (Amazon SQS
    /// Developer Guide, Key management: Configure KMS permissions for producers).
    pub makes_data_keys: bool,
    pub reads_replicas: bool,
    pub reads_secret: bool,
    pub behind_api: bool,
    pub skips: Vec<Skip>,
}

#[derive(Debug, Serialize)]
pub struct ApiContext {
    pub name: String,
    pub stage: &'static str,
    pub api_key: bool,
    pub rate: u32,
    pub burst: u32,
    pub skips: Vec<Skip>,
}

pub const STAGE: &str = "live";

/// The API's access log lines: one JSON object per request.
const ACCESS_LOG_FORMAT: &str = concat!(
    r#"{"requestId":"$context.requestId","ip":"$context.identity.sourceIp","#,
    r#""requestTime":"$context.requestTime","method":"$context.httpMethod","path":"$context.path","#,
    r#""status":"$context.status","responseLength":"$context.responseLength","#,
    r#""latencyMs":"$context.responseLatency","integrationLatencyMs":"$context.integration.latency","#,
    r#""apiKeyId":"$context.identity.apiKeyId","error":"$context.error.message"}"#
);

pub fn app(env: &str, spec: &Spec, openapi: String) -> AppContext {
    let common = Common::new(
        env,
        spec,
        "app",
        "functions, aliases, API, event source; stateless",
    );
    let prefix = common.prefix.clone();
    let mut params = vec![
        list_from_output("SubnetIds", "network", "Private subnets of the functions"),
        from_output(
            "FunctionSecurityGroupId",
            "network",
            "Security group of the functions",
        ),
        from_output("KeyArn", "data", "KMS key of the data stack"),
        from_output("RawBucketName", "data", "Bucket of raw batches"),
        from_output("QueueArn", "data", "Queue feeding the loader"),
        from_output("QueueUrl", "data", "Queue feeding the loader (URL)"),
        from_output(
            "DbSecretArn",
            "data",
            "Secret with the database's admin credentials",
        ),
        from_output(
            "DbWriteEndpoint",
            "data",
            "Host the functions write to (primary or proxy)",
        ),
        from_output("DbPort", "data", "Port of the database"),
        from_output(
            "DbReadEndpoints",
            "data",
            "Hosts the query function reads from, comma-separated",
        ),
        from_output(
            "DbWriteResourceId",
            "data",
            "Resource id in the writers' rds-db:connect ARNs",
        ),
        list_from_output(
            "DbReadResourceIds",
            "data",
            "Resource ids in the query function's rds-db:connect ARNs",
        ),
        from_output(
            "IngestLogGroupName",
            "monitoring",
            "Log group of the ingest function",
        ),
        from_output(
            "LoaderLogGroupName",
            "monitoring",
            "Log group of the loader function",
        ),
        from_output(
            "QueryLogGroupName",
            "monitoring",
            "Log group of the query function",
        ),
        from_output(
            "ApiAccessLogGroupArn",
            "monitoring",
            "Log group of the API's access logs",
        ),
    ];
    let zips = spec
        .functions
        .all()
        .iter()
        .any(|(_, f)| f.package == Packaging::Zip);
    if zips {
        params.push(Param {
            name: "AssetsBucket",
            kind: "String",
            description: "Bucket holding the function packages (from the bootstrap stack)",
            default: None,
            source: Source::Deploy {
                value: "assets_bucket",
            },
        });
    }
    for (name, f) in spec.functions.all() {
        let (key, image, version): (&'static str, &'static str, &'static str) = match name {
            FunctionId::Ingest => ("IngestCodeKey", "IngestImageUri", "IngestLiveVersion"),
            FunctionId::Loader => ("LoaderCodeKey", "LoaderImageUri", "LoaderLiveVersion"),
            FunctionId::Query => ("QueryCodeKey", "QueryImageUri", "QueryLiveVersion"),
        };
        params.push(if f.package == Packaging::Image {
            Param {
                name: image,
                kind: "String",
                description: "The function's container image, by digest",
                default: None,
                source: Source::Asset {
                    asset: name.as_str(),
                },
            }
        } else {
            Param {
                name: key,
                kind: "String",
                description: "S3 key of the function's package, named by its SHA-256",
                default: None,
                source: Source::Asset {
                    asset: name.as_str(),
                },
            }
        });
        params.push(Param {
            name: version,
            kind: "String",
            description: "Version the function's `live` alias points to",
            default: Some("$LATEST"),
            source: Source::Deploy {
                value: "live_version",
            },
        });
    }
    let functions = spec
        .functions
        .all()
        .iter()
        .map(|(name, f)| {
            let behind_api = name.serves_api();
            let mut skips = vec![
                if f.package == Packaging::Image {
                    skip("CKV_AWS_272", "the image is built from source by `pipeline build` and named by its digest; Lambda has no code signing for container images")
                } else {
                    skip("CKV_AWS_272", "packages are built from source by `pipeline build` and addressed by their SHA-256; no AWS Signer profile is used")
                },
                if behind_api {
                    skip("CKV_AWS_116", "invoked synchronously by API Gateway, which returns errors to the caller; there are no asynchronous events to dead-letter")
                } else {
                    skip("CKV_AWS_116", "invoked by an SQS event source mapping; failed messages go to the source queue's dead-letter queue")
                },
            ];
            if f.reserved_concurrency.is_none() {
                skips.push(skip(
                    "CKV_AWS_115",
                    format!("`functions.{name}.reserved_concurrency` is null in the spec: scaled-down accounts keep their concurrency unreserved"),
                ));
            }
            let writes_raw = *name == FunctionId::Ingest;
            let sends_to_queue = *name == FunctionId::Loader;
            FunctionContext {
                name: name.as_str(),
                id: pascal(name.as_str()),
                function_name: function_name(&prefix, name),
                memory_mb: f.memory_mb,
                timeout_seconds: f.timeout_seconds,
                reserved_concurrency: f.reserved_concurrency,
                architecture: f.architecture.as_str(),
                log_level: f.log_level.as_str(),
                image: f.package == Packaging::Image,
                db_user: format!("pipeline_{name}"),
                reads_raw: *name == FunctionId::Loader,
                writes_raw,
                lists_raw: matches!(*name, FunctionId::Ingest | FunctionId::Loader),
                consumes_queue: *name == FunctionId::Loader,
                sends_to_queue,
                makes_data_keys: writes_raw || sends_to_queue,
                reads_replicas: *name == FunctionId::Query,
                reads_secret: *name == FunctionId::Loader,
                behind_api,
                skips,
            }
        })
        .collect();
    let deployment_id = format!(
        "ApiDeployment{}",
        &super::sha256_hex(openapi.as_bytes())[..10]
    );
    AppContext {
        common,
        params,
        functions,
        api: ApiContext {
            name: api_name(&prefix),
            stage: STAGE,
            api_key: spec.api.auth == AuthMode::ApiKey,
            rate: spec.api.throttle.rate,
            burst: spec.api.throttle.burst,
            skips: vec![skip(
                "CKV_AWS_120",
                "responses are per caller and batch statuses change by the second; a cache would serve stale answers",
            )],
        },
        openapi,
        deployment_id,
        read_targets: usize::from(spec.database.read_replicas).max(1),
        batch_size: spec.queue.batch_size,
        max_inline_bytes: u64::from(spec.api.max_inline_batch_kib) * 1024,
        max_concurrency: spec.queue.max_concurrency,
        access_log_format: ACCESS_LOG_FORMAT.to_string(),
        proxy: spec.database.proxy,
        db_name: spec.database.name.clone(),
    }
}

/// `secrets-manager` -> `SecretsManager`, `ingest` -> `Ingest`.
pub fn pascal(s: &str) -> String {
    s.split(['-', '_'])
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}
