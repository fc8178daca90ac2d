//! The rollout's AWS side: Lambda versions and aliases, the gate alarms
//! (CloudWatch's DescribeAlarms), and the state object in the assets bucket.

use std::collections::BTreeMap;

use aws_credential_types::provider::ProvideCredentials;

use super::{Alarm, Aliases, CallError, Gates, Invocation, State, Store, VersionState, Versions};

fn call_error(what: &str, e: impl std::error::Error) -> CallError {
    CallError(format!("{what}: {}", crate::chain::message_chain(&e)))
}

/// The alias that serves traffic.
pub const ALIAS: &str = "live";

/// Lambda through the SDK.
pub struct Lambda {
    pub client: aws_sdk_lambda::Client,
}

/// What a published version freezes of a function (the Lambda guide's
/// "Lambda function versions": its code, runtime and architecture, and all
/// its settings, environment variables included), so that `$LATEST` and the
/// newest version with the same snapshot need no new version, and any other
/// change gets one. Reserved concurrency belongs to the function, not to a
/// version; what differs between `$LATEST` and a version by nature (ARN,
/// version, revision, timestamps, SnapStart's optimisation status, the
/// description PublishVersion sets) is left out.
fn fingerprint(
    c: &aws_sdk_lambda::operation::get_function_configuration::GetFunctionConfigurationOutput,
) -> String {
    let env: BTreeMap<&String, &String> = c
        .environment()
        .and_then(|e| e.variables())
        .map(|v| v.iter().collect())
        .unwrap_or_default();
    let sorted = |items: &[String]| {
        let mut items = items.to_vec();
        items.sort();
        items
    };
    let vpc = c.vpc_config().map(|v| {
        serde_json::json!({
            "subnets": sorted(v.subnet_ids()),
            "security_groups": sorted(v.security_group_ids()),
            "ipv6": v.ipv6_allowed_for_dual_stack(),
        })
    });
    let logging = c.logging_config().map(|l| {
        serde_json::json!({
            "group": l.log_group(),
            "format": l.log_format().map(|f| f.as_str()),
            "application_level": l.application_log_level().map(|f| f.as_str()),
            "system_level": l.system_log_level().map(|f| f.as_str()),
        })
    });
    let image = c
        .image_config_response()
        .and_then(|i| i.image_config())
        .map(|i| {
            serde_json::json!({
                "entry_point": i.entry_point(),
                "command": i.command(),
                "working_directory": i.working_directory(),
            })
        });
    let file_systems: Vec<_> = c
        .file_system_configs()
        .iter()
        .map(|f| (f.arn(), f.local_mount_path()))
        .collect();
    serde_json::json!({
        "code": c.code_sha256(),
        "package": c.package_type().map(|p| p.as_str()),
        "memory": c.memory_size(),
        "timeout": c.timeout(),
        "ephemeral_storage": c.ephemeral_storage().map(|e| e.size()),
        "role": c.role(),
        "handler": c.handler(),
        "runtime": c.runtime().map(|r| r.as_str()),
        "architectures": c.architectures().iter().map(|a| a.as_str()).collect::<Vec<_>>(),
        "environment": env,
        "kms_key": c.kms_key_arn(),
        "vpc": vpc,
        "tracing": c.tracing_config().and_then(|t| t.mode()).map(|m| m.as_str()),
        "logging": logging,
        "layers": c.layers().iter().map(|l| l.arn()).collect::<Vec<_>>(),
        "image": image,
        "dead_letter": c.dead_letter_config().and_then(|d| d.target_arn()),
        "file_systems": file_systems,
        "snap_start": c.snap_start().and_then(|s| s.apply_on()).map(|a| a.as_str()),
    })
    .to_string()
}

/// Where a function's `live` alias sends its traffic.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub version: String,
    /// Versions taking a share of the traffic besides `version`.
    pub weights: BTreeMap<String, f64>,
}

impl Lambda {
    /// The `live` alias's route, or `None` when the function has no such
    /// alias yet.
    pub async fn live_route(&self, function: &str) -> Result<Option<Route>, CallError> {
        match self
            .client
            .get_alias()
            .function_name(function)
            .name(ALIAS)
            .send()
            .await
        {
            Ok(alias) => Ok(Some(Route {
                version: alias.function_version().unwrap_or("$LATEST").to_string(),
                weights: alias
                    .routing_config()
                    .and_then(|r| r.additional_version_weights())
                    .map(|w| w.iter().map(|(k, v)| (k.clone(), *v)).collect())
                    .unwrap_or_default(),
            })),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(call_error(
                &format!("cannot read the alias of {function}"),
                e,
            )),
        }
    }

    /// The version the alias serves now (`$LATEST` when there is no alias).
    pub async fn serving(&self, function: &str) -> Result<String, CallError> {
        Ok(self
            .live_route(function)
            .await?
            .map_or_else(|| "$LATEST".to_string(), |r| r.version))
    }

    /// A version of the function's current code and configuration: the
    /// newest published one when it matches them, else a new one. An
    /// unchanged function so never gets a new version.
    pub async fn version(&self, function: &str) -> Result<(String, bool), CallError> {
        let config = |qualifier: String| {
            self.client
                .get_function_configuration()
                .function_name(function)
                .qualifier(qualifier)
                .send()
        };
        let latest = config("$LATEST".into())
            .await
            .map_err(|e| call_error(&format!("cannot read {function}"), e))?;
        let mut newest: Option<u64> = None;
        let mut marker: Option<String> = None;
        loop {
            let page = self
                .client
                .list_versions_by_function()
                .function_name(function)
                .set_marker(marker.take())
                .send()
                .await
                .map_err(|e| call_error(&format!("cannot list the versions of {function}"), e))?;
            for v in page.versions() {
                if let Some(n) = v.version().and_then(|v| v.parse::<u64>().ok()) {
                    newest = newest.max(Some(n));
                }
            }
            marker = page.next_marker().map(str::to_string);
            if marker.is_none() {
                break;
            }
        }
        if let Some(n) = newest {
            let published = config(n.to_string())
                .await
                .map_err(|e| call_error(&format!("cannot read version {n} of {function}"), e))?;
            if fingerprint(&published) == fingerprint(&latest) {
                return Ok((n.to_string(), false));
            }
        }
        let published = self
            .client
            .publish_version()
            .function_name(function)
            .set_code_sha256(latest.code_sha256().map(str::to_string))
            .description("published by pipeline")
            .send()
            .await
            .map_err(|e| call_error(&format!("cannot publish a version of {function}"), e))?;
        let version = published
            .version()
            .ok_or_else(|| CallError(format!("Lambda published no version of {function}")))?;
        Ok((version.to_string(), true))
    }

    /// Invokes a version directly: the function's error, if it reported
    /// one (Lambda's Invoke: `FunctionError`), and its answer.
    pub async fn invoke(
        &self,
        function: &str,
        version: &str,
        payload: &serde_json::Value,
    ) -> Result<Invocation, CallError> {
        let out = self
            .client
            .invoke()
            .function_name(function)
            .qualifier(version)
            .payload(aws_sdk_lambda::primitives::Blob::new(payload.to_string()))
            .send()
            .await
            .map_err(|e| {
                call_error(&format!("cannot invoke version {version} of {function}"), e)
            })?;
        Ok(Invocation {
            function_error: out.function_error().map(str::to_string),
            payload: out
                .payload()
                .map(|b| String::from_utf8_lossy(b.as_ref()).into_owned())
                .unwrap_or_default(),
        })
    }
}

impl Versions for Lambda {
    async fn state(&self, function: &str, version: &str) -> Result<VersionState, CallError> {
        let c = self
            .client
            .get_function_configuration()
            .function_name(function)
            .qualifier(version)
            .send()
            .await
            .map_err(|e| call_error(&format!("cannot read version {version} of {function}"), e))?;
        Ok(VersionState {
            state: c.state().map(|s| s.as_str().to_string()),
            state_reason: c.state_reason().map(str::to_string),
            state_reason_code: c.state_reason_code().map(|s| s.as_str().to_string()),
            last_update_status: c.last_update_status().map(|s| s.as_str().to_string()),
            last_update_status_reason: c.last_update_status_reason().map(str::to_string),
        })
    }
}

impl Aliases for Lambda {
    async fn route(
        &self,
        function: &str,
        version: &str,
        canary: Option<(&str, f64)>,
    ) -> Result<(), CallError> {
        let routing = aws_sdk_lambda::types::AliasRoutingConfiguration::builder()
            .set_additional_version_weights(
                canary.map(|(v, w)| std::collections::HashMap::from([(v.to_string(), w)])),
            )
            .build();
        let updated = self
            .client
            .update_alias()
            .function_name(function)
            .name(ALIAS)
            .function_version(version)
            .routing_config(routing.clone())
            .send()
            .await;
        match updated {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                self.client
                    .create_alias()
                    .function_name(function)
                    .name(ALIAS)
                    .function_version(version)
                    .routing_config(routing)
                    .send()
                    .await
                    .map_err(|e| {
                        call_error(&format!("cannot create the alias of {function}"), e)
                    })?;
                Ok(())
            }
            Err(e) => Err(call_error(
                &format!("cannot route the alias of {function}"),
                e,
            )),
        }
    }
}

/// The state object `rollouts/<env>.json` in the assets bucket.
pub struct S3Store {
    pub client: aws_sdk_s3::Client,
    pub bucket: String,
}

fn key(environment: &str) -> String {
    format!("rollouts/{environment}.json")
}

impl Store for S3Store {
    async fn load(&self, environment: &str) -> Result<Option<State>, CallError> {
        let got = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key(environment))
            .send()
            .await;
        let out = match got {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(call_error("cannot read the rollout's state", e)),
        };
        let tag = out.e_tag().map(str::to_string);
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| call_error("cannot read the rollout's state", e))?
            .into_bytes();
        let mut state: State = serde_json::from_slice(&bytes)
            .map_err(|e| CallError(format!("the rollout's state is not valid: {e}")))?;
        state.tag = tag;
        Ok(Some(state))
    }

    /// A conditional PutObject: `If-Match` the tag read, or `If-None-Match:
    /// *` for a first record. S3 answers 412 when the condition fails, and
    /// 409 when a conflicting write is under way (retry after reading).
    async fn save(&self, state: &mut State) -> Result<bool, CallError> {
        let body = serde_json::to_vec_pretty(state).unwrap_or_default();
        let put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key(&state.environment))
            .content_type("application/json")
            .body(body.into());
        let put = match &state.tag {
            Some(tag) => put.if_match(tag),
            None => put.if_none_match("*"),
        };
        match put.send().await {
            Ok(out) => {
                state.tag = out.e_tag().map(str::to_string);
                Ok(true)
            }
            Err(e)
                if e.raw_response()
                    .is_some_and(|r| matches!(r.status().as_u16(), 409 | 412)) =>
            {
                Ok(false)
            }
            Err(e) => Err(call_error("cannot save the rollout's state", e)),
        }
    }
}

/// CloudWatch's DescribeAlarms through its query API, signed with SigV4
/// (served by CloudWatch and by emulators alike).
pub struct CloudWatch {
    pub http: reqwest::Client,
    pub endpoint: String,
    pub region: String,
    pub credentials: Option<aws_credential_types::provider::SharedCredentialsProvider>,
}

impl CloudWatch {
    pub fn new(config: &aws_config::SdkConfig) -> CloudWatch {
        let region = config.region().map(|r| r.to_string()).unwrap_or_default();
        CloudWatch {
            http: crate::http::client(),
            // As the SDK's clients find theirs: the service's own variable,
            // then the configuration's endpoint (AWS_ENDPOINT_URL included).
            endpoint: std::env::var("AWS_ENDPOINT_URL_CLOUDWATCH")
                .ok()
                .or_else(|| config.endpoint_url().map(str::to_string))
                .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
                .unwrap_or_else(|| format!("https://monitoring.{region}.amazonaws.com")),
            region,
            credentials: config.credentials_provider(),
        }
    }

    async fn signed(&self, body: String) -> Result<reqwest::Request, CallError> {
        use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
        let credentials = self
            .credentials
            .as_ref()
            .ok_or_else(|| CallError("no AWS credentials".into()))?
            .provide_credentials()
            .await
            .map_err(|e| call_error("no AWS credentials", e))?;
        let identity = credentials.into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("monitoring")
            .time(std::time::SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| CallError(e.to_string()))?
            .into();
        let url = format!("{}/", self.endpoint.trim_end_matches('/'));
        let content_type = "application/x-www-form-urlencoded; charset=utf-8";
        let signable = SignableRequest::new(
            "POST",
            url.as_str(),
            std::iter::once(("content-type", content_type)),
            SignableBody::Bytes(body.as_bytes()),
        )
        .map_err(|e| CallError(e.to_string()))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| CallError(e.to_string()))?
            .into_parts();
        let mut request = http::Request::builder()
            .method("POST")
            .uri(url.as_str())
            .header("content-type", content_type)
            .body(body)
            .map_err(|e| CallError(e.to_string()))?;
        instructions.apply_to_request_http1x(&mut request);
        reqwest::Request::try_from(request).map_err(|e| CallError(e.to_string()))
    }
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&#xD;", "\r")
        .replace("&#xA;", "\n")
        .replace("&amp;", "&")
}

/// One page of a DescribeAlarms answer.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AlarmsPage {
    pub alarms: Vec<Alarm>,
    pub next_token: Option<String>,
}

/// Reads a DescribeAlarms answer (query protocol): the `member`s of
/// `MetricAlarms` and `CompositeAlarms` (name, state, reason) and the
/// `NextToken`. Elements are followed by their nesting, so the members of
/// an alarm's own lists (dimensions, actions, metrics) are not taken for
/// alarms.
pub fn parse_alarms(xml: &str) -> AlarmsPage {
    let mut page = AlarmsPage::default();
    let mut path: Vec<&str> = Vec::new();
    let mut current: Option<Alarm> = None;
    let mut rest = xml;
    while let Some(open) = rest.find('<') {
        let text = &rest[..open];
        let Some(close) = rest[open..].find('>') else {
            break;
        };
        let tag = &rest[open + 1..open + close];
        rest = &rest[open + close + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            let field = path.pop().unwrap_or_default();
            let depth = path.len();
            let parent = |up: usize| depth.checked_sub(up).and_then(|i| path.get(i)).copied();
            let in_alarm = matches!(parent(1), Some("member"))
                && matches!(parent(2), Some("MetricAlarms" | "CompositeAlarms"))
                && parent(3) == Some("DescribeAlarmsResult");
            if in_alarm && let Some(alarm) = current.as_mut() {
                match field {
                    "AlarmName" => alarm.name = unescape(text),
                    "StateValue" => alarm.state = unescape(text),
                    "StateReason" => alarm.reason = unescape(text),
                    _ => {}
                }
            } else if name == "member"
                && matches!(parent(1), Some("MetricAlarms" | "CompositeAlarms"))
                && parent(2) == Some("DescribeAlarmsResult")
            {
                page.alarms.extend(current.take());
            } else if name == "NextToken" && parent(1) == Some("DescribeAlarmsResult") {
                let token = unescape(text.trim());
                page.next_token = (!token.is_empty()).then_some(token);
            }
            continue;
        }
        let self_closing = tag.ends_with('/');
        let name = tag
            .trim_end_matches('/')
            .split_whitespace()
            .next()
            .unwrap_or_default();
        if self_closing {
            continue;
        }
        path.push(name);
        let depth = path.len();
        if name == "member"
            && depth >= 3
            && matches!(path[depth - 2], "MetricAlarms" | "CompositeAlarms")
            && path[depth - 3] == "DescribeAlarmsResult"
        {
            current = Some(Alarm {
                name: String::new(),
                state: String::new(),
                reason: String::new(),
            });
        }
    }
    page
}

/// Attempts at one DescribeAlarms call; between two, a wait of up to
/// `RETRY_BASE` × 2^attempt (at most `RETRY_CAP`), chosen at random ("full
/// jitter"), as the SDKs' standard retry mode backs off ("Retry behavior",
/// AWS SDKs and Tools Reference Guide).
const ATTEMPTS: u32 = 5;
const RETRY_BASE: std::time::Duration = std::time::Duration::from_millis(250);
const RETRY_CAP: std::time::Duration = std::time::Duration::from_secs(20);

/// Whether an answer is worth another try: throttling (CloudWatch answers
/// 400 with code `Throttling`, "Rate exceeded", in the query protocol's
/// error document; AWS re:Post: "400 ThrottlingException" for CloudWatch
/// API calls) or a transient server error (500, 502, 503, 504).
pub fn retryable(status: u16, body: &str) -> bool {
    let code = error_code(body);
    matches!(status, 429 | 500 | 502 | 503 | 504)
        || matches!(
            code.as_deref(),
            Some(
                "Throttling"
                    | "ThrottlingException"
                    | "ThrottledException"
                    | "RequestThrottledException"
                    | "TooManyRequestsException"
                    | "RequestLimitExceeded"
            )
        )
}

fn error_code(body: &str) -> Option<String> {
    let start = body.find("<Code>")? + "<Code>".len();
    let end = body[start..].find("</Code>")? + start;
    Some(body[start..end].trim().to_string())
}

fn error_message(body: &str) -> &str {
    body.find("<Message>")
        .map(|s| s + "<Message>".len())
        .and_then(|s| body[s..].find("</Message>").map(|e| &body[s..s + e]))
        .unwrap_or(body)
}

/// A random wait before attempt `attempt` + 1 (attempts count from 0).
fn backoff(attempt: u32) -> std::time::Duration {
    use std::hash::{BuildHasher, Hasher};
    let ceiling = RETRY_BASE
        .saturating_mul(2u32.saturating_pow(attempt))
        .min(RETRY_CAP);
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    ceiling.mul_f64((random % 10_000) as f64 / 10_000.0)
}

impl CloudWatch {
    /// One DescribeAlarms call, tried again on throttling and transient
    /// errors; the answer's text.
    /// One query-API call, retried with backoff when throttled or failing
    /// on the server's side: the answer's body.
    async fn query(&self, action: &str, form: String) -> Result<String, CallError> {
        let mut attempt = 0;
        loop {
            let request = self.signed(form.clone()).await?;
            let answer = match self.http.execute(request).await {
                Ok(response) => {
                    let status = response.status();
                    response.text().await.map(|text| (status, text))
                }
                Err(e) => Err(e),
            };
            let failure = match answer {
                Ok((status, text)) if status.is_success() => return Ok(text),
                Ok((status, text)) if retryable(status.as_u16(), &text) => CallError(format!(
                    "CloudWatch answered {status} to {action}: {}",
                    error_message(&text)
                )),
                Ok((status, text)) => {
                    return Err(CallError(format!(
                        "CloudWatch answered {status} to {action}: {}",
                        error_message(&text)
                    )));
                }
                Err(e) if e.is_connect() || e.is_timeout() || e.is_request() => {
                    call_error(&format!("cannot call CloudWatch's {action}"), e)
                }
                Err(e) => return Err(call_error(&format!("cannot call CloudWatch's {action}"), e)),
            };
            attempt += 1;
            if attempt >= ATTEMPTS {
                return Err(CallError(format!(
                    "{} (after {ATTEMPTS} attempts)",
                    failure.0
                )));
            }
            tokio::time::sleep(backoff(attempt)).await;
        }
    }
}

impl Gates for CloudWatch {
    async fn describe(&self, names: &[String]) -> Result<Vec<Alarm>, CallError> {
        let mut alarms = Vec::new();
        // Names go 100 to a call, as CloudWatch's alarm-name lists take
        // them (API Reference: EnableAlarmActions, AlarmNames). Without
        // AlarmTypes, DescribeAlarms answers metric alarms only (SDK for
        // Kotlin API reference: DescribeAlarmsRequest.alarmTypes), and it
        // answers a page at a time (DescribeAlarmsOutput: NextToken).
        for chunk in names.chunks(100) {
            let mut token: Option<String> = None;
            loop {
                let mut form = form_urlencoded::Serializer::new(String::new());
                form.append_pair("Action", "DescribeAlarms")
                    .append_pair("Version", "2010-08-01")
                    .append_pair("AlarmTypes.member.1", "CompositeAlarm")
                    .append_pair("AlarmTypes.member.2", "MetricAlarm");
                for (i, name) in chunk.iter().enumerate() {
                    form.append_pair(&format!("AlarmNames.member.{}", i + 1), name);
                }
                if let Some(t) = &token {
                    form.append_pair("NextToken", t);
                }
                let page = parse_alarms(&self.query("DescribeAlarms", form.finish()).await?);
                alarms.extend(page.alarms);
                match page.next_token {
                    Some(next) if Some(&next) != token.as_ref() => token = Some(next),
                    _ => break,
                }
            }
        }
        Ok(alarms)
    }

    async fn reset(&self, names: &[String], reason: &str) -> Result<(), CallError> {
        for name in names {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("Action", "SetAlarmState")
                .append_pair("Version", "2010-08-01")
                .append_pair("AlarmName", name)
                .append_pair("StateValue", "INSUFFICIENT_DATA")
                .append_pair("StateReason", reason);
            self.query("SetAlarmState", form.finish()).await?;
        }
        Ok(())
    }

    async fn invocations(
        &self,
        name: &str,
        version: &str,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, CallError> {
        let alias = format!("{name}:{}", crate::synth::context::STAGE);
        let now = chrono::Utc::now();
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("Action", "GetMetricStatistics")
            .append_pair("Version", "2010-08-01")
            .append_pair("Namespace", "AWS/Lambda")
            .append_pair("MetricName", "Invocations")
            .append_pair(
                "StartTime",
                &since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            )
            .append_pair(
                "EndTime",
                &now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            )
            .append_pair("Period", "60")
            .append_pair("Statistics.member.1", "Sum");
        for (i, (dimension, value)) in [
            ("FunctionName", name),
            ("Resource", alias.as_str()),
            ("ExecutedVersion", version),
        ]
        .iter()
        .enumerate()
        {
            form.append_pair(&format!("Dimensions.member.{}.Name", i + 1), dimension)
                .append_pair(&format!("Dimensions.member.{}.Value", i + 1), value);
        }
        let answer = self.query("GetMetricStatistics", form.finish()).await?;
        Ok(parse_sums(&answer).round() as u64)
    }
}

/// The sum of the `Sum` values of a GetMetricStatistics answer's datapoints.
pub fn parse_sums(xml: &str) -> f64 {
    xml.split("<Sum>")
        .skip(1)
        .filter_map(|part| part.split("</Sum>").next()?.trim().parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests;
