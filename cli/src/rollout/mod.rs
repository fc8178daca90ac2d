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

use crate::spec::model::{Rollout, Strategy};

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
    /// `ingest`, `loader` or `query`.
    pub function: String,
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

/// The gate alarms.
#[allow(async_fn_in_trait)]
pub trait Gates {
    /// The alarms among `names` that are in ALARM.
    async fn firing(&self, names: &[String]) -> Result<Vec<Firing>, CallError>;
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
pub struct Rollouts<'a, A, G, S, C, R> {
    pub aliases: &'a A,
    pub gates: &'a G,
    pub store: &'a S,
    pub clock: &'a C,
    pub reporter: &'a R,
    /// The gate alarms' names.
    pub alarms: Vec<String>,
    pub poll: Duration,
}

impl<A: Aliases, G: Gates, S: Store, C: Clock, R: Reporter> Rollouts<'_, A, G, S, C, R> {
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

    async fn save(&self, state: &mut State) -> Result<(), CallError> {
        state.updated_at = self.clock.now().to_rfc3339();
        self.store.save(state).await
    }

    /// Runs (or resumes) a rollout from its state's step to the end.
    pub async fn run(&self, state: &mut State) -> Result<Outcome, CallError> {
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
                let firing = self.gates.firing(&self.alarms).await?;
                if !firing.is_empty() {
                    self.shift(&state.targets, 0).await?;
                    state.phase = Phase::RolledBack;
                    state.alarms = firing.clone();
                    self.save(state).await?;
                    self.reporter.report(&Event::RolledBack {
                        alarms: firing.clone(),
                    });
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
        Ok(Outcome::Promoted)
    }

    /// Finishes a rollout at once: all traffic to the new versions (of one
    /// function only, with `function`: the others' rollout goes on).
    pub async fn promote(
        &self,
        state: &mut State,
        function: Option<&str>,
    ) -> Result<(), CallError> {
        self.finish(state, function, 100).await
    }

    /// Ends a rollout at once: all traffic back to the previous versions (of
    /// one function only, with `function`).
    pub async fn abort(&self, state: &mut State, function: Option<&str>) -> Result<(), CallError> {
        self.finish(state, function, 0).await
    }

    async fn finish(
        &self,
        state: &mut State,
        function: Option<&str>,
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
                function.unwrap_or(""),
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
            Event::Promoted { targets: chosen }
        } else {
            Event::Aborted { targets: chosen }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests;

/// The CloudWatch names of the gate alarms: the pipeline's own
/// (`<project>-<env>-<key>`) and the spec's external ones.
pub fn gate_alarms(project: &str, env: &str, spec: &Rollout) -> Vec<String> {
    spec.alarms
        .iter()
        .filter_map(|a| serde_json::to_value(a).ok())
        .filter_map(|v| v.as_str().map(|key| format!("{project}-{env}-{key}")))
        .chain(spec.external_alarms.iter().cloned())
        .collect()
}

/// A strategy by its spec name (`--strategy`).
pub fn parse_strategy(text: &str) -> Result<Strategy, String> {
    serde_json::from_value(serde_json::Value::String(text.into()))
        .map_err(|_| format!("`{text}` is not a strategy: all-at-once, canary or linear"))
}

/// The API Gateway event a smoke invocation of an API function sends:
/// `GET /v1/health`.
pub fn smoke_event(function: &str) -> serde_json::Value {
    if function == "loader" {
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
