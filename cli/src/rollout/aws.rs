//! The rollout's AWS side: Lambda versions and aliases, the gate alarms
//! (CloudWatch's DescribeAlarms), and the state object in the assets bucket.

use std::collections::BTreeMap;

use aws_credential_types::provider::ProvideCredentials;

use super::{Aliases, CallError, Firing, Gates, State, Store};

fn call_error(what: &str, e: impl std::error::Error) -> CallError {
    CallError(format!("{what}: {}", crate::aws::aws_smithy_message(&e)))
}

/// The alias that serves traffic.
pub const ALIAS: &str = "live";

/// Lambda through the SDK.
pub struct Lambda {
    pub client: aws_sdk_lambda::Client,
}

/// What makes a version: its code and the configuration it runs with.
fn fingerprint(
    c: &aws_sdk_lambda::operation::get_function_configuration::GetFunctionConfigurationOutput,
) -> String {
    let env: BTreeMap<&String, &String> = c
        .environment()
        .and_then(|e| e.variables())
        .map(|v| v.iter().collect())
        .unwrap_or_default();
    serde_json::json!({
        "code": c.code_sha256(),
        "memory": c.memory_size(),
        "timeout": c.timeout(),
        "role": c.role(),
        "handler": c.handler(),
        "runtime": c.runtime().map(|r| r.as_str()),
        "architectures": c.architectures().iter().map(|a| a.as_str()).collect::<Vec<_>>(),
        "environment": env,
    })
    .to_string()
}

impl Lambda {
    /// The version the alias serves now (`$LATEST` when there is no alias).
    pub async fn serving(&self, function: &str) -> Result<String, CallError> {
        match self
            .client
            .get_alias()
            .function_name(function)
            .name(ALIAS)
            .send()
            .await
        {
            Ok(a) => Ok(a.function_version().unwrap_or("$LATEST").to_string()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                Ok("$LATEST".into())
            }
            Err(e) => Err(call_error(
                &format!("cannot read the alias of {function}"),
                e,
            )),
        }
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

    /// Invokes a version directly; what went wrong, if anything: an error
    /// the function reported, or an HTTP answer of status 500 or more.
    pub async fn invoke(
        &self,
        function: &str,
        version: &str,
        payload: &serde_json::Value,
    ) -> Result<Option<String>, CallError> {
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
        let body = out
            .payload()
            .map(|b| String::from_utf8_lossy(b.as_ref()).into_owned())
            .unwrap_or_default();
        Ok(out.function_error().map(|kind| format!("{kind}: {body}")))
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
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| call_error("cannot read the rollout's state", e))?
            .into_bytes();
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| CallError(format!("the rollout's state is not valid: {e}")))
    }

    async fn save(&self, state: &State) -> Result<(), CallError> {
        let body = serde_json::to_vec_pretty(state).unwrap_or_default();
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key(&state.environment))
            .content_type("application/json")
            .body(body.into())
            .send()
            .await
            .map_err(|e| call_error("cannot save the rollout's state", e))?;
        Ok(())
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
            http: reqwest::Client::new(),
            endpoint: std::env::var("AWS_ENDPOINT_URL_CLOUDWATCH")
                .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
                .unwrap_or_else(|_| format!("https://monitoring.{region}.amazonaws.com")),
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

/// The text of `<tag>…</tag>` at the start of `xml`'s first such element.
fn element<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(&xml[start..end])
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// The alarms of a DescribeAlarms answer: name, state and reason.
pub fn parse_alarms(xml: &str) -> Vec<(String, String, String)> {
    xml.split("<AlarmName>")
        .skip(1)
        .filter_map(|part| {
            let name = &part[..part.find("</AlarmName>")?];
            Some((
                unescape(name),
                element(part, "StateValue").unwrap_or("").to_string(),
                unescape(element(part, "StateReason").unwrap_or("")),
            ))
        })
        .collect()
}

impl Gates for CloudWatch {
    async fn firing(&self, names: &[String]) -> Result<Vec<Firing>, CallError> {
        let mut firing = Vec::new();
        for chunk in names.chunks(100) {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("Action", "DescribeAlarms")
                .append_pair("Version", "2010-08-01");
            for (i, name) in chunk.iter().enumerate() {
                form.append_pair(&format!("AlarmNames.member.{}", i + 1), name);
            }
            let request = self.signed(form.finish()).await?;
            let response = self
                .http
                .execute(request)
                .await
                .map_err(|e| call_error("cannot read the gate alarms", e))?;
            let status = response.status();
            let text = response
                .text()
                .await
                .map_err(|e| call_error("cannot read the gate alarms", e))?;
            if !status.is_success() {
                return Err(CallError(format!(
                    "CloudWatch answered {status} to DescribeAlarms: {}",
                    element(&text, "Message").unwrap_or(&text)
                )));
            }
            firing.extend(
                parse_alarms(&text)
                    .into_iter()
                    .filter(|(_, state, _)| state == "ALARM")
                    .map(|(name, _, reason)| Firing { name, reason }),
            );
        }
        Ok(firing)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn describe_alarms_answers_are_read() {
        let xml = r#"<DescribeAlarmsResponse><DescribeAlarmsResult><MetricAlarms>
<member><AlarmName>p-uat-ingest-errors</AlarmName><Dimensions><member><Name>FunctionName</Name></member></Dimensions>
<StateValue>ALARM</StateValue><StateReason>Threshold Crossed: 2 &gt; 1</StateReason></member>
<member><AlarmName>p-uat-api-5xx</AlarmName><StateValue>OK</StateValue><StateReason>fine</StateReason></member>
</MetricAlarms></DescribeAlarmsResult></DescribeAlarmsResponse>"#;
        assert_eq!(
            super::parse_alarms(xml),
            [
                (
                    "p-uat-ingest-errors".into(),
                    "ALARM".into(),
                    "Threshold Crossed: 2 > 1".into()
                ),
                ("p-uat-api-5xx".into(), "OK".into(), "fine".into()),
            ]
        );
    }
}
