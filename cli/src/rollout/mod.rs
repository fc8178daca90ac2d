//! Alias-based rollouts: each function serves through its `live` alias; a
//! new version takes traffic step by step through the alias's routing
//! weights, while the gate alarms are read; an alarm sends all traffic back.
//! The rollout's state is kept (in the assets bucket) after every step, so a
//! rollout whose process died can be shown, promoted or aborted.
//!
//! Everything talks to AWS through small traits: Lambda aliases
//! ([`Aliases`]), the gate alarms ([`Gates`]), the state ([`Store`]) and time
//! ([`Clock`]), so that every path is tested with fakes.

pub mod aws;

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::spec::model::{FunctionId, Rollout, Spec, Strategy};
use crate::synth::context::ALL_VERSIONS;

/// An error of a rollout's AWS calls.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CallError(pub String);

/// One step: the new versions' share of the traffic, then how long it runs
/// under the gates before the next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub percent: u8,
    pub bake_seconds: u64,
}

/// The steps of a strategy; the last one always gives the new versions all
/// the traffic.
pub fn steps(strategy: Strategy, spec: &Rollout) -> Vec<Step> {
    let percent = spec.percent.unwrap_or(10).clamp(1, 99);
    match strategy {
        Strategy::AllAtOnce => vec![],
        Strategy::Canary => vec![Step {
            percent,
            bake_seconds: u64::from(spec.bake_minutes.unwrap_or(5)) * 60,
        }],
        Strategy::Linear => {
            let interval = u64::from(spec.interval_minutes.unwrap_or(5)) * 60;
            (1..)
                .map(|i| u32::from(percent) * i)
                .take_while(|p| *p < 100)
                .map(|p| Step {
                    percent: p as u8,
                    bake_seconds: interval,
                })
                .collect()
        }
    }
    .into_iter()
    .chain(std::iter::once(Step {
        percent: 100,
        bake_seconds: 0,
    }))
    .collect()
}

/// One function's move from the version serving now to the new one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub function: FunctionId,
    /// The Lambda function's name.
    pub name: String,
    pub from: String,
    pub to: String,
}

/// Where a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    InProgress,
    Promoted,
    RolledBack,
    Aborted,
}

/// The record kept after every step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub environment: String,
    pub strategy: Strategy,
    pub steps: Vec<Step>,
    /// The step under way (an index into `steps`).
    pub step: usize,
    pub phase: Phase,
    pub started_at: String,
    pub updated_at: String,
    pub targets: Vec<Target>,
    /// The alarms that sent traffic back, with their reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alarms: Vec<Firing>,
}

impl State {
    /// The new versions' share now, in percent.
    pub fn percent(&self) -> u8 {
        match self.phase {
            Phase::Promoted => 100,
            Phase::RolledBack | Phase::Aborted => 0,
            Phase::InProgress => self.steps.get(self.step).map_or(0, |s| s.percent),
        }
    }
}

/// An alarm in ALARM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Firing {
    pub name: String,
    pub reason: String,
}

/// The functions' `live` aliases.
#[allow(async_fn_in_trait)]
pub trait Aliases {
    /// Points the alias at `version`, with `weight` (0 to 1) of the traffic
    /// going to `canary`, or all of it to `version` when there is none.
    async fn route(
        &self,
        function: &str,
        version: &str,
        canary: Option<(&str, f64)>,
    ) -> Result<(), CallError>;
}

/// A gate alarm as CloudWatch describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alarm {
    pub name: String,
    /// `OK`, `ALARM` or `INSUFFICIENT_DATA`.
    pub state: String,
    pub reason: String,
}

/// The gate alarms.
#[allow(async_fn_in_trait)]
pub trait Gates {
    /// The alarms among `names` that exist, metric and composite alike,
    /// with their states; an alarm that does not exist is left out (as
    /// DescribeAlarms leaves out the names it does not know).
    async fn describe(&self, names: &[String]) -> Result<Vec<Alarm>, CallError>;
}

/// The names among `wanted` that `found` lacks.
pub fn missing(wanted: &[String], found: &[Alarm]) -> Vec<String> {
    wanted
        .iter()
        .filter(|w| !found.iter().any(|a| &a.name == *w))
        .cloned()
        .collect()
}

/// The error of gate alarms that do not exist: such a gate could never
/// send traffic back.
pub fn missing_error(missing: &[String]) -> CallError {
    CallError(format!(
        "the gate alarm{} {} do{} not exist, so {} could never send traffic back",
        if missing.len() == 1 { "" } else { "s" },
        missing.join(", "),
        if missing.len() == 1 { "es" } else { "" },
        if missing.len() == 1 { "it" } else { "they" },
    ))
}

/// Which versions the gate alarms watch: while a rollout bakes, each
/// function's alarms watch the new version alone (the `ExecutedVersion`
/// dimension), so that a canary's errors are not lost in the previous
/// version's traffic; otherwise every version behind the `live` alias.
#[allow(async_fn_in_trait)]
pub trait Watch {
    /// Points the gate alarms of each `(function, version)` at that version
    /// alone, or at every version with [`ALL_VERSIONS`].
    async fn watch(&self, versions: &[(FunctionId, String)]) -> Result<(), CallError>;
}

/// Where the rollout's state is kept.
#[allow(async_fn_in_trait)]
pub trait Store {
    async fn load(&self, environment: &str) -> Result<Option<State>, CallError>;
    async fn save(&self, state: &State) -> Result<(), CallError>;
}

/// Time, so that tests need not wait.
#[allow(async_fn_in_trait)]
pub trait Clock {
    fn now(&self) -> chrono::DateTime<chrono::Utc>;
    async fn sleep(&self, duration: Duration);
}

/// The real clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now()
    }

    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}

/// What a rollout tells the user, as it happens.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Traffic moved: the new versions take `percent`.
    Shifted {
        step: usize,
        steps: usize,
        percent: u8,
        targets: Vec<Target>,
    },
    /// A poll of the gates during a bake.
    Baking {
        step: usize,
        percent: u8,
        remaining_seconds: u64,
        alarms: usize,
    },
    /// An alarm fired: all traffic went back.
    RolledBack {
        alarms: Vec<Firing>,
    },
    Promoted {
        targets: Vec<Target>,
    },
    Aborted {
        targets: Vec<Target>,
    },
    /// The gate alarms of `functions` watch `version` alone, or every
    /// version when it is [`ALL_VERSIONS`]; `error` when they could not be
    /// pointed back (the next deploy does it).
    Gates {
        functions: Vec<(FunctionId, String)>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let versions = |targets: &[Target]| {
            targets
                .iter()
                .map(|t| format!("{} {}→{}", t.function, t.from, t.to))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Event::Shifted {
                step,
                steps,
                percent,
                targets,
            } => writeln!(
                f,
                "rollout step {}/{steps}: new versions take {percent}% ({})",
                step + 1,
                versions(targets)
            ),
            Event::Baking {
                step,
                percent,
                remaining_seconds,
                alarms,
            } => writeln!(
                f,
                "rollout step {}: {percent}% on the new versions, {remaining_seconds} s left, {alarms} gate alarms OK",
                step + 1
            ),
            Event::RolledBack { alarms } => {
                writeln!(
                    f,
                    "rollout rolled back: all traffic is on the previous versions"
                )?;
                for a in alarms {
                    writeln!(f, "  {} is in ALARM: {}", a.name, a.reason)?;
                }
                Ok(())
            }
            Event::Promoted { targets } => {
                writeln!(f, "rollout promoted: {}", versions(targets))
            }
            Event::Aborted { targets } => writeln!(
                f,
                "rollout aborted: all traffic is on the previous versions ({})",
                versions(targets)
            ),
            Event::Gates { functions, error } => {
                let names = || {
                    functions
                        .iter()
                        .map(|(f, _)| f.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                match error {
                    Some(e) => writeln!(
                        f,
                        "the gate alarms of {} still watch one version ({e}); the next deploy points them at every version",
                        names()
                    ),
                    None if functions.iter().all(|(_, v)| v == ALL_VERSIONS) => {
                        writeln!(f, "gate alarms watch every version of {}", names())
                    }
                    None => writeln!(
                        f,
                        "gate alarms watch the new versions alone: {}",
                        functions
                            .iter()
                            .map(|(f, v)| format!("{f} {v}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }
            }
        }
    }
}

/// Receives a rollout's events.
pub trait Reporter {
    fn report(&self, event: &Event);
}

/// How a rollout ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Promoted,
    RolledBack(Vec<Firing>),
}

/// Everything a rollout runs with.
pub struct Rollouts<'a, A, G, W, S, C, R> {
    pub aliases: &'a A,
    pub gates: &'a G,
    pub watch: &'a W,
    pub store: &'a S,
    pub clock: &'a C,
    pub reporter: &'a R,
    /// The gate alarms' names.
    pub alarms: Vec<String>,
    pub poll: Duration,
}

impl<A: Aliases, G: Gates, W: Watch, S: Store, C: Clock, R: Reporter>
    Rollouts<'_, A, G, W, S, C, R>
{
    /// Gives the new versions `percent` of the traffic.
    async fn shift(&self, targets: &[Target], percent: u8) -> Result<(), CallError> {
        for t in targets {
            match percent {
                0 => self.aliases.route(&t.name, &t.from, None).await?,
                100 => self.aliases.route(&t.name, &t.to, None).await?,
                p => {
                    self.aliases
                        .route(&t.name, &t.from, Some((&t.to, f64::from(p) / 100.0)))
                        .await?
                }
            }
        }
        Ok(())
    }

    /// Points the targets' gate alarms at their new versions, or (with
    /// `to_new` false) back at every version. Only the first can fail the
    /// rollout: traffic must not move under gates that watch the wrong
    /// version, while gates left on a version that serves everything or
    /// nothing mislead no one until the next deploy resets them.
    async fn watch(&self, targets: &[Target], to_new: bool) -> Result<(), CallError> {
        let functions: Vec<(FunctionId, String)> = targets
            .iter()
            .map(|t| {
                let version = if to_new { t.to.as_str() } else { ALL_VERSIONS };
                (t.function, version.to_string())
            })
            .collect();
        let error = match self.watch.watch(&functions).await {
            Ok(()) => None,
            Err(e) if to_new => return Err(e),
            Err(e) => Some(e.0),
        };
        self.reporter.report(&Event::Gates { functions, error });
        Ok(())
    }

    async fn save(&self, state: &mut State) -> Result<(), CallError> {
        state.updated_at = self.clock.now().to_rfc3339();
        self.store.save(state).await
    }

    /// Checks that every gate alarm exists, before any traffic moves: a
    /// name DescribeAlarms does not know is silently left out of its answer.
    pub async fn check_gates(&self) -> Result<(), CallError> {
        if self.alarms.is_empty() {
            return Ok(());
        }
        let found = self.gates.describe(&self.alarms).await?;
        match missing(&self.alarms, &found)[..] {
            [] => Ok(()),
            ref gone => Err(missing_error(gone)),
        }
    }

    /// The gate alarms that send traffic back: those in ALARM, and those
    /// that no longer exist (the gate cannot be read).
    async fn firing(&self) -> Result<Vec<Firing>, CallError> {
        if self.alarms.is_empty() {
            return Ok(vec![]);
        }
        let found = self.gates.describe(&self.alarms).await?;
        Ok(found
            .iter()
            .filter(|a| a.state == "ALARM")
            .map(|a| Firing {
                name: a.name.clone(),
                reason: a.reason.clone(),
            })
            .chain(
                missing(&self.alarms, &found)
                    .into_iter()
                    .map(|name| Firing {
                        name,
                        reason: "the alarm no longer exists, so the gate cannot be read".into(),
                    }),
            )
            .collect())
    }

    /// Runs (or resumes) a rollout from its state's step to the end. The
    /// gate alarms must all exist, else no traffic moves. When a step bakes,
    /// the gates watch the new versions alone from before the first shift
    /// until the rollout ends, either way.
    pub async fn run(&self, state: &mut State) -> Result<Outcome, CallError> {
        self.check_gates().await?;
        let bakes = state.steps.iter().any(|s| s.bake_seconds > 0);
        if bakes {
            self.watch(&state.targets, true).await?;
        }
        while state.step < state.steps.len() {
            let step = state.steps[state.step];
            self.shift(&state.targets, step.percent).await?;
            self.save(state).await?;
            self.reporter.report(&Event::Shifted {
                step: state.step,
                steps: state.steps.len(),
                percent: step.percent,
                targets: state.targets.clone(),
            });
            let end = self.clock.now() + chrono::Duration::seconds(step.bake_seconds as i64);
            loop {
                let firing = self.firing().await?;
                if !firing.is_empty() {
                    self.shift(&state.targets, 0).await?;
                    state.phase = Phase::RolledBack;
                    state.alarms = firing.clone();
                    self.save(state).await?;
                    self.reporter.report(&Event::RolledBack {
                        alarms: firing.clone(),
                    });
                    if bakes {
                        self.watch(&state.targets, false).await?;
                    }
                    return Ok(Outcome::RolledBack(firing));
                }
                let left = (end - self.clock.now()).num_seconds().max(0) as u64;
                if left == 0 {
                    break;
                }
                self.reporter.report(&Event::Baking {
                    step: state.step,
                    percent: step.percent,
                    remaining_seconds: left,
                    alarms: self.alarms.len(),
                });
                self.clock
                    .sleep(self.poll.min(Duration::from_secs(left)))
                    .await;
            }
            if state.step + 1 == state.steps.len() {
                break;
            }
            state.step += 1;
        }
        state.phase = Phase::Promoted;
        self.save(state).await?;
        self.reporter.report(&Event::Promoted {
            targets: state.targets.clone(),
        });
        if bakes {
            self.watch(&state.targets, false).await?;
        }
        Ok(Outcome::Promoted)
    }

    /// Finishes a rollout at once: all traffic to the new versions (of one
    /// function only, with `function`: the others' rollout goes on).
    pub async fn promote(
        &self,
        state: &mut State,
        function: Option<FunctionId>,
    ) -> Result<(), CallError> {
        self.finish(state, function, 100).await
    }

    /// Ends a rollout at once: all traffic back to the previous versions (of
    /// one function only, with `function`).
    pub async fn abort(
        &self,
        state: &mut State,
        function: Option<FunctionId>,
    ) -> Result<(), CallError> {
        self.finish(state, function, 0).await
    }

    async fn finish(
        &self,
        state: &mut State,
        function: Option<FunctionId>,
        percent: u8,
    ) -> Result<(), CallError> {
        let (chosen, rest): (Vec<Target>, Vec<Target>) = state
            .targets
            .iter()
            .cloned()
            .partition(|t| function.is_none_or(|f| t.function == f));
        if chosen.is_empty() {
            let taking_part: Vec<&str> =
                state.targets.iter().map(|t| t.function.as_str()).collect();
            return Err(CallError(format!(
                "`{}` takes no part in the rollout; its functions are: {}",
                function.map_or("", FunctionId::as_str),
                taking_part.join(", ")
            )));
        }
        self.shift(&chosen, percent).await?;
        if rest.is_empty() {
            state.phase = if percent == 100 {
                state.step = state.steps.len().saturating_sub(1);
                Phase::Promoted
            } else {
                Phase::Aborted
            };
        } else {
            state.targets = rest;
        }
        self.save(state).await?;
        self.reporter.report(&if percent == 100 {
            Event::Promoted {
                targets: chosen.clone(),
            }
        } else {
            Event::Aborted {
                targets: chosen.clone(),
            }
        });
        self.watch(&chosen, false).await
    }
}

#[cfg(test)]
mod tests;

/// The CloudWatch names of the gate alarms: the pipeline's own, as the
/// monitoring stack names them (`crate::synth::context::alarms`), and the
/// spec's external ones. A gate that stands for several alarms (`replica-lag`
/// with two replicas: `replica-lag-1` and `replica-lag-2`) gates on all.
pub fn gate_alarms(env: &str, spec: &Spec) -> Result<Vec<String>, String> {
    let made = crate::synth::context::alarms(env, spec);
    let mut names: Vec<String> = Vec::new();
    for gate in &spec.rollout.alarms {
        let key = serde_json::to_value(gate)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let of_gate: Vec<&str> = made
            .iter()
            .filter(|a| {
                a.key == key
                    || a.key
                        .strip_prefix(&format!("{key}-"))
                        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
            .map(|a| a.name.as_str())
            .collect();
        if of_gate.is_empty() {
            return Err(format!(
                "the rollout gate `{key}` names no alarm of `{env}`: the monitoring stack makes none of that name"
            ));
        }
        names.extend(of_gate.into_iter().map(str::to_string));
    }
    names.extend(spec.rollout.external_alarms.iter().cloned());
    let mut seen = std::collections::BTreeSet::new();
    names.retain(|n| seen.insert(n.clone()));
    Ok(names)
}

/// A strategy by its spec name (`--strategy`).
pub fn parse_strategy(text: &str) -> Result<Strategy, String> {
    serde_json::from_value(serde_json::Value::String(text.into()))
        .map_err(|_| format!("`{text}` is not a strategy: all-at-once, canary or linear"))
}

/// The API Gateway event a smoke invocation of an API function sends:
/// `GET /v1/health`.
pub fn smoke_event(function: FunctionId) -> serde_json::Value {
    if !function.serves_api() {
        return serde_json::json!({"Records": []});
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
