//! Rollouts in `pipeline local`, as a deploy runs them in AWS: a changed
//! spec is migrated, published as a new version, and takes traffic through
//! the aliases step by step under the environment's rollout strategy, with
//! the previous version's handlers serving the rest, until it is promoted,
//! rolled back by a gate, or ended by `pipeline rollout promote|abort`.
//!
//! It runs the deploy's own rollout engine (`crate::rollout`) over local
//! aliases, gates and record; `--rollout-speed` divides its times.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::versions::*;
use super::*;
use crate::rollout::{self, Alarm, CallError, Firing, Outcome, Phase, State, Step, Target};
use crate::spec::model::{FunctionId, GateAlarm, Spec, Strategy};

/// The aliases as the rollout engine moves them: in the database, and in
/// this process's router when it runs the versions.
pub(crate) struct LocalAliases<'a> {
    pub(crate) pool: &'a deadpool_postgres::Pool,
    pub(crate) router: Option<&'a Router>,
}

impl rollout::Aliases for LocalAliases<'_> {
    async fn route(
        &self,
        function: &str,
        version: &str,
        canary: Option<(&str, f64)>,
    ) -> Result<(), CallError> {
        let function: FunctionId = function
            .parse()
            .map_err(|_| CallError(format!("`{function}` is not a function")))?;
        let alias = Alias {
            version: parse_version(version)?,
            canary: match canary {
                Some((c, weight)) => Some((parse_version(c)?, weight)),
                None => None,
            },
        };
        match self.router {
            Some(router) => router.route(function, alias).await,
            None => write_alias(self.pool, function, alias).await,
        }
        .map_err(CallError)
    }
}

/// The local gates: `local-<function>-errors` for each `<function>-errors`
/// of `rollout.alarms`, in ALARM once the version it watches failed an
/// invocation (an API answer of 500 or 502, a loader invocation stopped at
/// its timeout) since it was reset; and the invocations `min_invocations`
/// counts. Without a router (another process) nothing was served.
pub(crate) struct LocalGates<'a> {
    pub(super) router: Option<&'a Router>,
    watching: Mutex<BTreeMap<FunctionId, Option<i32>>>,
    reset_at: Mutex<BTreeMap<String, chrono::DateTime<chrono::Utc>>>,
    started: chrono::DateTime<chrono::Utc>,
}

impl<'a> LocalGates<'a> {
    pub(crate) fn new(router: Option<&'a Router>) -> LocalGates<'a> {
        LocalGates {
            router,
            watching: Mutex::default(),
            reset_at: Mutex::default(),
            started: chrono::Utc::now(),
        }
    }

    /// The gate's name for `function`.
    fn name(function: FunctionId) -> String {
        format!("local-{function}-errors")
    }

    fn function(name: &str) -> Option<FunctionId> {
        name.strip_prefix("local-")?
            .strip_suffix("-errors")?
            .parse()
            .ok()
    }
}

impl rollout::Gates for LocalGates<'_> {
    async fn describe(&self, names: &[String]) -> Result<Vec<Alarm>, CallError> {
        let watching = self.watching.lock().map(|w| w.clone()).unwrap_or_default();
        let reset_at = self.reset_at.lock().map(|r| r.clone()).unwrap_or_default();
        Ok(names
            .iter()
            .filter_map(|name| {
                let function = LocalGates::function(name)?;
                let version = watching.get(&function).copied().flatten();
                let since = reset_at.get(name).copied().unwrap_or(self.started);
                let failed = self
                    .router
                    .map_or(0, |r| r.served(function, version, since, true));
                let which = version.map_or("every version".into(), |v| format!("version {v}"));
                Some(Alarm {
                    name: name.clone(),
                    state: if failed > 0 { "ALARM" } else { "OK" }.into(),
                    reason: format!(
                        "{failed} failed invocation{} of {function} {which} (answers 500 or 502, invocations stopped at the timeout)",
                        if failed == 1 { "" } else { "s" }
                    ),
                })
            })
            .collect())
    }

    async fn reset(&self, names: &[String], _reason: &str) -> Result<(), CallError> {
        if let Ok(mut reset_at) = self.reset_at.lock() {
            for name in names {
                reset_at.insert(name.clone(), chrono::Utc::now());
            }
        }
        Ok(())
    }

    async fn invocations(
        &self,
        name: &str,
        version: &str,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, CallError> {
        let function: FunctionId = name
            .parse()
            .map_err(|_| CallError(format!("`{name}` is not a function")))?;
        let version = parse_version(version)?;
        Ok(self
            .router
            .map_or(0, |r| r.served(function, Some(version), since, false)))
    }
}

impl rollout::Watch for LocalGates<'_> {
    async fn watch(&self, versions: &[(FunctionId, String)]) -> Result<(), CallError> {
        let mut watching = self
            .watching
            .lock()
            .map_err(|_| CallError("the gates' lock is poisoned".into()))?;
        for (function, version) in versions {
            let version = match version.as_str() {
                crate::synth::context::ALL_VERSIONS => None,
                v => Some(parse_version(v)?),
            };
            watching.insert(*function, version);
        }
        Ok(())
    }
}

/// Prints a rollout's events (not each poll of a bake).
pub(super) struct Printer<'a> {
    pub(super) ui: &'a Ui,
}

impl rollout::Reporter for Printer<'_> {
    fn report(&self, event: &rollout::Event) {
        if !matches!(event, rollout::Event::Baking { .. }) {
            self.ui.event(event);
        }
    }
}

/// A line of `pipeline local` about its versions and rollouts.
#[derive(Debug, Serialize)]
pub(super) struct Note {
    event: &'static str,
    message: String,
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", self.message)
    }
}

pub(super) fn note(ui: &Ui, event: &'static str, message: String) {
    ui.event(&Note { event, message });
}

/// How `pipeline local` rolls changes out.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pace {
    /// Times (bakes, intervals, polls) are divided by this.
    pub(super) speed: u32,
}

impl Pace {
    fn steps(&self, strategy: Strategy, spec: &Spec) -> Vec<Step> {
        let speed = u64::from(self.speed.max(1));
        rollout::steps(strategy, &spec.rollout)
            .into_iter()
            .map(|s| Step {
                bake_seconds: match s.bake_seconds {
                    0 => 0,
                    b => b.div_ceil(speed),
                },
                ..s
            })
            .collect()
    }

    fn poll(&self, spec: &Spec) -> Duration {
        let poll = Duration::from_secs(u64::from(spec.rollout.poll_seconds)) / self.speed.max(1);
        poll.max(Duration::from_millis(100))
    }
}

/// The local gates of `spec`'s `rollout.alarms`, and the alarms that have
/// no local counterpart.
fn gates(spec: &Spec) -> (Vec<String>, Vec<GateAlarm>) {
    let mut names = Vec::new();
    let mut elsewhere = Vec::new();
    for gate in &spec.rollout.alarms {
        match gate {
            GateAlarm::IngestErrors => names.push(LocalGates::name(FunctionId::Ingest)),
            GateAlarm::LoaderErrors => names.push(LocalGates::name(FunctionId::Loader)),
            GateAlarm::QueryErrors => names.push(LocalGates::name(FunctionId::Query)),
            other => elsewhere.push(*other),
        }
    }
    (names, elsewhere)
}

/// What the rollout engine runs on in this process: its aliases, gates,
/// record and printer.
pub(super) struct Engine<'a> {
    aliases: LocalAliases<'a>,
    gates: LocalGates<'a>,
    store: PgStore,
    printer: Printer<'a>,
}

/// The engine over [`Engine`]'s parts.
type Rollouts<'e, 'a> = rollout::Rollouts<
    'e,
    LocalAliases<'a>,
    LocalGates<'a>,
    LocalGates<'a>,
    PgStore,
    rollout::SystemClock,
    Printer<'a>,
>;

impl<'a> Engine<'a> {
    pub(super) fn new(router: &'a Router, ui: &'a Ui) -> Engine<'a> {
        Engine {
            aliases: LocalAliases {
                pool: router.pool(),
                router: Some(router),
            },
            gates: LocalGates::new(Some(router)),
            store: PgStore {
                pool: router.pool().clone(),
            },
            printer: Printer { ui },
        }
    }

    /// The engine gated by `alarms`; a promote or an abort needs none.
    pub(super) fn rollouts(
        &self,
        alarms: Vec<String>,
        poll: Duration,
        min_invocations: crate::spec::model::MinInvocations,
    ) -> Rollouts<'_, 'a> {
        rollout::Rollouts {
            aliases: &self.aliases,
            gates: &self.gates,
            watch: &self.gates,
            store: &self.store,
            clock: &rollout::SystemClock,
            reporter: &self.printer,
            alarms,
            poll,
            min_invocations,
        }
    }
}

/// Runs (or resumes) the rollout `state` records, gated as `spec` says:
/// how it ended.
pub(super) async fn run(
    router: &Router,
    ui: &Ui,
    spec: &Spec,
    pace: Pace,
    mut state: State,
) -> Result<Outcome, CallError> {
    let (alarms, elsewhere) = gates(spec);
    if !elsewhere.is_empty() {
        let names: Vec<String> = elsewhere
            .iter()
            .map(|g| {
                serde_json::to_value(g)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default()
            })
            .collect();
        note(
            ui,
            "gates",
            format!(
                "not gated locally (AWS alarms with no local counterpart): {}",
                names.join(", ")
            ),
        );
    }
    let engine = Engine::new(router, ui);
    engine
        .rollouts(alarms, pace.poll(spec), spec.rollout.min_invocations)
        .run(&mut state)
        .await
}

/// The record of a new rollout to version `to`, from the versions the
/// aliases serve now; `None` when every function serves `to` already.
pub(super) async fn begin(
    router: &Router,
    spec: &Spec,
    to: i32,
    strategy: Strategy,
    pace: Pace,
) -> Result<Option<State>, CallError> {
    let targets: Vec<Target> = FunctionId::ALL
        .into_iter()
        .filter_map(|function| {
            let from = router.alias(function)?.version;
            (from != to).then(|| Target {
                function,
                name: function.as_str().into(),
                from: from.to_string(),
                to: to.to_string(),
            })
        })
        .collect();
    if targets.is_empty() {
        return Ok(None);
    }
    let store = PgStore {
        pool: router.pool().clone(),
    };
    let tag = rollout::Store::load(&store, router.env())
        .await?
        .and_then(|s| s.tag);
    let now = chrono::Utc::now().to_rfc3339();
    Ok(Some(State {
        environment: router.env().to_string(),
        strategy,
        steps: pace.steps(strategy, spec),
        step: 0,
        phase: Phase::InProgress,
        started_at: now.clone(),
        updated_at: now,
        targets,
        alarms: Vec::<Firing>::new(),
        finished: Vec::new(),
        tag,
    }))
}

/// How a rollout ended, as a line.
pub(super) fn ended(ui: &Ui, outcome: &Outcome) {
    let message = match outcome {
        Outcome::Promoted => "the new version serves all traffic".to_string(),
        Outcome::RolledBack(_) => "a gate sent all traffic back to the previous version".into(),
        Outcome::Ended(Phase::Promoted) => "promoted by `pipeline rollout promote`".into(),
        Outcome::Ended(_) => {
            "ended by `pipeline rollout abort`: the previous version serves all traffic".into()
        }
        Outcome::Blocked(firing) => format!(
            "no traffic moved: {} gate alarm{} in ALARM before the first step",
            firing.len(),
            if firing.len() == 1 { " was" } else { "s were" }
        ),
    };
    note(ui, "rollout_ended", message);
}
