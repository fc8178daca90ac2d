//! The environment spec: what `environments/*.yaml` files describe, once an
//! environment's file has been layered over its parents.
//!
//! Field documentation becomes the JSON Schema's descriptions (`pipeline
//! schema`) and the help text of validation errors, so write it for users.

use std::collections::BTreeMap;

pub use pipeline_contract::FunctionId;
use pipeline_dataset::Dataset;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One environment of the pipeline.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// The environment this file layers over (default `base`). Mappings merge
    /// key by key; scalars and lists replace the parent's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extends: Option<String>,
    /// Project name, used in stack and resource names: 2 to 20 lower case
    /// letters, digits and `-`, starting with a letter.
    #[schemars(regex(pattern = r"^[a-z][a-z0-9-]{1,19}$"))]
    pub project: String,
    /// AWS account id (12 digits) the environment must be deployed to; a
    /// deploy from any other account is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{12}$"))]
    pub account: Option<String>,
    /// AWS region, such as `eu-west-1`.
    #[schemars(regex(pattern = r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]$"))]
    pub region: String,
    /// Tags put on both the stacks and every resource that takes tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub network: Network,
    pub api: Api,
    pub functions: Functions,
    pub storage: Storage,
    pub database: Database,
    pub queue: Queue,
    pub monitoring: Monitoring,
    pub rollout: Rollout,
    /// The datasets the pipeline loads, by name (the Postgres table's name).
    #[schemars(length(min = 1))]
    pub datasets: BTreeMap<String, Dataset>,
    /// Rules deliberately not applied to this environment, each with its reason.
    #[serde(default)]
    pub waivers: Vec<Waiver>,
}

/// The VPC the functions and the database live in. There is no NAT gateway:
/// the functions reach AWS services through VPC endpoints.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// The VPC's IPv4 range, a private block from /16 to /24, such as `10.20.0.0/16`.
    pub cidr: String,
    /// Number of availability zones with a private subnet (RDS needs at least 2).
    #[schemars(range(min = 2, max = 6))]
    pub azs: u8,
    /// AWS services the functions reach through VPC endpoints (S3 is a gateway endpoint, the rest are interface endpoints).
    pub endpoints: Vec<Endpoint>,
}

/// An AWS service reachable from the VPC through an endpoint.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    S3,
    Sqs,
    Secretsmanager,
    Kms,
    Logs,
    Monitoring,
    Sts,
}

impl Endpoint {
    /// The service name in `com.amazonaws.<region>.<service>`.
    pub fn service(self) -> &'static str {
        match self {
            Endpoint::S3 => "s3",
            Endpoint::Sqs => "sqs",
            Endpoint::Secretsmanager => "secretsmanager",
            Endpoint::Kms => "kms",
            Endpoint::Logs => "logs",
            Endpoint::Monitoring => "monitoring",
            Endpoint::Sts => "sts",
        }
    }
}

/// The REST API in front of the functions.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Api {
    /// How callers authenticate: `cognito` (OAuth 2.0 access tokens of the environment's Cognito user pool, with a read and a write scope per dataset), `api_key` (an API key and usage plan), `iam` (SigV4) or `none`.
    pub auth: AuthMode,
    /// With `auth: cognito`, the API's clients (client credentials), each with the scopes it may ask for: `<dataset>.read`, `<dataset>.write`.
    #[serde(default)]
    pub clients: BTreeMap<String, Vec<String>>,
    /// With `auth: cognito`: each client also gets an API key of the stage's usage plan, for metering and throttling per client; requests need both the token and the key.
    #[serde(default)]
    pub metering_keys: bool,
    pub throttle: Throttle,
    /// Largest batch body accepted inline, in KiB; bigger batches go through presigned uploads.
    #[schemars(range(min = 1))]
    pub max_inline_batch_kib: u32,
    /// The most a compressed upload may decode to, per byte of it (default 200; text compresses 5 to 20 times): one decoding to more fails its batch with the reason, nothing loaded.
    #[serde(default = "default_decoded_ratio")]
    #[schemars(range(min = 2, max = 10000))]
    pub max_decoded_ratio: u32,
    /// Origins allowed to call the API from a browser, such as `https://app.example.com`.
    #[serde(default)]
    pub cors_origins: Vec<String>,
    /// An AWS WAF web ACL on the API's stage: required in prod-like environments.
    #[serde(default)]
    pub waf: Option<Waf>,
}

/// The web ACL in front of the API's stage: a rate-based rule per client
/// address, and AWS's managed rules against known bad inputs.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Waf {
    /// Requests one client address may make in 5 minutes before its further requests are blocked (403) until its rate falls below it.
    #[schemars(range(min = 10, max = 2_000_000_000))]
    pub rate_limit: u32,
}

fn default_decoded_ratio() -> u32 {
    200
}

/// How API callers authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    Cognito,
    ApiKey,
    Iam,
    None,
}

/// Request rate limits of the API's stage.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Throttle {
    /// Steady-state requests per second.
    #[schemars(range(min = 1, max = 10000))]
    pub rate: u32,
    /// Requests allowed in a burst.
    #[schemars(range(min = 1, max = 5000))]
    pub burst: u32,
}

/// Settings of the three functions.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Functions {
    pub ingest: Function,
    pub loader: Function,
    pub query: Function,
}

impl Functions {
    /// The functions, in a fixed order.
    pub fn all(&self) -> [(FunctionId, &Function); 3] {
        [
            (FunctionId::Ingest, &self.ingest),
            (FunctionId::Loader, &self.loader),
            (FunctionId::Query, &self.query),
        ]
    }

    /// A function's settings by its name, when it is one of the functions.
    pub fn named(&self, name: &str) -> Option<&Function> {
        name.parse().ok().map(|id| self.get(id))
    }

    /// A function's settings.
    pub fn get(&self, id: FunctionId) -> &Function {
        match id {
            FunctionId::Ingest => &self.ingest,
            FunctionId::Loader => &self.loader,
            FunctionId::Query => &self.query,
        }
    }
}

/// Settings of one Lambda function.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Function {
    /// Memory in MB, from 128 to 10240; CPU grows with it.
    #[schemars(range(min = 128, max = 10240))]
    pub memory_mb: u32,
    /// Longest run of one invocation, in seconds, from 1 to 900.
    #[schemars(range(min = 1, max = 900))]
    pub timeout_seconds: u32,
    /// Concurrent executions kept for this function alone (null: none reserved).
    #[serde(default)]
    #[schemars(range(min = 1, max = 1000))]
    pub reserved_concurrency: Option<u32>,
    /// Processor architecture: `arm64` (Graviton, cheaper) or `x86_64`.
    pub architecture: Architecture,
    /// Least severe log level written: `error`, `warn`, `info`, `debug` or `trace`.
    pub log_level: LogLevel,
    /// How the function's code ships: `zip` (a package in the assets bucket)
    /// or `image` (a container image in the environment's ECR repository).
    #[serde(default)]
    pub package: Packaging,
    /// Base image of a `package: image` function, by tag or digest (default:
    /// `public.ecr.aws/lambda/provided:al2023`); it must be published for
    /// the function's architecture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_image: Option<String>,
}

/// How a function's code is shipped to Lambda.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Packaging {
    #[default]
    Zip,
    Image,
}

/// Processor architecture of a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Architecture {
    X86_64,
    Arm64,
}

impl Architecture {
    pub fn as_str(self) -> &'static str {
        match self {
            Architecture::X86_64 => "x86_64",
            Architecture::Arm64 => "arm64",
        }
    }
}

/// Least severe level a function logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// Where raw batches are kept.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    pub raw: RawStorage,
}

/// The bucket that holds every accepted batch as received.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    /// Days a raw batch is kept before it expires.
    #[schemars(range(min = 1, max = 3650))]
    pub retention_days: u32,
    /// Keep earlier versions of overwritten or deleted objects.
    pub versioning: bool,
}

/// The Postgres database: a primary and its read replicas.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Database {
    /// Postgres engine version, such as `17` (the latest minor version, upgraded automatically) or `17.6` (major versions 13 to 17).
    #[schemars(regex(pattern = r"^[0-9]{2}(\.[0-9]+)?$"))]
    pub engine_version: String,
    /// RDS instance class, such as `db.t4g.micro` or `db.r7g.large`.
    #[schemars(regex(pattern = r"^db\.[a-z0-9-]+\.[a-z0-9]+$"))]
    pub instance_class: String,
    /// Allocated storage in GiB (gp3), from 20.
    #[schemars(range(min = 20, max = 65536))]
    pub storage_gb: u32,
    /// Upper limit for storage autoscaling in GiB (null: no autoscaling).
    #[serde(default)]
    #[schemars(range(min = 21, max = 65536))]
    pub max_storage_gb: Option<u32>,
    /// Keep a synchronous standby in a second availability zone.
    pub multi_az: bool,
    /// Number of read replicas serving queries, from 0 to 5.
    #[schemars(range(min = 0, max = 5))]
    pub read_replicas: u8,
    /// Days of automated backups, from 1 to 35.
    #[schemars(range(min = 1, max = 35))]
    pub backup_retention_days: u8,
    /// Refuse deletion of the database; also keeps a final snapshot when the stack goes.
    pub deletion_protection: bool,
    /// Put an RDS Proxy in front of the primary.
    #[serde(default)]
    pub proxy: bool,
    /// Turn on Performance Insights (not available on the smallest classes).
    #[serde(default)]
    pub performance_insights: bool,
    /// Enhanced monitoring interval in seconds: 0 (off), 1, 5, 10, 15, 30 or 60.
    #[serde(default)]
    pub enhanced_monitoring_seconds: u8,
    /// Name of the database the pipeline's tables live in.
    #[schemars(regex(pattern = r"^[a-z][a-z0-9_]{0,62}$"))]
    pub name: String,
}

impl Database {
    /// The engine's major version, such as `16`.
    pub fn major_version(&self) -> &str {
        self.engine_version
            .split('.')
            .next()
            .unwrap_or(&self.engine_version)
    }
}

/// The queue between the raw bucket and the loader.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Queue {
    /// Seconds a received message stays hidden; at least six times the loader's timeout.
    #[schemars(range(min = 0, max = 43200))]
    pub visibility_timeout_seconds: u32,
    /// Receives before a message moves to the dead-letter queue.
    #[schemars(range(min = 1, max = 1000))]
    pub max_receives: u32,
    /// Messages handed to one loader invocation, from 1 to 10.
    #[schemars(range(min = 1, max = 10))]
    pub batch_size: u32,
    /// Most loader invocations the queue drives at once (null: no limit beyond the function's).
    #[serde(default)]
    #[schemars(range(min = 2, max = 1000))]
    pub max_concurrency: Option<u32>,
    /// Days the dead-letter queue keeps a message, from 1 to 14.
    #[schemars(range(min = 1, max = 14))]
    pub dead_letter_retention_days: u32,
}

/// Logs, alarms and the dashboard.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Monitoring {
    /// Days CloudWatch keeps the logs; one of the values CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653).
    pub log_retention_days: u32,
    /// Email addresses that receive alarm notifications.
    #[serde(default)]
    pub notify: Vec<String>,
    /// Create the CloudWatch dashboard.
    pub dashboard: bool,
    pub alarms: AlarmThresholds,
    /// Share of API requests traced with X-Ray beyond the first request each second, in percent (X-Ray's own default is 5); the functions a traced request reaches are traced with it.
    #[serde(default = "default_trace_percent")]
    #[schemars(range(min = 0, max = 100))]
    pub trace_percent: u8,
}

fn default_trace_percent() -> u8 {
    5
}

/// When each alarm fires.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlarmThresholds {
    /// Function errors in 5 minutes that raise a function's error alarm.
    #[schemars(range(min = 1))]
    pub function_errors: u32,
    /// Throttled invocations in 5 minutes that raise a function's throttle alarm.
    #[schemars(range(min = 1))]
    pub function_throttles: u32,
    /// p99 duration, in percent of the function's timeout, that raises its duration alarm.
    #[schemars(range(min = 10, max = 100))]
    pub function_p99_percent_of_timeout: u32,
    /// API 5XX responses in 5 minutes that raise the API error alarm.
    #[schemars(range(min = 1))]
    pub api_5xx: u32,
    /// API p99 latency in milliseconds that raises the API latency alarm.
    #[schemars(range(min = 50, max = 29000))]
    pub api_p99_latency_ms: u32,
    /// Database CPU percent that raises the CPU alarm.
    #[schemars(range(min = 10, max = 100))]
    pub db_cpu_percent: u32,
    /// Free storage in GiB below which the storage alarm fires.
    #[schemars(range(min = 1))]
    pub db_free_storage_gb: u32,
    /// Database connections that raise the connections alarm.
    #[schemars(range(min = 1))]
    pub db_connections: u32,
    /// Replica lag in seconds that raises the replica lag alarm.
    #[schemars(range(min = 1))]
    pub replica_lag_seconds: u32,
    /// Age in seconds of the oldest queued message that raises the queue age alarm.
    #[schemars(range(min = 60))]
    pub queue_age_seconds: u32,
}

/// How new function code takes traffic.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    /// `all-at-once`, `canary` (`percent` for `bake_minutes`, then all) or `linear` (`percent` more every `interval_minutes`).
    pub strategy: Strategy,
    /// Traffic share of the new version per step, in percent (canary and linear).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 99))]
    pub percent: Option<u8>,
    /// Minutes the canary share runs before all traffic moves (canary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1440))]
    pub bake_minutes: Option<u32>,
    /// Minutes between steps (linear).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1440))]
    pub interval_minutes: Option<u32>,
    /// Alarms whose ALARM state sends traffic back to the previous version: any of the pipeline's own alarms (see `pipeline schema`).
    #[serde(default)]
    pub alarms: Vec<GateAlarm>,
    /// Names of other CloudWatch alarms that also gate the rollout.
    #[serde(default)]
    pub external_alarms: Vec<String>,
    /// Seconds between two reads of the gate alarms.
    #[schemars(range(min = 5, max = 300))]
    pub poll_seconds: u32,
    /// Invocations each function's new version must serve during a step's bake for the gates' verdict to count: a gate that saw no traffic judged nothing. A step whose new version served fewer sends all traffic back, saying so. 0 (the default) judges by the alarms alone.
    #[serde(default)]
    pub min_invocations: MinInvocations,
}

/// Invocations per function (see `rollout.min_invocations`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MinInvocations {
    #[serde(default)]
    pub ingest: u32,
    #[serde(default)]
    pub loader: u32,
    #[serde(default)]
    pub query: u32,
}

impl MinInvocations {
    pub fn of(&self, function: FunctionId) -> u32 {
        match function {
            FunctionId::Ingest => self.ingest,
            FunctionId::Loader => self.loader,
            FunctionId::Query => self.query,
        }
    }
}

/// How new code takes traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    AllAtOnce,
    Canary,
    Linear,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::AllAtOnce => "all-at-once",
            Strategy::Canary => "canary",
            Strategy::Linear => "linear",
        }
    }
}

/// One of the alarms the pipeline creates.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum GateAlarm {
    IngestErrors,
    IngestThrottles,
    IngestDuration,
    LoaderErrors,
    LoaderThrottles,
    LoaderDuration,
    QueryErrors,
    QueryThrottles,
    QueryDuration,
    #[serde(rename = "api-5xx")]
    Api5xx,
    ApiLatency,
    DbCpu,
    DbStorage,
    DbConnections,
    ReplicaLag,
    DeadLetters,
    QueueAge,
}

/// A rule deliberately not applied, with the reason written down.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Waiver {
    /// The rule waived.
    pub rule: WaivedRule,
    /// Why, for the reviewers of the spec (at least 10 characters).
    #[schemars(length(min = 10))]
    pub reason: String,
}

/// Rules that a spec may waive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum WaivedRule {
    /// A prod-like environment (deletion protection or a gradual rollout) without a multi-AZ database.
    SingleAz,
    /// A prod-like environment whose API has `auth: none`.
    OpenApi,
    /// A prod-like environment whose API has no `waf`.
    NoWaf,
}

impl Spec {
    /// Prod-like: the database is protected from deletion or code takes
    /// traffic gradually. Such environments get the stricter rules.
    pub fn prod_like(&self) -> bool {
        self.database.deletion_protection || self.rollout.strategy != Strategy::AllAtOnce
    }

    /// Whether a rule is waived in this spec.
    pub fn waives(&self, rule: WaivedRule) -> bool {
        self.waivers.iter().any(|w| w.rule == rule)
    }
}
