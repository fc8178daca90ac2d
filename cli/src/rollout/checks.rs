//! What a new version must pass before it takes traffic: Active, and a
//! smoke invocation that answers 2xx.

use super::*;

/// The event a smoke invocation sends: to an API function, the API Gateway
/// event of `GET /v1/health`; to the loader, its `health` action, which
/// connects to the database as the loader does (IAM, through the proxy in
/// environments that have one) and pings it.
pub fn smoke_event(function: FunctionId) -> serde_json::Value {
    if !function.serves_api() {
        return serde_json::json!({"action": "health"});
    }
    serde_json::json!({
        "resource": "/v1/health",
        "path": "/v1/health",
        "httpMethod": "GET",
        "headers": {"User-Agent": "pipeline-smoke"},
        "multiValueHeaders": {"User-Agent": ["pipeline-smoke"]},
        "queryStringParameters": null,
        "multiValueQueryStringParameters": null,
        "pathParameters": null,
        "stageVariables": null,
        "requestContext": {
            "resourcePath": "/v1/health",
            "httpMethod": "GET",
            "path": "/live/v1/health",
            "stage": "live",
            "requestId": "pipeline-smoke",
            "identity": {"sourceIp": "127.0.0.1"}
        },
        "body": null,
        "isBase64Encoded": false
    })
}

/// What a pre-traffic invocation of a new version answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// Lambda's `FunctionError` (`Unhandled`), when the function failed.
    pub function_error: Option<String>,
    /// The function's answer.
    pub payload: String,
}

/// What went wrong in a pre-traffic invocation, if anything: an error the
/// function reported, or, from an API function, an answer other than 2xx.
/// An API function answers API Gateway's proxy events with a proxy response
/// whose `statusCode` is the HTTP status (API Gateway Developer Guide:
/// "Output format of a Lambda function for proxy integration").
pub fn invocation_problem(function: FunctionId, invocation: &Invocation) -> Option<String> {
    let payload = invocation.payload.as_str();
    if let Some(kind) = &invocation.function_error {
        return Some(format!("{kind}: {payload}"));
    }
    if !function.serves_api() {
        return None;
    }
    let answer: serde_json::Value = serde_json::from_str(payload).unwrap_or_default();
    let status = match &answer["statusCode"] {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    };
    let body = answer["body"]
        .as_str()
        .map_or_else(|| answer["body"].to_string(), str::to_string);
    let short = |text: &str| -> String {
        let mut cut: String = text.chars().take(300).collect();
        if cut.len() < text.len() {
            cut.push('…');
        }
        cut
    };
    match status {
        Some(200..=299) => None,
        Some(status) => Some(format!(
            "GET /v1/health answered {status}: {}",
            short(&body)
        )),
        None => Some(format!(
            "GET /v1/health answered no HTTP status (not an API Gateway proxy response): {}",
            short(payload)
        )),
    }
}

/// What went wrong in a smoke invocation ([`smoke_event`]): as
/// [`invocation_problem`], and the loader must answer `{"status": "ok"}`.
pub fn smoke_problem(function: FunctionId, invocation: &Invocation) -> Option<String> {
    if let Some(problem) = invocation_problem(function, invocation) {
        return Some(problem);
    }
    if function.serves_api() {
        return None;
    }
    let answer: serde_json::Value = serde_json::from_str(&invocation.payload).unwrap_or_default();
    (answer["status"] != "ok").then(|| {
        format!(
            "the health action answered {}, not {{\"status\": \"ok\"}}",
            invocation.payload
        )
    })
}

/// The loader's refusal of a migration that can lose data
/// (`MigrationRefused`): its message, naming the setting that allows it.
pub fn migration_refused(invocation: &Invocation) -> Option<String> {
    invocation.function_error.as_ref()?;
    let answer: serde_json::Value = serde_json::from_str(&invocation.payload).ok()?;
    (answer["errorType"] == "MigrationRefused").then(|| {
        answer["errorMessage"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    })
}

/// A published version's state, as GetFunctionConfiguration reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionState {
    /// `Pending`, `Active`, `Inactive` or `Failed`.
    pub state: Option<String>,
    pub state_reason: Option<String>,
    pub state_reason_code: Option<String>,
    /// `InProgress`, `Successful` or `Failed`.
    pub last_update_status: Option<String>,
    pub last_update_status_reason: Option<String>,
}

/// Reads the state of published versions.
#[allow(async_fn_in_trait)]
pub trait Versions {
    async fn state(&self, function: &str, version: &str) -> Result<VersionState, CallError>;
}

/// Whether a version can be invoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Not yet: what it is doing.
    Waiting(String),
    /// Never: why.
    Failed(String),
}

/// A version is ready when Active with no update in progress; Failed (or a
/// failed update) never gets ready; Pending (or an update in progress) may.
/// As the SDK's PublishedVersionActive and FunctionActiveV2 waiters decide
/// ("Lambda function states": only an Active function can be invoked).
pub fn readiness(s: &VersionState) -> Readiness {
    let reason = |reason: &Option<String>, code: &Option<String>| match (reason, code) {
        (Some(r), Some(c)) => format!("{r} ({c})"),
        (Some(r), None) => r.clone(),
        (None, Some(c)) => c.clone(),
        (None, None) => "no reason given".into(),
    };
    match (s.state.as_deref(), s.last_update_status.as_deref()) {
        (Some("Failed"), _) => Readiness::Failed(format!(
            "its state is Failed: {}",
            reason(&s.state_reason, &s.state_reason_code)
        )),
        (_, Some("Failed")) => Readiness::Failed(format!(
            "its last update failed: {}",
            reason(&s.last_update_status_reason, &None)
        )),
        (Some("Active"), Some("InProgress")) => {
            Readiness::Waiting("an update is in progress".into())
        }
        (Some("Active"), _) => Readiness::Ready,
        (state, _) => Readiness::Waiting(format!(
            "its state is {}: {}",
            state.unwrap_or("unknown"),
            reason(&s.state_reason, &s.state_reason_code)
        )),
    }
}

/// How long a new version may take to become Active: as long as the SDK's
/// PublishedVersionActive waiter waits (312 polls, 5 s apart).
pub const ACTIVE_TIMEOUT: Duration = Duration::from_secs(312 * 5);

/// Waits until a published version is Active, polling its state every
/// `poll`, for at most `timeout`.
pub async fn wait_active(
    versions: &impl Versions,
    clock: &impl Clock,
    function: &str,
    version: &str,
    poll: Duration,
    timeout: Duration,
) -> Result<(), CallError> {
    let deadline = clock.now() + chrono::Duration::from_std(timeout).unwrap_or_default();
    loop {
        let state = versions.state(function, version).await?;
        match readiness(&state) {
            Readiness::Ready => return Ok(()),
            Readiness::Failed(why) => {
                return Err(CallError(format!(
                    "version {version} of {function} cannot be invoked: {why}"
                )));
            }
            Readiness::Waiting(what) if clock.now() >= deadline => {
                return Err(CallError(format!(
                    "version {version} of {function} is not Active after {} s: {what}",
                    timeout.as_secs()
                )));
            }
            Readiness::Waiting(_) => clock.sleep(poll).await,
        }
    }
}
