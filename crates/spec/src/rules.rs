//! Rules that span several fields of a spec, or that need more than a schema
//! can say (CIDR arithmetic, AWS service limits, naming lengths).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::diag::{Problem, Span};
use super::model::{
    AuthMode, Endpoint, FunctionId, GateAlarm, Packaging, Spec, Strategy, WaivedRule,
};
use super::yaml::{Node, Value};

/// Retention periods CloudWatch Logs accepts, in days.
pub const LOG_RETENTION_DAYS: &[u32] = &[
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

/// API Gateway ends an integration after 29 seconds.
const API_GATEWAY_TIMEOUT_SECONDS: u32 = 29;

/// Lambda takes at most 6 MB (6,291,456 bytes) per synchronous request; the
/// API Gateway event around the body needs some of it.
pub const MAX_INLINE_BATCH_KIB: u32 = 6080;

/// Endpoints the functions cannot work without.
const REQUIRED_ENDPOINTS: &[(Endpoint, &str)] = &[
    (Endpoint::S3, "raw batches"),
    (Endpoint::Sqs, "chunk messages of large batches"),
    (Endpoint::Secretsmanager, "database credentials"),
];

/// Interface endpoints nothing in the VPC calls, and why: each costs by the
/// hour in every availability zone (about $7.30 a month per zone, AWS
/// PrivateLink pricing) and serves no request.
const UNUSED_ENDPOINTS: &[(Endpoint, &str)] = &[
    (
        Endpoint::Kms,
        "S3, SQS and CloudWatch Logs call KMS themselves; no function does",
    ),
    (
        Endpoint::Logs,
        "Lambda sends the functions' logs itself, outside the VPC",
    ),
    (
        Endpoint::Monitoring,
        "the functions publish no metrics; Lambda's and the services' own need no endpoint",
    ),
    (
        Endpoint::Sts,
        "the functions get their credentials from Lambda, not from STS",
    ),
];

/// Enhanced monitoring intervals RDS accepts, in seconds.
const MONITORING_INTERVALS: &[u8] = &[0, 1, 5, 10, 15, 30, 60];

/// Longest S3 bucket name.
const MAX_BUCKET_NAME: usize = 63;

/// Finds the span of the value at `path` (keys, or indexes for lists),
/// falling back to the closest ancestor that exists.
pub fn locate(tree: &Node, path: &[&str]) -> Span {
    let mut node = tree;
    let mut span = tree.span;
    for seg in path {
        let next = match &node.value {
            Value::Map(entries) => entries.iter().find(|e| e.key == *seg).map(|e| &e.value),
            Value::Seq(items) => seg.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        };
        match next {
            Some(n) => {
                node = n;
                span = n.span;
            }
            None => break,
        }
    }
    span
}

/// Finds the span of the key at the end of `path`, or of the value if it has no key.
fn locate_key(tree: &Node, path: &[&str]) -> Span {
    let Some((last, parent)) = path.split_last() else {
        return tree.span;
    };
    let mut node = tree;
    for seg in parent {
        match &node.value {
            Value::Map(entries) => match entries.iter().find(|e| e.key == *seg) {
                Some(e) => node = &e.value,
                None => return locate(tree, path),
            },
            Value::Seq(items) => match seg.parse::<usize>().ok().and_then(|i| items.get(i)) {
                Some(n) => node = n,
                None => return locate(tree, path),
            },
            _ => return locate(tree, path),
        }
    }
    node.get(last)
        .map_or_else(|| locate(tree, path), |e| e.key_span)
}

struct Rules<'a> {
    tree: &'a Node,
    /// Dotted paths whose values were made up to get past schema problems.
    repaired: &'a [String],
    problems: Vec<Problem>,
}

impl Rules<'_> {
    /// Whether `path` is, or lies under, a repaired value.
    fn repaired(&self, path: &[&str]) -> bool {
        let dotted = path.join(".");
        self.repaired.iter().any(|r| {
            dotted == *r
                || dotted.starts_with(&format!("{r}."))
                || r.starts_with(&format!("{dotted}."))
        })
    }

    fn at(&mut self, path: &[&str], message: String, label: &str, help: impl Into<String>) {
        if self.repaired(path) {
            return;
        }
        let span = locate(self.tree, path);
        self.problems
            .push(Problem::new(span, message, label).with_help(help));
    }

    fn at_key(&mut self, path: &[&str], message: String, label: &str, help: impl Into<String>) {
        if self.repaired(path) {
            return;
        }
        let span = locate_key(self.tree, path);
        self.problems
            .push(Problem::new(span, message, label).with_help(help));
    }
}

/// Checks the cross-field rules of environment `env`.
pub fn check(env: &str, spec: &Spec, tree: &Node, repaired: &[String]) -> Vec<Problem> {
    let mut r = Rules {
        tree,
        repaired,
        problems: Vec::new(),
    };
    names(&mut r, env, spec);
    network(&mut r, spec);
    api(&mut r, spec);
    clients(&mut r, env, spec);
    functions(&mut r, spec);
    database(&mut r, spec);
    monitoring(&mut r, spec);
    rollout(&mut r, spec);
    prod_like(&mut r, spec);
    datasets(&mut r, spec);
    r.problems
}

fn names(r: &mut Rules, env: &str, spec: &Spec) {
    // The longest bucket name the data stack creates.
    let longest = format!("{}-{env}-logs-123456789012-{}", spec.project, spec.region);
    if longest.len() > MAX_BUCKET_NAME {
        r.at(
            &["project"],
            format!(
                "bucket names of `{env}` would be {} characters long, over S3's limit of {MAX_BUCKET_NAME}",
                longest.len()
            ),
            "too long with this environment's name and region",
            format!("shorten the project name by at least {} characters", longest.len() - MAX_BUCKET_NAME),
        );
    }
    for (key, value) in &spec.tags {
        if key.starts_with("aws:") {
            r.at_key(
                &["tags", key],
                format!("tag `{key}` uses the reserved prefix `aws:`"),
                "reserved prefix",
                "choose another tag name",
            );
        } else if key.is_empty() || key.len() > 128 || value.len() > 256 {
            r.at(
                &["tags", key],
                format!("tag `{key}` is too long"),
                "too long",
                "tag keys take 1 to 128 characters and values up to 256",
            );
        }
    }
}

fn network(r: &mut Rules, spec: &Spec) {
    let path = ["network", "cidr"];
    match spec.network.cidr.parse::<Ipv4Net>() {
        Err(_) => r.at(
            &path,
            format!(
                "`network.cidr` is not an IPv4 CIDR block: `{}`",
                spec.network.cidr
            ),
            "not a CIDR block",
            "write an address and prefix length, such as `10.20.0.0/16`",
        ),
        Ok(net) => {
            if net.network() != net.addr() {
                r.at(
                    &path,
                    format!("`network.cidr` has host bits set: `{net}`"),
                    "not the start of the block",
                    format!("did you mean `{}`?", net.trunc()),
                );
            } else if !(16..=24).contains(&net.prefix_len()) {
                r.at(
                    &path,
                    format!(
                        "`network.cidr` must have a prefix from /16 to /24, found /{}",
                        net.prefix_len()
                    ),
                    "prefix length out of range",
                    "a VPC takes /16 to /28, and the pipeline cuts it into eight subnets",
                );
            } else if !is_private(net.addr()) {
                r.at(
                    &path,
                    format!("`network.cidr` is not a private range: `{net}`"),
                    "public address range",
                    "use a block inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16",
                );
            }
        }
    }
    for (i, endpoint) in spec.network.endpoints.iter().enumerate() {
        if spec.network.endpoints[..i].contains(endpoint) {
            let index = i.to_string();
            r.at(
                &["network", "endpoints", &index],
                format!("endpoint `{}` is listed twice", endpoint.service()),
                "duplicate",
                "list each endpoint once",
            );
        }
    }
    for (i, endpoint) in spec.network.endpoints.iter().enumerate() {
        if let Some((_, why)) = UNUSED_ENDPOINTS.iter().find(|(e, _)| e == endpoint) {
            let index = i.to_string();
            r.at(
                &["network", "endpoints", &index],
                format!(
                    "nothing in the VPC calls endpoint `{}`: {why}",
                    endpoint.service()
                ),
                "unused endpoint",
                "remove it: an interface endpoint costs by the hour in every availability zone",
            );
        }
    }
    let missing: Vec<String> = REQUIRED_ENDPOINTS
        .iter()
        .filter(|(e, _)| !spec.network.endpoints.contains(e))
        .map(|(e, why)| format!("{} ({why})", e.service()))
        .collect();
    if !missing.is_empty() {
        r.at(
            &["network", "endpoints"],
            format!(
                "`network.endpoints` lacks endpoints the functions need: {}",
                missing.join(", ")
            ),
            "missing endpoints",
            "without a NAT gateway the functions reach AWS services only through these endpoints",
        );
    }
}

fn is_private(addr: Ipv4Addr) -> bool {
    addr.is_private()
}

fn api(r: &mut Rules, spec: &Spec) {
    if spec.api.max_inline_batch_kib > MAX_INLINE_BATCH_KIB {
        r.at(
            &["api", "max_inline_batch_kib"],
            format!(
                "`api.max_inline_batch_kib` must be at most {MAX_INLINE_BATCH_KIB}, found {}",
                spec.api.max_inline_batch_kib
            ),
            "over Lambda's request payload limit",
            "Lambda accepts at most 6 MB per request, including the API Gateway event around the body; larger batches go through uploads",
        );
    }
    for (i, origin) in spec.api.cors_origins.iter().enumerate() {
        if !is_origin(origin) {
            let index = i.to_string();
            r.at(
                &["api", "cors_origins", &index],
                format!("`{origin}` is not an origin"),
                "not an origin",
                "write a scheme and host without a path, such as `https://app.example.com`",
            );
        }
    }
}

/// The API's clients: only with `auth: cognito`, which needs one at least;
/// names Cognito takes as client names; scopes of the spec's datasets.
fn clients(r: &mut Rules, env: &str, spec: &Spec) {
    let cognito = spec.api.auth == AuthMode::Cognito;
    if cognito && spec.api.clients.is_empty() {
        r.at(
            &["api", "auth"],
            "`auth: cognito` needs the API's clients, with their scopes".into(),
            "no clients",
            "list them under `api.clients`, such as `clients: {ci: [events.write], dashboard: [events.read]}`",
        );
    }
    let domain = format!(
        "{}-{env}-{}",
        spec.project,
        spec.account.as_deref().unwrap_or("123456789012")
    );
    let reserved = ["aws", "amazon", "cognito"]
        .into_iter()
        .find(|w| domain.contains(w));
    if cognito && (domain.len() > 63 || reserved.is_some()) {
        let why = match reserved {
            Some(word) => format!("it may not contain `{word}`"),
            None => format!("it is {} characters, over 63", domain.len()),
        };
        r.at(
            &["api", "auth"],
            format!("the token endpoint's domain `{domain}` is not one Cognito takes: {why}"),
            "not a Cognito domain",
            "the domain is `<project>-<env>-<account>`: shorten the project or environment name, or rename it",
        );
    }
    if cognito && spec.account.is_none() {
        r.at(
            &["api", "auth"],
            "`auth: cognito` needs the environment's `account`: the token endpoint's domain is named by it".into(),
            "no account",
            "set `account: \"<the 12 digits of the AWS account>\"` at the top of the spec",
        );
    }
    if !cognito && spec.api.metering_keys {
        r.at(
            &["api", "metering_keys"],
            "`api.metering_keys` are keys beside the tokens of `auth: cognito`".into(),
            "not used",
            "set `auth: cognito`, or remove it (with `auth: api_key` the key is the credential itself)",
        );
    }
    if !cognito && !spec.api.clients.is_empty() {
        r.at_key(
            &["api", "clients"],
            "`api.clients` are the clients of `auth: cognito`".into(),
            "not used",
            "set `auth: cognito`, or remove the clients",
        );
    }
    for (name, scopes) in &spec.api.clients {
        let valid = (1..=40).contains(&name.len())
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid {
            r.at_key(
                &["api", "clients", name],
                format!("`{name}` cannot name a client"),
                "not a client name",
                "use 1 to 40 lower case letters, digits and `-`, starting with a letter",
            );
        }
        if scopes.is_empty() {
            r.at(
                &["api", "clients", name],
                format!("client `{name}` has no scope"),
                "no scope",
                "give it `<dataset>.read` or `<dataset>.write` scopes",
            );
        }
        for (i, scope) in scopes.iter().enumerate() {
            let index = i.to_string();
            let problem = match scope.parse::<pipeline_contract::Scope>() {
                Err(e) => e.to_string(),
                Ok(s) if !spec.datasets.contains_key(&s.dataset) => format!(
                    "no dataset `{}`; the datasets are: {}",
                    s.dataset,
                    spec.datasets.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
                Ok(_) => continue,
            };
            r.at(
                &["api", "clients", name, &index],
                format!("scope `{scope}`: {problem}"),
                "not a scope",
                "write `<dataset>.read` or `<dataset>.write`",
            );
        }
    }
}

fn is_origin(origin: &str) -> bool {
    let rest = origin.strip_prefix("https://").or_else(|| {
        origin
            .strip_prefix("http://localhost")
            .map(|r| if r.is_empty() { "localhost" } else { r })
    });
    let Some(rest) = rest else {
        return false;
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (rest, None),
    };
    let host_ok = host.is_empty() && origin.starts_with("http://localhost")
        || (!host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'));
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.parse::<u16>().is_ok());
    host_ok && port_ok
}

fn functions(r: &mut Rules, spec: &Spec) {
    for name in FunctionId::ALL.into_iter().filter(|f| f.serves_api()) {
        let f = spec.functions.get(name);
        if f.timeout_seconds > API_GATEWAY_TIMEOUT_SECONDS {
            r.at(
                &["functions", name.as_str(), "timeout_seconds"],
                format!(
                    "`functions.{name}.timeout_seconds` must be at most {API_GATEWAY_TIMEOUT_SECONDS}, found {}",
                    f.timeout_seconds
                ),
                "longer than API Gateway waits",
                format!("API Gateway ends a request after {API_GATEWAY_TIMEOUT_SECONDS} seconds, so `{name}` cannot usefully run longer"),
            );
        }
    }
    for (name, f) in spec.functions.all() {
        let Some(base) = &f.base_image else { continue };
        if f.package != Packaging::Image {
            r.at_key(
                &["functions", name.as_str(), "base_image"],
                format!(
                    "`functions.{name}.base_image` is set, but the function is packaged as a zip"
                ),
                "only images have a base",
                format!("set `functions.{name}.package: image`, or remove `base_image`"),
            );
        } else if let Err(e) = crate::reference::Reference::parse(base) {
            let help = format!(
                "{}; write it as `registry/repository:tag` or `registry/repository@sha256:<digest>`",
                e.reason
            );
            r.at(
                &["functions", name.as_str(), "base_image"],
                format!("`functions.{name}.base_image` is not an image reference: `{base}`"),
                "not an image reference",
                help,
            );
        }
    }
    let loader = spec.functions.loader.timeout_seconds;
    let visibility = spec.queue.visibility_timeout_seconds;
    if u64::from(visibility) < 6 * u64::from(loader) {
        r.at(
            &["queue", "visibility_timeout_seconds"],
            format!(
                "`queue.visibility_timeout_seconds` must be at least 6 times the loader's timeout ({}), found {visibility}",
                6 * loader
            ),
            "shorter than six loader timeouts",
            "a message must stay hidden while the loader retries it, or it is delivered again mid-load; AWS advises six times the function timeout",
        );
    }
    loader_concurrency(r, spec);
}

/// Invocations of the loader the deploy makes besides the queue's: its
/// health check and its migration (the reserved concurrency must leave room).
pub const LOADER_DEPLOY_INVOCATIONS: u32 = 2;

/// A reserved concurrency for the loader is shared by the queue's
/// invocations and the deploy's own: the queue must be held below it, or a
/// busy queue throttles the deploy (and AWS advises reserved concurrency at
/// least the event source's maximum concurrency).
fn loader_concurrency(r: &mut Rules, spec: &Spec) {
    let Some(reserved) = spec.functions.loader.reserved_concurrency else {
        return;
    };
    let needed = spec
        .queue
        .max_concurrency
        .map(|m| m + LOADER_DEPLOY_INVOCATIONS);
    match needed {
        Some(needed) if reserved >= needed => {}
        Some(needed) => r.at(
            &["functions", "loader", "reserved_concurrency"],
            format!(
                "`functions.loader.reserved_concurrency` must be at least `queue.max_concurrency` + {LOADER_DEPLOY_INVOCATIONS} ({needed}), found {reserved}"
            ),
            "the queue can take all of it",
            format!(
                "the queue's invocations stop at `queue.max_concurrency`; the deploy's own invocations of the loader need {LOADER_DEPLOY_INVOCATIONS} more, or a busy queue throttles them and the deploy fails"
            ),
        ),
        None => r.at(
            &["functions", "loader", "reserved_concurrency"],
            "`functions.loader.reserved_concurrency` is set, but `queue.max_concurrency` is not".to_string(),
            "the queue can take all of it",
            format!(
                "set `queue.max_concurrency` at most {}, so that the deploy's own invocations of the loader are not throttled",
                reserved.saturating_sub(LOADER_DEPLOY_INVOCATIONS)
            ),
        ),
    }
}

fn database(r: &mut Rules, spec: &Spec) {
    let db = &spec.database;
    let major: u32 = db.major_version().parse().unwrap_or(0);
    if !(13..=17).contains(&major) {
        r.at(
            &["database", "engine_version"],
            format!("Postgres {} is not supported", db.engine_version),
            "unsupported major version",
            "use a major version from 13 to 17, such as `17`",
        );
    }
    if let Some(max) = db.max_storage_gb
        && max <= db.storage_gb
    {
        r.at(
            &["database", "max_storage_gb"],
            format!(
                "`database.max_storage_gb` must be above `database.storage_gb` ({}), found {max}",
                db.storage_gb
            ),
            "not above the allocated storage",
            "raise it, or set it to null to turn storage autoscaling off",
        );
    }
    if !MONITORING_INTERVALS.contains(&db.enhanced_monitoring_seconds) {
        r.at(
            &["database", "enhanced_monitoring_seconds"],
            format!(
                "`database.enhanced_monitoring_seconds` must be one of 0, 1, 5, 10, 15, 30, 60, found {}",
                db.enhanced_monitoring_seconds
            ),
            "not an interval RDS offers",
            "0 turns enhanced monitoring off",
        );
    }
    let small = db.instance_class.ends_with(".micro") || db.instance_class.ends_with(".small");
    if db.performance_insights && small {
        r.at(
            &["database", "performance_insights"],
            format!(
                "Performance Insights is not available on `{}`",
                db.instance_class
            ),
            "not available on this class",
            "use a medium or larger instance class, or set `performance_insights: false`",
        );
    }
}

fn monitoring(r: &mut Rules, spec: &Spec) {
    let days = spec.monitoring.log_retention_days;
    if !LOG_RETENTION_DAYS.contains(&days) {
        let nearest = LOG_RETENTION_DAYS
            .iter()
            .min_by_key(|d| d.abs_diff(days))
            .copied()
            .unwrap_or(30);
        r.at(
            &["monitoring", "log_retention_days"],
            format!("CloudWatch Logs cannot keep logs for {days} days"),
            "not a retention CloudWatch Logs offers",
            format!(
                "the nearest allowed value is {nearest}; allowed: {}",
                LOG_RETENTION_DAYS
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
    for (i, email) in spec.monitoring.notify.iter().enumerate() {
        let ok = email.split_once('@').is_some_and(|(user, host)| {
            !user.is_empty() && host.contains('.') && !email.contains(char::is_whitespace)
        });
        if !ok {
            let index = i.to_string();
            r.at(
                &["monitoring", "notify", &index],
                format!("`{email}` is not an email address"),
                "not an email address",
                "write an address such as `oncall@example.com`",
            );
        }
    }
}

fn rollout(r: &mut Rules, spec: &Spec) {
    let ro = &spec.rollout;
    let strategy = ro.strategy.as_str();
    let need = |field: &str, present: bool, wanted: bool, r: &mut Rules| {
        if wanted && !present {
            r.at_key(
                &["rollout", "strategy"],
                format!("a {strategy} rollout needs `rollout.{field}`"),
                "set here",
                format!("add `{field}:` under `rollout`"),
            );
        } else if !wanted && present {
            r.at_key(
                &["rollout", field],
                format!("`rollout.{field}` has no effect with strategy `{strategy}`"),
                "ignored by this strategy",
                "remove it, or set it to null when a parent file sets it",
            );
        }
    };
    let (percent, bake, interval) = match ro.strategy {
        Strategy::AllAtOnce => (false, false, false),
        Strategy::Canary => (true, true, false),
        Strategy::Linear => (true, false, true),
    };
    need("percent", ro.percent.is_some(), percent, r);
    need("bake_minutes", ro.bake_minutes.is_some(), bake, r);
    need(
        "interval_minutes",
        ro.interval_minutes.is_some(),
        interval,
        r,
    );
    if ro.strategy != Strategy::AllAtOnce && ro.alarms.is_empty() && ro.external_alarms.is_empty() {
        r.at_key(
            &["rollout", "strategy"],
            format!("a {strategy} rollout needs gate alarms"),
            "no alarms gate this rollout",
            "list alarms under `rollout.alarms`, such as `[ingest-errors, loader-errors, query-errors, api-5xx]`",
        );
    }
    for (i, alarm) in ro.alarms.iter().enumerate() {
        let index = i.to_string();
        if ro.alarms[..i].contains(alarm) {
            r.at(
                &["rollout", "alarms", &index],
                "this alarm is listed twice".into(),
                "duplicate",
                "list each alarm once",
            );
        } else if *alarm == GateAlarm::ReplicaLag && spec.database.read_replicas == 0 {
            r.at(
                &["rollout", "alarms", &index],
                "`replica-lag` gates the rollout, but the database has no read replica".into(),
                "this alarm does not exist here",
                "remove it, or set `database.read_replicas` above 0",
            );
        }
    }
}

fn prod_like(r: &mut Rules, spec: &Spec) {
    let why = if spec.database.deletion_protection {
        "deletion protection is on"
    } else {
        "code takes traffic gradually"
    };
    let prod_like = spec.prod_like();
    let needs_single_az = prod_like && !spec.database.multi_az;
    if needs_single_az && !spec.waives(WaivedRule::SingleAz) {
        r.at(
            &["database", "multi_az"],
            format!("this environment is prod-like ({why}) but its database is not multi-AZ"),
            "single AZ",
            "set `multi_az: true`, or waive the rule with `waivers: [{rule: single-az, reason: \"...\"}]`",
        );
    }
    let needs_open = prod_like && spec.api.auth == AuthMode::None;
    if needs_open && !spec.waives(WaivedRule::OpenApi) {
        r.at(
            &["api", "auth"],
            format!("this environment is prod-like ({why}) but its API has no authentication"),
            "no authentication",
            "set `auth: api_key` or `auth: iam`, or waive the rule with `waivers: [{rule: open-api, reason: \"...\"}]`",
        );
    }
    let needs_waf = prod_like && spec.api.waf.is_none();
    if needs_waf && !spec.waives(WaivedRule::NoWaf) {
        r.at(
            &["api"],
            format!("this environment is prod-like ({why}) but its API has no web ACL"),
            "no waf",
            "set `waf: {rate_limit: 2000}` (requests per client address in 5 minutes), or waive the rule with `waivers: [{rule: no-waf, reason: \"...\"}]`",
        );
    }
    for (i, waiver) in spec.waivers.iter().enumerate() {
        let applies = match waiver.rule {
            WaivedRule::SingleAz => needs_single_az,
            WaivedRule::OpenApi => needs_open,
            WaivedRule::NoWaf => needs_waf,
        };
        if !applies {
            let index = i.to_string();
            r.at(
                &["waivers", &index, "rule"],
                "this waiver waives a rule the environment does not break".into(),
                "not needed",
                "remove the waiver so that it cannot hide a later change",
            );
        }
    }
}

fn datasets(r: &mut Rules, spec: &Spec) {
    for (name, dataset) in &spec.datasets {
        let valid = name.len() <= 63
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            r.at_key(
                &["datasets", name],
                format!("dataset name `{name}` cannot name a table"),
                "not a table name",
                "use lower case letters, digits and `_`, starting with a letter",
            );
        }
        for problem in dataset.problems() {
            let mut path: Vec<&str> = vec!["datasets", name];
            path.extend(problem.path.iter().map(String::as_str));
            let help = problem.help.clone().unwrap_or_default();
            r.at(
                &path,
                format!("dataset `{name}`: {}", problem.message),
                "here",
                help,
            );
        }
        for (i, column) in dataset.columns.iter().enumerate() {
            let Some(pipeline_dataset::Timezone::Named(zone)) = column
                .timezone
                .as_deref()
                .and_then(pipeline_dataset::Timezone::parse)
            else {
                continue;
            };
            if zone.parse::<chrono_tz::Tz>().is_err() {
                let index = i.to_string();
                let names = chrono_tz::TZ_VARIANTS.iter().map(|t| t.name());
                let help = match crate::diag::did_you_mean(&zone, names) {
                    Some(m) => format!("did you mean `{m}`?"),
                    None => "use a name from the IANA time zone database, such as `Europe/Paris`, or an offset such as `+01:00`".into(),
                };
                r.at(
                    &["datasets", name, "columns", &index, "timezone"],
                    format!(
                        "dataset `{name}`: column `{}`: `{zone}` is not a known time zone",
                        column.name
                    ),
                    "unknown time zone",
                    help,
                );
            }
        }
        for (i, column) in dataset.filterable.iter().enumerate() {
            if dataset
                .column(column)
                .is_some_and(|c| c.kind == pipeline_dataset::ColumnType::Jsonb)
            {
                let index = i.to_string();
                r.at(
                    &["datasets", name, "filterable", &index],
                    format!("jsonb column `{column}` cannot be filtered"),
                    "not filterable",
                    "filter on a scalar column instead",
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;
