//! The app stack: the functions, their aliases and roles, and the REST API.

use super::*;

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
    /// The functions' private subnets, one per availability zone.
    pub subnets: usize,
    pub batch_size: u32,
    pub max_concurrency: Option<u32>,
    /// The ingest function's inline limit, in bytes.
    pub max_inline_bytes: u64,
    /// The loader's limit on what a compressed upload decodes to, per byte.
    pub max_decoded_ratio: u32,
    /// The queue's `maxReceiveCount`: the loader fails a batch on the last delivery.
    pub max_receives: u32,
    pub access_log_format: String,
    pub proxy: bool,
    pub db_name: String,
    pub migrator: MigratorContext,
}

/// The function that runs the migrations: the loader's package under a
/// role of its own, the only one that can read the database's master
/// secret, with Lambda's longest timeout. The deploy invokes it before any
/// new version takes traffic; nothing else does.
#[derive(Debug, Serialize)]
pub struct MigratorContext {
    pub function_name: String,
    pub timeout_seconds: u32,
    pub skips: Vec<Skip>,
}

/// Lambda's longest timeout: migrations build indexes `CONCURRENTLY`, and a
/// build stopped halfway is finished by the next deploy.
pub const MIGRATOR_TIMEOUT_SECONDS: u32 = 900;

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
    /// Whether it reads the raw bucket / writes it / consumes the queue / reads the replicas.
    pub reads_raw: bool,
    pub writes_raw: bool,
    /// Whether it looks objects up under `raw/` and so needs `s3:ListBucket`
    /// there: without it S3 answers HeadObject of a missing key with 403,
    /// not 404 (Amazon S3 API Reference, HeadObject: Permissions).
    pub lists_raw: bool,
    /// Whether it keeps decoded copies of compressed batches under
    /// `decoded/` (the loader, to load them in chunks): it writes, reads and
    /// looks them up there.
    pub decodes_raw: bool,
    pub consumes_queue: bool,
    /// Whether it sends messages to the KMS-encrypted queue (the loader's chunk fan-out).
    pub sends_to_queue: bool,
    /// Whether it needs `kms:GenerateDataKey` on the environment key: writers of
    /// SSE-KMS objects, and producers of an encrypted queue (Amazon SQS
    /// Developer Guide, Key management: Configure KMS permissions for producers).
    pub makes_data_keys: bool,
    pub reads_replicas: bool,
    pub behind_api: bool,
    pub skips: Vec<Skip>,
}

#[derive(Debug, Serialize)]
pub struct ApiContext {
    pub name: String,
    pub stage: &'static str,
    pub api_key: bool,
    /// With `auth: cognito`: the user pool, its scopes and clients.
    pub cognito: Option<CognitoContext>,
    /// The web ACL's requests per client address in 5 minutes, when there is one.
    pub waf_rate_limit: Option<u32>,
    /// X-Ray's sampling rate of the stage's requests past the first each second.
    pub trace_rate: f64,
    pub rate: u32,
    pub burst: u32,
    pub skips: Vec<Skip>,
}

/// The user pool that issues the API's access tokens (client
/// credentials), its resource server's scopes and its clients.
#[derive(Debug, Serialize)]
pub struct CognitoContext {
    /// The domain prefix of the token endpoint, without the account id the
    /// template appends (domains are unique across accounts).
    pub domain: String,
    pub resource_server: &'static str,
    /// A read and a write scope per dataset: name and description.
    pub scopes: Vec<(String, String)>,
    pub clients: Vec<ClientContext>,
    /// Each client also has an API key of the usage plan.
    pub metering_keys: bool,
}

#[derive(Debug, Serialize)]
pub struct ClientContext {
    pub name: String,
    /// The logical id's stem: `ApiClient<id>`.
    pub id: String,
    /// Qualified scopes: `pipeline/<dataset>.<action>`.
    pub scopes: Vec<String>,
}

fn cognito(env: &str, spec: &Spec) -> Option<CognitoContext> {
    use pipeline_contract::{RESOURCE_SERVER, Scope};
    if spec.api.auth != AuthMode::Cognito {
        return None;
    }
    let scopes = Scope::all(spec.datasets.keys().map(String::as_str))
        .into_iter()
        .map(|s| (s.to_string(), s.description()))
        .collect();
    let clients = spec
        .api
        .clients
        .iter()
        .map(|(name, scopes)| ClientContext {
            name: name.clone(),
            id: super::model_name(name),
            scopes: scopes
                .iter()
                .filter_map(|s| s.parse::<Scope>().ok())
                .map(|s| s.qualified())
                .collect(),
        })
        .collect();
    Some(CognitoContext {
        domain: format!("{}-{env}", spec.project),
        resource_server: RESOURCE_SERVER,
        scopes,
        clients,
        metering_keys: spec.api.metering_keys,
    })
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
                value: DeployValue::AssetsBucket,
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
                value: DeployValue::LiveVersion,
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
                function_name: function_name(&prefix, *name),
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
                decodes_raw: *name == FunctionId::Loader,
                consumes_queue: *name == FunctionId::Loader,
                sends_to_queue,
                makes_data_keys: writes_raw || sends_to_queue,
                reads_replicas: *name == FunctionId::Query,
                behind_api,
                skips,
            }
        })
        .collect();
    let deployment_id = format!(
        "ApiDeployment{}",
        &crate::sha256_hex(openapi.as_bytes())[..10]
    );
    AppContext {
        common,
        params,
        functions,
        api: ApiContext {
            name: api_name(&prefix),
            stage: STAGE,
            api_key: spec.api.auth == AuthMode::ApiKey,
            cognito: cognito(env, spec),
            waf_rate_limit: spec.api.waf.as_ref().map(|w| w.rate_limit),
            trace_rate: f64::from(spec.monitoring.trace_percent) / 100.0,
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
        subnets: usize::from(spec.network.azs),
        batch_size: spec.queue.batch_size,
        max_inline_bytes: u64::from(spec.api.max_inline_batch_kib) * 1024,
        max_decoded_ratio: spec.api.max_decoded_ratio,
        max_concurrency: spec.queue.max_concurrency,
        max_receives: spec.queue.max_receives,
        access_log_format: ACCESS_LOG_FORMAT.to_string(),
        proxy: spec.database.proxy,
        db_name: spec.database.name.clone(),
        migrator: MigratorContext {
            function_name: migrator_name(&prefix),
            timeout_seconds: MIGRATOR_TIMEOUT_SECONDS,
            skips: vec![
                skip(
                    "CKV_AWS_272",
                    "the loader's package, built from source by `pipeline build` and addressed by its SHA-256 (or its image by digest); no AWS Signer profile is used",
                ),
                skip(
                    "CKV_AWS_116",
                    "invoked synchronously by the deploy, which reports its errors; there are no asynchronous events to dead-letter",
                ),
                skip(
                    "CKV_AWS_115",
                    "invoked once per deploy, under the migrations' own lock; reserving concurrency for it would take from the account's unreserved pool",
                ),
            ],
        },
    }
}
