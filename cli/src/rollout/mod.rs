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
mod checks;
mod event;
mod rollouts;

pub use checks::*;
pub use event::*;
pub use rollouts::*;

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::spec::model::{FunctionId, MinInvocations, Rollout, Spec, Strategy};
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
    /// Targets finished early, one function at a time (`rollout promote`
    /// or `abort` with `--function`), and the share they were left at.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finished: Vec<Finished>,
    /// Which stored record this copy was read or written as (S3's ETag):
    /// a save is conditional on it, so that a record another process wrote
    /// meanwhile (a promote, an abort) is never written over.
    #[serde(skip)]
    pub tag: Option<String>,
}

/// A target finished before the rest of its rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finished {
    pub target: Target,
    /// 100 when promoted, 0 when aborted.
    pub percent: u8,
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
    /// Sets the alarms to `INSUFFICIENT_DATA` with `reason` (CloudWatch's
    /// SetAlarmState): an alarm pointed at another metric keeps the state
    /// of the one it watched before (PutMetricAlarm: "When you update an
    /// existing alarm, its state is left unchanged"), until CloudWatch
    /// evaluates the new one.
    async fn reset(&self, names: &[String], reason: &str) -> Result<(), CallError>;
    /// The invocations `version` of the function `name` served through its
    /// `live` alias since `since` (Lambda's `Invocations` metric, by
    /// `FunctionName`, `Resource` and `ExecutedVersion`, as the gates watch
    /// it).
    async fn invocations(
        &self,
        name: &str,
        version: &str,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, CallError>;
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
    /// The stored record, with its tag.
    async fn load(&self, environment: &str) -> Result<Option<State>, CallError>;
    /// Saves `state` if the stored record is still the one `state.tag`
    /// names (or there is none, for no tag), and gives `state` the new
    /// record's tag; `Ok(false)`, saving nothing, when another process wrote
    /// the record since.
    async fn save(&self, state: &mut State) -> Result<bool, CallError>;
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

/// How a rollout ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Promoted,
    RolledBack(Vec<Firing>),
    /// Another process ended the rollout (`pipeline rollout promote` or
    /// `abort`) while it ran; traffic is where that left it.
    Ended(Phase),
    /// Gate alarms were in ALARM before any traffic moved: nothing moved.
    Blocked(Vec<Firing>),
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
