use super::*;
use crate::load::{LoadError, Loader};

/// The problems of environment `name`, written as `overlay` beside the
/// shipped base and dev, as `file:line:column message`.
fn problems(name: &str, overlay: &str) -> Vec<String> {
    let dir = tempfile::tempdir().expect("temp dir");
    for (file, text) in [
        ("base", include_str!("../../../../environments/base.yaml")),
        ("dev", include_str!("../../../../environments/dev.yaml")),
        (name, overlay),
    ] {
        std::fs::write(dir.path().join(format!("{file}.yaml")), text).expect("write spec");
    }
    let mut loader = Loader::new(Some(dir.path().to_path_buf()));
    match loader.load(name) {
        Ok(_) => Vec::new(),
        Err(LoadError::Invalid { problems, .. }) => {
            let sources = loader.sources();
            problems
                .iter()
                .map(|p| {
                    let file = std::path::Path::new(sources.name(p.span.file))
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    format!("{file}:{}:{} {}", p.span.line, p.span.column, p.message)
                })
                .collect()
        }
        Err(e) => panic!("{e:?}"),
    }
}

/// Each cross-field rule, broken once (in a spec that extends the
/// shipped dev), with the place it is reported at: the value's own, in
/// the file that sets it.
#[test]
fn each_rule_reports_its_problem_at_its_place() {
    let cases: &[(&str, &str)] = &[
        (
            "tags:\n  aws:owner: x",
            "case.yaml:3:3 tag `aws:owner` uses the reserved prefix `aws:`",
        ),
        (
            "tags:\n  owner: \"{}\"",
            "case.yaml:3:10 tag `owner` is too long",
        ),
        (
            "network:\n  cidr: 10.40.0.0",
            "case.yaml:3:9 `network.cidr` is not an IPv4 CIDR block: `10.40.0.0`",
        ),
        (
            "network:\n  cidr: 10.40.1.0/16",
            "case.yaml:3:9 `network.cidr` has host bits set: `10.40.1.0/16`",
        ),
        (
            "network:\n  cidr: 10.40.0.0/26",
            "case.yaml:3:9 `network.cidr` must have a prefix from /16 to /24, found /26",
        ),
        (
            "network:\n  cidr: 8.8.0.0/16",
            "case.yaml:3:9 `network.cidr` is not a private range: `8.8.0.0/16`",
        ),
        (
            "network:\n  endpoints: [s3, sqs, secretsmanager, s3]",
            "case.yaml:3:40 endpoint `s3` is listed twice",
        ),
        (
            "network:\n  endpoints: [s3, sqs, secretsmanager, kms]",
            "case.yaml:3:40 nothing in the VPC calls endpoint `kms`: S3, SQS and CloudWatch Logs call KMS themselves; no function does",
        ),
        (
            "network:\n  endpoints: [s3, sqs, logs, secretsmanager]",
            "case.yaml:3:24 nothing in the VPC calls endpoint `logs`: Lambda sends the functions' logs itself, outside the VPC",
        ),
        (
            "network:\n  endpoints: [s3, secretsmanager]",
            "case.yaml:3:14 `network.endpoints` lacks endpoints the functions need: sqs (chunk messages of large batches)",
        ),
        (
            "api:\n  auth: cognito",
            "case.yaml:3:9 `auth: cognito` needs the API's clients, with their scopes",
        ),
        (
            "api:\n  metering_keys: true",
            "case.yaml:3:18 `api.metering_keys` are keys beside the tokens of `auth: cognito`",
        ),
        (
            "api:\n  clients:\n    ci: [events.write]",
            "case.yaml:3:3 `api.clients` are the clients of `auth: cognito`",
        ),
        (
            "api:\n  auth: cognito\n  clients:\n    ci: [events.delete]",
            "case.yaml:5:10 scope `events.delete`: `delete` is not an action: the actions are `read` and `write`",
        ),
        (
            "api:\n  auth: cognito\n  clients:\n    ci: [events.write, trips.read]",
            "case.yaml:5:24 scope `trips.read`: no dataset `trips`; the datasets are: events, readings",
        ),
        (
            "project: aws-data\naccount: \"123456789012\"\napi:\n  auth: cognito\n  clients:\n    ci: [events.read]",
            "case.yaml:5:9 the token endpoint's domain `aws-data-case-123456789012` is not one Cognito takes: it may not contain `aws`",
        ),
        (
            "api:\n  auth: cognito\n  clients:\n    CI: [events.read]",
            "case.yaml:5:5 `CI` cannot name a client",
        ),
        (
            "api:\n  max_inline_batch_kib: 6100",
            "case.yaml:3:25 `api.max_inline_batch_kib` must be at most 6080, found 6100",
        ),
        (
            "api:\n  cors_origins: [\"http://example.com\"]",
            "case.yaml:3:18 `http://example.com` is not an origin",
        ),
        (
            "functions:\n  query:\n    timeout_seconds: 40",
            "case.yaml:4:22 `functions.query.timeout_seconds` must be at most 29, found 40",
        ),
        (
            "functions:\n  loader:\n    base_image: base:v1",
            "case.yaml:4:5 `functions.loader.base_image` is set, but the function is packaged as a zip",
        ),
        (
            "functions:\n  loader:\n    package: image\n    base_image: Base:V1",
            "case.yaml:5:17 `functions.loader.base_image` is not an image reference: `Base:V1`",
        ),
        (
            "queue:\n  visibility_timeout_seconds: 600",
            "case.yaml:3:31 `queue.visibility_timeout_seconds` must be at least 6 times the loader's timeout (1800), found 600",
        ),
        (
            "functions:\n  loader:\n    reserved_concurrency: 10\nqueue:\n  max_concurrency: 10",
            "case.yaml:4:27 `functions.loader.reserved_concurrency` must be at least `queue.max_concurrency` + 2 (12), found 10",
        ),
        (
            "database:\n  engine_version: \"12.4\"",
            "case.yaml:3:19 Postgres 12.4 is not supported",
        ),
        (
            "database:\n  storage_gb: 200",
            "base.yaml:52:19 `database.max_storage_gb` must be above `database.storage_gb` (200), found 100",
        ),
        (
            "database:\n  enhanced_monitoring_seconds: 2",
            "case.yaml:3:32 `database.enhanced_monitoring_seconds` must be one of 0, 1, 5, 10, 15, 30, 60, found 2",
        ),
        (
            "database:\n  performance_insights: true",
            "case.yaml:3:25 Performance Insights is not available on `db.t4g.micro`",
        ),
        (
            "monitoring:\n  log_retention_days: 8",
            "case.yaml:3:23 CloudWatch Logs cannot keep logs for 8 days",
        ),
        (
            "monitoring:\n  notify: [oncall]",
            "case.yaml:3:12 `oncall` is not an email address",
        ),
        (
            "rollout:\n  strategy: canary\n  alarms: [ingest-errors]\n  percent: 10",
            "case.yaml:3:3 a canary rollout needs `rollout.bake_minutes`",
        ),
        (
            "rollout:\n  strategy: canary\n  percent: 10\n  bake_minutes: 5",
            "case.yaml:3:3 a canary rollout needs gate alarms",
        ),
        (
            "rollout:\n  percent: 10",
            "case.yaml:3:3 `rollout.percent` has no effect with strategy `all-at-once`",
        ),
        (
            "rollout:\n  alarms: [ingest-errors, ingest-errors]",
            "case.yaml:3:27 this alarm is listed twice",
        ),
        (
            "rollout:\n  alarms: [replica-lag]",
            "case.yaml:3:12 `replica-lag` gates the rollout, but the database has no read replica",
        ),
        (
            "database:\n  deletion_protection: true",
            "base.yaml:53:13 this environment is prod-like (deletion protection is on) but its database is not multi-AZ",
        ),
        (
            "database:\n  deletion_protection: true\n  multi_az: true\napi:\n  auth: none",
            "case.yaml:6:9 this environment is prod-like (deletion protection is on) but its API has no authentication",
        ),
        (
            "database:\n  deletion_protection: true\n  multi_az: true",
            "base.yaml:16:3 this environment is prod-like (deletion protection is on) but its API has no web ACL",
        ),
        (
            "waivers: [{rule: single-az, reason: not needed}]",
            "case.yaml:2:18 this waiver waives a rule the environment does not break",
        ),
        (
            "datasets:\n  events:\n    filterable: [payload]",
            "case.yaml:4:18 jsonb column `payload` cannot be filtered",
        ),
        (
            "datasets:\n  Events:\n    format: csv\n    columns: [{name: id, type: bigint}]\n    primary_key: [id]\n    on_conflict: ignore",
            "case.yaml:3:3 dataset name `Events` cannot name a table",
        ),
        (
            "datasets:\n  trips:\n    format: csv\n    columns:\n      - {name: at, type: timestamptz, format: \"%Y-%m-%d %H:%M\", timezone: Europe/Pari}\n    primary_key: [at]\n    on_conflict: ignore",
            "case.yaml:6:75 dataset `trips`: column `at`: `Europe/Pari` is not a known time zone",
        ),
        (
            "datasets:\n  trips:\n    format: csv\n    columns:\n      - {name: at, type: date, default: \"31.01.2024\"}\n    primary_key: [at]\n    on_conflict: ignore",
            "case.yaml:6:41 dataset `trips`: column `at`: the default does not fit the column: expected a date written YYYY-MM-DD, such as 2024-01-31, found `31.01.2024`",
        ),
        (
            "datasets:\n  trips:\n    format: csv\n    columns:\n      - {name: at, type: int, format: \"%Y\"}\n    primary_key: [at]\n    on_conflict: ignore",
            "case.yaml:6:39 dataset `trips`: column `at` is integer: only date and timestamptz columns take a `format`",
        ),
        (
            "datasets:\n  trips:\n    format: csv\n    columns:\n      - {name: at, type: date, format: \"%Y/%m\"}\n    primary_key: [at]\n    on_conflict: ignore",
            "case.yaml:6:40 dataset `trips`: column `at`: the format `%Y/%m` does not give a whole date",
        ),
        (
            "datasets:\n  trips:\n    format: ndjson\n    csv: {header: false}\n    columns:\n      - {name: at, type: int, nullable: false}\n    primary_key: [at]\n    on_conflict: ignore",
            "case.yaml:5:10 dataset `trips`: `csv` options are for datasets with `format: csv`",
        ),
        (
            "datasets:\n  trips:\n    format: csv\n    csv: {delimiter: \";;\"}\n    columns:\n      - {name: at, type: int, nullable: false}\n    primary_key: [at]\n    on_conflict: ignore",
            "case.yaml:5:22 dataset `trips`: `delimiter` must be one character, found `;;`",
        ),
    ];
    let mut wrong = Vec::new();
    for (overlay, expected) in cases {
        let overlay = format!("extends: dev\n{overlay}\n").replace("{}", &"v".repeat(257));
        let found = problems("case", &overlay);
        if !found.iter().any(|p| p == expected) {
            wrong.push(format!("{overlay}expected: {expected}\nfound: {found:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
    // The longest bucket name: the project, the environment's name and
    // the region together.
    let found = problems(
        "integration1",
        "extends: dev\nproject: abcdefghijklmnopqrst\nregion: ap-southeast-2\n",
    );
    assert!(
            found.contains(&"integration1.yaml:2:10 bucket names of `integration1` would be 66 characters long, over S3's limit of 63".to_string()),
            "{found:?}"
        );
}

#[test]
fn origins() {
    assert!(is_origin("https://app.example.com"));
    assert!(is_origin("https://app.example.com:8443"));
    assert!(is_origin("http://localhost:3000"));
    assert!(!is_origin("https://app.example.com/path"));
    assert!(!is_origin("http://example.com"));
    assert!(!is_origin("*"));
}
