//! Rollouts against fakes: aliases that record their routing, gate alarms
//! that fire when a test says, a store in memory, and a clock that moves
//! only when the rollout sleeps. (The CloudWatch alarms the real gates read
//! are not served by moto; the Lambda side is also tested against moto.)

use std::cell::{Cell, RefCell};
use std::time::Duration;

use super::*;

#[derive(Default)]
struct FakeAliases {
    history: RefCell<Vec<String>>,
}

impl Aliases for FakeAliases {
    async fn route(
        &self,
        function: &str,
        version: &str,
        canary: Option<(&str, f64)>,
    ) -> Result<(), CallError> {
        self.history.borrow_mut().push(match canary {
            Some((v, w)) => format!("{function}: {version} + {v}@{w}"),
            None => format!("{function}: {version}"),
        });
        Ok(())
    }
}

/// The gate alarms' versions go into the same history as the routes, so
/// that the tests see their order.
impl Watch for FakeAliases {
    async fn watch(&self, versions: &[(FunctionId, String)]) -> Result<(), CallError> {
        let list: Vec<String> = versions.iter().map(|(f, v)| format!("{f}={v}")).collect();
        self.history
            .borrow_mut()
            .push(format!("gates watch {}", list.join(", ")));
        Ok(())
    }
}

/// Alarms that go to ALARM after `fire_after` polls; those in `missing` do
/// not exist (after `vanish_after` polls, when set).
/// Those in `stale` are in ALARM from before the rollout until reset, as an
/// alarm re-pointed at a new version keeps the previous one's state.
struct FakeGates {
    polls: Cell<u32>,
    fire_after: Option<u32>,
    missing: Vec<String>,
    vanish_after: Option<u32>,
    stale: Vec<String>,
    resets: RefCell<Vec<(String, String)>>,
    /// Invocations each function (by name) served; none when not listed.
    served: Vec<(String, u64)>,
    /// The invocation counts asked for: function, version, since.
    asked: RefCell<Vec<(String, String, chrono::DateTime<chrono::Utc>)>>,
}

impl Gates for FakeGates {
    async fn describe(&self, names: &[String]) -> Result<Vec<Alarm>, CallError> {
        self.polls.set(self.polls.get() + 1);
        let polls = self.polls.get();
        let gone = |name: &String| {
            self.missing.contains(name) && self.vanish_after.is_none_or(|n| polls > n)
        };
        let reset = |name: &String| self.resets.borrow().iter().any(|(n, _)| n == name);
        Ok(names
            .iter()
            .filter(|n| !gone(n))
            .enumerate()
            .map(|(i, name)| match self.fire_after {
                _ if self.stale.contains(name) && !reset(name) => Alarm {
                    name: name.clone(),
                    state: "ALARM".into(),
                    reason: "Threshold Crossed: the previous version's errors".into(),
                },
                Some(n) if polls > n && i == 0 => Alarm {
                    name: name.clone(),
                    state: "ALARM".into(),
                    reason:
                        "Threshold Crossed: 1 datapoint [3.0] was greater than the threshold (1.0)"
                            .into(),
                },
                _ => Alarm {
                    name: name.clone(),
                    state: "OK".into(),
                    reason: String::new(),
                },
            })
            .collect())
    }
    async fn reset(&self, names: &[String], reason: &str) -> Result<(), CallError> {
        self.resets
            .borrow_mut()
            .extend(names.iter().map(|n| (n.clone(), reason.to_string())));
        Ok(())
    }
    async fn invocations(
        &self,
        name: &str,
        version: &str,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, CallError> {
        self.asked
            .borrow_mut()
            .push((name.to_string(), version.to_string(), since));
        Ok(self
            .served
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, served)| *served))
    }
}

/// Another process's change to the stored record.
type Meddle = Box<dyn Fn(&mut State)>;

/// The state object, with S3's conditional writes: each record gets a new
/// tag, and a save whose tag is not the stored record's is refused.
#[derive(Default)]
struct FakeStore {
    saved: RefCell<Vec<State>>,
    /// Another process's write, made at the load with this number (from 1).
    meddle: RefCell<Option<(usize, Meddle)>>,
    loads: Cell<usize>,
    /// Another process's write, made just before the save with this number
    /// (from 1).
    meddle_before_save: RefCell<Option<(usize, Meddle)>>,
    saves: Cell<usize>,
}

impl FakeStore {
    fn write(&self, state: &mut State) {
        state.tag = Some(format!("t{}", self.saved.borrow().len() + 1));
        self.saved.borrow_mut().push(state.clone());
    }
}

impl Store for FakeStore {
    async fn load(&self, _environment: &str) -> Result<Option<State>, CallError> {
        self.loads.set(self.loads.get() + 1);
        let due = matches!(&*self.meddle.borrow(), Some((n, _)) if *n == self.loads.get());
        if due && let Some((_, change)) = self.meddle.borrow_mut().take() {
            let mut other = self
                .saved
                .borrow()
                .last()
                .cloned()
                .expect("a record to change");
            change(&mut other);
            self.write(&mut other);
        }
        Ok(self.saved.borrow().last().cloned())
    }
    async fn save(&self, state: &mut State) -> Result<bool, CallError> {
        self.saves.set(self.saves.get() + 1);
        let due =
            matches!(&*self.meddle_before_save.borrow(), Some((n, _)) if *n == self.saves.get());
        if due && let Some((_, change)) = self.meddle_before_save.borrow_mut().take() {
            let mut other = self
                .saved
                .borrow()
                .last()
                .cloned()
                .expect("a record to change");
            change(&mut other);
            self.write(&mut other);
        }
        let stored = self.saved.borrow().last().and_then(|s| s.tag.clone());
        if stored != state.tag {
            return Ok(false);
        }
        self.write(state);
        Ok(true)
    }
}

struct FakeClock {
    now: Cell<chrono::DateTime<chrono::Utc>>,
}

impl Clock for FakeClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.now.get()
    }
    async fn sleep(&self, duration: Duration) {
        self.now
            .set(self.now.get() + chrono::Duration::from_std(duration).unwrap_or_default());
    }
}

#[derive(Default)]
struct Seen(RefCell<Vec<Event>>);

impl Reporter for Seen {
    fn report(&self, event: &Event) {
        self.0.borrow_mut().push(event.clone());
    }
}

fn spec(strategy: Strategy) -> Rollout {
    Rollout {
        strategy,
        percent: Some(10),
        bake_minutes: Some(5),
        interval_minutes: Some(2),
        alarms: vec![],
        external_alarms: vec![],
        poll_seconds: 30,
        min_invocations: MinInvocations::default(),
    }
}

fn state(strategy: Strategy) -> State {
    State {
        environment: "uat".into(),
        strategy,
        steps: steps(strategy, &spec(strategy)),
        step: 0,
        phase: Phase::InProgress,
        started_at: String::new(),
        updated_at: String::new(),
        targets: vec![
            Target {
                function: FunctionId::Ingest,
                name: "pipeline-uat-ingest".into(),
                from: "3".into(),
                to: "4".into(),
            },
            Target {
                function: FunctionId::Query,
                name: "pipeline-uat-query".into(),
                from: "7".into(),
                to: "8".into(),
            },
        ],
        alarms: vec![],
        finished: vec![],
        tag: None,
    }
}

struct World {
    aliases: FakeAliases,
    gates: FakeGates,
    store: FakeStore,
    clock: FakeClock,
    seen: Seen,
}

impl World {
    fn new(fire_after: Option<u32>) -> World {
        World {
            aliases: FakeAliases::default(),
            gates: FakeGates {
                polls: Cell::new(0),
                fire_after,
                missing: vec![],
                vanish_after: None,
                stale: vec![],
                resets: RefCell::default(),
                served: vec![],
                asked: RefCell::default(),
            },
            store: FakeStore::default(),
            clock: FakeClock {
                now: Cell::new(
                    chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default(),
                ),
            },
            seen: Seen::default(),
        }
    }

    fn rollouts(
        &self,
    ) -> Rollouts<'_, FakeAliases, FakeGates, FakeAliases, FakeStore, FakeClock, Seen> {
        Rollouts {
            aliases: &self.aliases,
            gates: &self.gates,
            watch: &self.aliases,
            store: &self.store,
            clock: &self.clock,
            reporter: &self.seen,
            alarms: vec!["pipeline-uat-ingest-errors".into()],
            poll: Duration::from_secs(30),
            min_invocations: MinInvocations::default(),
        }
    }
}

fn run<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(f)
}

#[test]
fn strategies_make_their_steps() {
    let all = steps(Strategy::AllAtOnce, &spec(Strategy::AllAtOnce));
    assert_eq!(
        all,
        [Step {
            percent: 100,
            bake_seconds: 0
        }]
    );
    let canary = steps(Strategy::Canary, &spec(Strategy::Canary));
    assert_eq!(
        canary,
        [
            Step {
                percent: 10,
                bake_seconds: 300
            },
            Step {
                percent: 100,
                bake_seconds: 0
            }
        ]
    );
    let mut linear = spec(Strategy::Linear);
    linear.percent = Some(30);
    let percents: Vec<u8> = steps(Strategy::Linear, &linear)
        .iter()
        .map(|s| s.percent)
        .collect();
    assert_eq!(percents, [30, 60, 90, 100]);
    assert!(
        steps(Strategy::Linear, &linear)[..3]
            .iter()
            .all(|s| s.bake_seconds == 120)
    );
}

#[test]
fn a_canary_moves_the_weights_step_by_step_and_ends_on_the_new_versions() {
    let world = World::new(None);
    let mut state = state(Strategy::Canary);
    let outcome = run(world.rollouts().run(&mut state)).expect("rollout");
    assert_eq!(outcome, Outcome::Promoted);
    assert_eq!(
        *world.aliases.history.borrow(),
        [
            // The gates watch the new versions alone before any traffic
            // moves, and every version again once the rollout is over.
            "gates watch ingest=4, query=8",
            "pipeline-uat-ingest: 3 + 4@0.1",
            "pipeline-uat-query: 7 + 8@0.1",
            "pipeline-uat-ingest: 4",
            "pipeline-uat-query: 8",
            "gates watch ingest=all, query=all",
        ]
    );
    // The gates were checked (that they exist, then that none is in ALARM)
    // before any traffic moved, then the bake lasted five minutes of polls
    // every 30 s.
    assert_eq!(world.gates.polls.get(), 2 + 11 + 1);
    assert_eq!(state.phase, Phase::Promoted);
    let saved = world.store.saved.borrow();
    assert_eq!(
        saved.first().map(|s| (s.step, s.phase)),
        Some((0, Phase::InProgress))
    );
    assert_eq!(saved.last().map(|s| s.phase), Some(Phase::Promoted));
    let text: String = world
        .seen
        .0
        .borrow()
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert!(
        text.contains("rollout step 1: 10% on the new versions, 300 s left, 1 gate alarms OK\n"),
        "{text}"
    );
    assert!(
        text.starts_with(
            "gate alarms watch the new versions alone: ingest 4, query 8\nrollout step 1/2: new versions take 10% (ingest 3→4, query 7→8)\n"
        ),
        "{text}"
    );
    assert!(
        text.ends_with(
            "rollout promoted: ingest 3→4, query 7→8\ngate alarms watch every version of ingest, query\n"
        ),
        "{text}"
    );
}

#[test]
fn a_rollout_that_does_not_bake_leaves_the_gates_on_every_version() {
    let world = World::new(None);
    let mut state = state(Strategy::AllAtOnce);
    let outcome = run(world.rollouts().run(&mut state)).expect("rollout");
    assert_eq!(outcome, Outcome::Promoted);
    assert_eq!(
        *world.aliases.history.borrow(),
        ["pipeline-uat-ingest: 4", "pipeline-uat-query: 8"]
    );
}

/// Gates whose monitoring stack cannot be updated: never, or only when
/// pointed back at every version.
struct BrokenWatch {
    only_back: bool,
}

impl Watch for BrokenWatch {
    async fn watch(&self, versions: &[(FunctionId, String)]) -> Result<(), CallError> {
        if self.only_back && versions.iter().any(|(_, v)| v != ALL_VERSIONS) {
            return Ok(());
        }
        Err(CallError(
            "stack pipeline-uat-monitoring: Rate exceeded".into(),
        ))
    }
}

#[test]
fn gates_that_cannot_watch_the_new_versions_move_no_traffic_and_a_failed_reset_is_told() {
    for only_back in [false, true] {
        let world = World::new(None);
        let broken = BrokenWatch { only_back };
        let rollouts = Rollouts {
            aliases: &world.aliases,
            gates: &world.gates,
            watch: &broken,
            store: &world.store,
            clock: &world.clock,
            reporter: &world.seen,
            alarms: vec!["pipeline-uat-ingest-errors".into()],
            poll: Duration::from_secs(30),
            min_invocations: MinInvocations::default(),
        };
        let mut state = state(Strategy::Canary);
        let outcome = run(rollouts.run(&mut state));
        if !only_back {
            assert_eq!(
                outcome,
                Err(CallError(
                    "stack pipeline-uat-monitoring: Rate exceeded".into()
                ))
            );
            assert!(world.aliases.history.borrow().is_empty());
            continue;
        }
        // Promoted all the same; the gates stay on the version that now
        // takes all the traffic, and the user is told.
        assert_eq!(outcome, Ok(Outcome::Promoted));
        assert_eq!(
            world.seen.0.borrow().last().map(ToString::to_string),
            Some("the gate alarms of ingest, query still watch one version (stack pipeline-uat-monitoring: Rate exceeded); the next deploy points them at every version\n".into())
        );
    }
}

#[test]
fn an_alarm_mid_bake_sends_all_traffic_back_within_one_poll() {
    let world = World::new(Some(3));
    let mut state = state(Strategy::Canary);
    let outcome = run(world.rollouts().run(&mut state)).expect("rollout");
    let Outcome::RolledBack(firing) = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(firing[0].name, "pipeline-uat-ingest-errors");
    assert_eq!(
        *world.aliases.history.borrow(),
        [
            "gates watch ingest=4, query=8",
            "pipeline-uat-ingest: 3 + 4@0.1",
            "pipeline-uat-query: 7 + 8@0.1",
            "pipeline-uat-ingest: 3",
            "pipeline-uat-query: 7",
            "gates watch ingest=all, query=all",
        ]
    );
    assert_eq!(world.gates.polls.get(), 4);
    assert_eq!(state.phase, Phase::RolledBack);
    assert_eq!(
        world.store.saved.borrow().last().map(|s| s.alarms.len()),
        Some(1)
    );
    let seen = world.seen.0.borrow();
    let last = seen[seen.len() - 2].to_string();
    assert_eq!(
        last,
        "rollout rolled back: all traffic is on the previous versions\n  pipeline-uat-ingest-errors is in ALARM: Threshold Crossed: 1 datapoint [3.0] was greater than the threshold (1.0)\n"
    );
}

#[test]
fn a_rollout_left_mid_bake_is_promoted_or_aborted() {
    for promote in [true, false] {
        let world = World::new(None);
        let mut state = state(Strategy::Linear);
        // As a killed process leaves it: step 2 of 5 under way.
        state.step = 1;
        let rollouts = world.rollouts();
        if promote {
            run(rollouts.promote(&mut state, None)).expect("promote");
            assert_eq!(
                *world.aliases.history.borrow(),
                [
                    "pipeline-uat-ingest: 4",
                    "pipeline-uat-query: 8",
                    "gates watch ingest=all, query=all"
                ]
            );
            assert_eq!((state.phase, state.percent()), (Phase::Promoted, 100));
        } else {
            run(rollouts.abort(&mut state, None)).expect("abort");
            assert_eq!(
                *world.aliases.history.borrow(),
                [
                    "pipeline-uat-ingest: 3",
                    "pipeline-uat-query: 7",
                    "gates watch ingest=all, query=all"
                ]
            );
            assert_eq!((state.phase, state.percent()), (Phase::Aborted, 0));
        }
        assert_eq!(world.store.saved.borrow().len(), 1);
    }
}

#[test]
fn a_resumed_rollout_goes_on_from_its_step() {
    let world = World::new(None);
    let mut state = state(Strategy::Linear);
    // Step 9 of 10 (90%) was under way.
    state.step = 8;
    run(world.rollouts().run(&mut state)).expect("rollout");
    assert_eq!(
        *world.aliases.history.borrow(),
        [
            // A resumed rollout points the gates again: the process that
            // pointed them may have died before.
            "gates watch ingest=4, query=8",
            "pipeline-uat-ingest: 3 + 4@0.9",
            "pipeline-uat-query: 7 + 8@0.9",
            "pipeline-uat-ingest: 4",
            "pipeline-uat-query: 8",
            "gates watch ingest=all, query=all",
        ]
    );
}

#[test]
fn one_function_can_be_promoted_or_aborted_alone() {
    let world = World::new(None);
    let mut state = state(Strategy::Canary);
    let rollouts = world.rollouts();
    run(rollouts.abort(&mut state, Some(FunctionId::Query))).expect("abort query");
    // Only the function that is done has its gates watch every version.
    assert_eq!(
        *world.aliases.history.borrow(),
        ["pipeline-uat-query: 7", "gates watch query=all"]
    );
    // The other function's rollout goes on.
    assert_eq!(state.phase, Phase::InProgress);
    assert_eq!(state.targets.len(), 1);
    let error = run(rollouts.promote(&mut state, Some(FunctionId::Query))).expect_err("gone");
    assert_eq!(
        error.0,
        "`query` takes no part in the rollout; its functions are: ingest"
    );
    run(rollouts.promote(&mut state, Some(FunctionId::Ingest))).expect("promote ingest");
    assert_eq!(state.phase, Phase::Promoted);
    assert_eq!(
        *world.aliases.history.borrow(),
        [
            "pipeline-uat-query: 7",
            "gates watch query=all",
            "pipeline-uat-ingest: 4",
            "gates watch ingest=all"
        ]
    );
}

#[test]
fn a_gate_alarm_that_does_not_exist_moves_no_traffic() {
    let mut world = World::new(None);
    world.gates.missing = vec!["pipeline-uat-ingest-errors".into()];
    let mut state = state(Strategy::Canary);
    let error = run(world.rollouts().run(&mut state)).expect_err("refused");
    assert_eq!(
        error.0,
        "the gate alarm pipeline-uat-ingest-errors does not exist, so it could never send traffic back"
    );
    assert!(world.aliases.history.borrow().is_empty());
    assert!(world.store.saved.borrow().is_empty());
    let mut rollouts = world.rollouts();
    rollouts.alarms = vec![
        "pipeline-uat-ingest-errors".into(),
        "pipeline-uat-replica-lag-2".into(),
        "pipeline-uat-query-errors".into(),
    ];
    let mut missing = world.gates.missing.clone();
    missing.push("pipeline-uat-replica-lag-2".into());
    let gates = FakeGates {
        polls: Cell::new(0),
        fire_after: None,
        missing,
        vanish_after: None,
        stale: vec![],
        resets: RefCell::default(),
        served: vec![],
        asked: RefCell::default(),
    };
    rollouts.gates = &gates;
    assert_eq!(
        run(rollouts.check_gates()).expect_err("missing").0,
        "the gate alarms pipeline-uat-ingest-errors, pipeline-uat-replica-lag-2 do not exist, so they could never send traffic back"
    );
}

#[test]
fn a_gate_alarm_deleted_mid_bake_sends_the_traffic_back() {
    let mut world = World::new(None);
    world.gates.missing = vec!["pipeline-uat-ingest-errors".into()];
    world.gates.vanish_after = Some(3);
    let mut state = state(Strategy::Canary);
    let outcome = run(world.rollouts().run(&mut state)).expect("rollout");
    assert_eq!(
        outcome,
        Outcome::RolledBack(vec![Firing {
            name: "pipeline-uat-ingest-errors".into(),
            reason: "the alarm no longer exists, so the gate cannot be read".into(),
        }])
    );
    let history = world.aliases.history.borrow();
    assert_eq!(
        history[history.len() - 2..],
        ["pipeline-uat-query: 7", "gates watch ingest=all, query=all"]
    );
}

fn env_spec(env: &str) -> crate::spec::model::Spec {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../environments");
    crate::spec::Loader::new(Some(dir))
        .load(env)
        .map(|e| e.spec)
        .unwrap_or_else(|e| panic!("{env}: {e:?}"))
}

#[test]
fn a_gate_stands_for_every_alarm_the_monitoring_stack_makes_of_it() {
    let mut spec = env_spec("prod");
    assert_eq!(spec.database.read_replicas, 2);
    let names = gate_alarms("prod", &spec).expect("gates");
    assert_eq!(
        names,
        [
            "pipeline-prod-ingest-errors",
            "pipeline-prod-loader-errors",
            "pipeline-prod-query-errors",
            "pipeline-prod-api-5xx",
            "pipeline-prod-api-latency",
            "pipeline-prod-dead-letters",
            "pipeline-prod-replica-lag-1",
            "pipeline-prod-replica-lag-2",
        ]
    );
    // Every name is one the monitoring stack makes.
    let made: Vec<String> = crate::synth::context::alarms("prod", &spec)
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert!(names.iter().all(|n| made.contains(n)), "{made:?}");
    // One replica: one alarm, without a number.
    spec.database.read_replicas = 1;
    let names = gate_alarms("prod", &spec).expect("gates");
    assert_eq!(
        names.last().map(String::as_str),
        Some("pipeline-prod-replica-lag")
    );
    // External alarms follow, once each.
    spec.rollout.external_alarms = vec!["shared-db-cpu".into(), "shared-db-cpu".into()];
    let names = gate_alarms("prod", &spec).expect("gates");
    assert_eq!(names.last().map(String::as_str), Some("shared-db-cpu"));
    assert_eq!(names.iter().filter(|n| *n == "shared-db-cpu").count(), 1);
    // No replica: the gate names nothing.
    spec.database.read_replicas = 0;
    assert_eq!(
        gate_alarms("prod", &spec).expect_err("no alarm"),
        "the rollout gate `replica-lag` names no alarm of `prod`: the monitoring stack makes none of that name"
    );
}

fn answer(function_error: Option<&str>, payload: &str) -> Invocation {
    Invocation {
        function_error: function_error.map(str::to_string),
        payload: payload.into(),
    }
}

#[test]
fn an_api_function_must_answer_its_health_route_with_2xx() {
    let ok =
        r#"{"statusCode":200,"headers":{},"body":"{\"status\":\"ok\"}","isBase64Encoded":false}"#;
    assert_eq!(
        invocation_problem(FunctionId::Ingest, &answer(None, ok)),
        None
    );
    let down = r#"{"statusCode":503,"body":"{\"error\":{\"code\":\"unavailable\",\"message\":\"the database does not answer\"}}"}"#;
    assert_eq!(
        invocation_problem(FunctionId::Query, &answer(None, down)).as_deref(),
        Some(
            r#"GET /v1/health answered 503: {"error":{"code":"unavailable","message":"the database does not answer"}}"#
        )
    );
    let missing = r#"{"statusCode":"404","body":"{\"error\":{\"code\":\"not_found\"}}"}"#;
    assert_eq!(
        invocation_problem(FunctionId::Ingest, &answer(None, missing)).as_deref(),
        Some(r#"GET /v1/health answered 404: {"error":{"code":"not_found"}}"#)
    );
    // An echo of the event is no proxy response (API Gateway answers 502).
    assert_eq!(
        invocation_problem(FunctionId::Query, &answer(None, r#"{"path":"/v1/health"}"#)).as_deref(),
        Some(
            r#"GET /v1/health answered no HTTP status (not an API Gateway proxy response): {"path":"/v1/health"}"#
        )
    );
    let crashed = r#"{"errorType":"Runtime.ExitError"}"#;
    assert_eq!(
        invocation_problem(FunctionId::Query, &answer(Some("Unhandled"), crashed)).as_deref(),
        Some(r#"Unhandled: {"errorType":"Runtime.ExitError"}"#)
    );
    // The loader answers SQS batches: only its errors count.
    assert_eq!(
        invocation_problem(FunctionId::Loader, &answer(None, "{}")),
        None
    );
    assert!(invocation_problem(FunctionId::Loader, &answer(Some("Unhandled"), crashed)).is_some());
}

/// The loader's smoke invocation is its health action, which connects as
/// the loader does: an answer other than `{"status": "ok"}` (an echo of the
/// event, say, or before: an empty SQS batch that never connected) fails it.
#[test]
fn the_loader_must_answer_its_health_action_with_ok() {
    assert_eq!(
        smoke_event(FunctionId::Loader),
        serde_json::json!({"action": "health"})
    );
    assert_eq!(
        smoke_problem(FunctionId::Loader, &answer(None, r#"{"status":"ok"}"#)),
        None
    );
    assert_eq!(
        smoke_problem(FunctionId::Loader, &answer(None, r#"{"action":"health"}"#)).as_deref(),
        Some(r#"the health action answered {"action":"health"}, not {"status": "ok"}"#)
    );
    let unreachable =
        r#"{"errorType":"MessageError","errorMessage":"the database pool: timed out"}"#;
    assert_eq!(
        smoke_problem(FunctionId::Loader, &answer(Some("Unhandled"), unreachable)).as_deref(),
        Some(format!("Unhandled: {unreachable}").as_str())
    );
    let ok =
        r#"{"statusCode":200,"headers":{},"body":"{\"status\":\"ok\"}","isBase64Encoded":false}"#;
    assert_eq!(smoke_problem(FunctionId::Query, &answer(None, ok)), None);
}

#[test]
fn a_refused_migration_is_told_from_a_failed_one() {
    let refused =
        r#"{"errorType":"MigrationRefused","errorMessage":"set `allow_destructive_changes`"}"#;
    assert_eq!(
        migration_refused(&answer(Some("Unhandled"), refused)).as_deref(),
        Some("set `allow_destructive_changes`")
    );
    let failed = r#"{"errorType":"MessageError","errorMessage":"deadlock"}"#;
    assert_eq!(migration_refused(&answer(Some("Unhandled"), failed)), None);
    assert_eq!(migration_refused(&answer(None, refused)), None);
}

/// Versions whose states come from a script, one a poll.
struct FakeVersions {
    states: RefCell<Vec<VersionState>>,
    polls: Cell<u32>,
}

impl Versions for FakeVersions {
    async fn state(&self, _: &str, _: &str) -> Result<VersionState, CallError> {
        self.polls.set(self.polls.get() + 1);
        let mut states = self.states.borrow_mut();
        Ok(if states.len() > 1 {
            states.remove(0)
        } else {
            states[0].clone()
        })
    }
}

fn version_state(state: &str, update: Option<&str>, reason: Option<&str>) -> VersionState {
    VersionState {
        state: Some(state.into()),
        state_reason: reason.map(str::to_string),
        state_reason_code: reason.map(|_| "Creating".to_string()),
        last_update_status: update.map(str::to_string),
        last_update_status_reason: None,
    }
}

#[test]
fn a_new_version_is_waited_for_until_it_is_active() {
    let world = World::new(None);
    let pending = version_state("Pending", None, Some("The function is being created."));
    let versions = FakeVersions {
        states: RefCell::new(vec![
            pending.clone(),
            pending.clone(),
            version_state("Active", Some("InProgress"), None),
            version_state("Active", Some("Successful"), None),
        ]),
        polls: Cell::new(0),
    };
    let started = world.clock.now();
    let wait = wait_active(
        &versions,
        &world.clock,
        "pipeline-uat-ingest",
        "4",
        Duration::from_secs(2),
        ACTIVE_TIMEOUT,
    );
    run(wait).expect("active");
    assert_eq!(versions.polls.get(), 4);
    assert_eq!((world.clock.now() - started).num_seconds(), 6);

    // Pending for longer than the wait: a clear error.
    let versions = FakeVersions {
        states: RefCell::new(vec![pending]),
        polls: Cell::new(0),
    };
    let wait = wait_active(
        &versions,
        &world.clock,
        "pipeline-uat-ingest",
        "4",
        Duration::from_secs(5),
        Duration::from_secs(60),
    );
    assert_eq!(
        run(wait).expect_err("timeout").0,
        "version 4 of pipeline-uat-ingest is not Active after 60 s: its state is Pending: The function is being created. (Creating)"
    );
    assert_eq!(versions.polls.get(), 13);
}

#[test]
fn a_failed_version_stops_the_wait_with_its_reason() {
    let world = World::new(None);
    let mut failed = version_state("Failed", None, None);
    failed.state_reason = Some("Lambda was unable to pull the image".into());
    failed.state_reason_code = Some("ImageAccessDenied".into());
    let versions = FakeVersions {
        states: RefCell::new(vec![
            version_state("Pending", None, Some("The function is being created.")),
            failed,
        ]),
        polls: Cell::new(0),
    };
    let wait = wait_active(
        &versions,
        &world.clock,
        "pipeline-uat-query",
        "9",
        Duration::from_secs(1),
        ACTIVE_TIMEOUT,
    );
    assert_eq!(
        run(wait).expect_err("failed").0,
        "version 9 of pipeline-uat-query cannot be invoked: its state is Failed: Lambda was unable to pull the image (ImageAccessDenied)"
    );
    let mut update_failed = version_state("Active", Some("Failed"), None);
    update_failed.last_update_status_reason = Some("The subnet has no free address".into());
    assert_eq!(
        readiness(&update_failed),
        Readiness::Failed("its last update failed: The subnet has no free address".into())
    );
    assert_eq!(
        readiness(&version_state("Active", None, None)),
        Readiness::Ready
    );
}

/// `pipeline rollout abort` from another process in the middle of a linear
/// rollout's bake: the deploy's next read of the record finds it, puts the
/// traffic where the abort did (after any shift of its own), ends with the
/// abort, and never writes over it (before, the bake kept its own copy and
/// went on to the next step and `promoted`).
#[test]
fn an_abort_from_another_process_during_a_bake_holds() {
    let world = World::new(None);
    *world.store.meddle.borrow_mut() = Some((
        3,
        Box::new(|other: &mut State| {
            other.phase = Phase::Aborted;
        }),
    ));
    let mut state = state(Strategy::Linear);
    let outcome = run(world.rollouts().run(&mut state)).expect("rollout");
    assert_eq!(outcome, Outcome::Ended(Phase::Aborted));
    let history = world.aliases.history.borrow();
    assert_eq!(
        history[history.len() - 3..],
        [
            "pipeline-uat-ingest: 3",
            "pipeline-uat-query: 7",
            "gates watch ingest=all, query=all",
        ]
    );
    assert!(
        !history.iter().any(|h| h.ends_with("@0.2")),
        "the next step moved traffic: {history:?}"
    );
    let saved = world.store.saved.borrow();
    assert_eq!(saved.last().map(|s| s.phase), Some(Phase::Aborted));
    assert_eq!(state.phase, Phase::Aborted);
}

/// A promote of one function from another process mid-bake: the deploy
/// goes on with the other function alone, and leaves the promoted one on
/// its new version.
#[test]
fn a_promote_of_one_function_from_another_process_is_followed() {
    let world = World::new(None);
    *world.store.meddle.borrow_mut() = Some((3, promote_ingest()));
    let mut state = state(Strategy::Linear);
    let outcome = run(world.rollouts().run(&mut state)).expect("rollout");
    assert_eq!(outcome, Outcome::Promoted);
    let history = world.aliases.history.borrow();
    assert_stays_promoted(&history);
    assert!(history.iter().any(|h| h == "pipeline-uat-query: 7 + 8@0.2"));
    assert_eq!(state.targets.len(), 1);
    assert_eq!(state.finished.len(), 1);
}

/// An abort whose copy of the record is stale (the deploy moved on since it
/// was read) is saved over the fresh record, not refused nor lost.
#[test]
fn an_abort_with_a_stale_record_reads_it_again() {
    let world = World::new(None);
    let mut first = state(Strategy::Linear);
    run(world.store.save(&mut first)).expect("save");
    let mut moved = first.clone();
    moved.step = 1;
    run(world.store.save(&mut moved)).expect("save");
    run(world.rollouts().abort(&mut first, None)).expect("abort");
    let saved = world.store.saved.borrow();
    assert_eq!(
        saved.last().map(|s| (s.step, s.phase)),
        Some((1, Phase::Aborted))
    );
}

/// A gate re-pointed at the new version still holds the previous version's
/// ALARM: it is reset before any traffic moves, so a healthy canary is
/// promoted (before, the first poll of the bake rolled it back).
#[test]
fn a_stale_alarm_of_the_previous_version_is_reset_before_the_canary() {
    let mut world = World::new(None);
    world.gates.stale = vec!["pipeline-uat-ingest-errors".into()];
    let mut state = state(Strategy::Canary);
    let outcome = run(world.rollouts().run(&mut state)).expect("rollout");
    assert_eq!(outcome, Outcome::Promoted);
    assert_eq!(
        *world.gates.resets.borrow(),
        [(
            "pipeline-uat-ingest-errors".to_string(),
            "now watching the new version alone: ingest 4, query 8".to_string()
        )]
    );
}

/// A gate that does not watch one version (the API's errors) is in ALARM
/// before the rollout: it is read before the first shift, and no traffic
/// moves (before, the canary shifted, then rolled back).
#[test]
fn a_gate_in_alarm_before_the_first_shift_moves_no_traffic() {
    let mut world = World::new(None);
    world.gates.stale = vec!["pipeline-uat-api-5xx".into()];
    let rollouts = Rollouts {
        alarms: vec![
            "pipeline-uat-ingest-errors".into(),
            "pipeline-uat-api-5xx".into(),
        ],
        ..world.rollouts()
    };
    let mut state = state(Strategy::Canary);
    let outcome = run(rollouts.run(&mut state)).expect("rollout");
    assert!(
        matches!(&outcome, Outcome::Blocked(f) if f.len() == 1 && f[0].name == "pipeline-uat-api-5xx"),
        "{outcome:?}"
    );
    assert_eq!(
        *world.aliases.history.borrow(),
        [
            "gates watch ingest=4, query=8",
            "gates watch ingest=all, query=all",
        ]
    );
    assert!(world.store.saved.borrow().is_empty());
}

/// A promote of one function lands between the deploy's read of the record
/// and its save of the next step: the save is refused, the deploy takes the
/// record (that function finished) and saves its step on it, and goes on
/// with the other function alone.
#[test]
fn a_promote_between_a_read_and_a_save_is_kept() {
    let world = World::new(None);
    *world.store.meddle_before_save.borrow_mut() = Some((2, promote_ingest()));
    let mut state = state(Strategy::Linear);
    let outcome = run(world.rollouts().run(&mut state)).expect("rollout");
    assert_eq!(outcome, Outcome::Promoted);
    let saved = world.store.saved.borrow();
    let last = saved.last().expect("a record");
    assert_eq!(last.phase, Phase::Promoted);
    assert_eq!(last.finished.len(), 1);
    assert_eq!(last.targets.len(), 1);
    let history = world.aliases.history.borrow();
    assert_stays_promoted(&history);
}

/// Ingest, promoted alone by another process, is routed to its new version
/// and never put back into the rollout after that.
fn assert_stays_promoted(history: &[String]) {
    let adopted = history
        .iter()
        .position(|h| h == "pipeline-uat-ingest: 4")
        .expect("ingest promoted");
    assert!(
        !history[adopted + 1..]
            .iter()
            .any(|h| h.starts_with("pipeline-uat-ingest: 3")),
        "ingest was moved back into the rollout: {history:?}"
    );
}

/// Another process's `rollout promote --function ingest`.
fn promote_ingest() -> Meddle {
    Box::new(|other: &mut State| {
        let (next, _) =
            super::rollouts::finished(other, Some(FunctionId::Ingest), 100).expect("finish");
        *other = next;
    })
}

/// A gate that saw no traffic judged nothing: with `min_invocations`, a
/// canary whose new version served fewer invocations during its bake sends
/// all traffic back, saying which and how many; one that served enough is
/// promoted. Without it (0), nothing is counted.
#[test]
fn a_canary_that_served_too_little_is_rolled_back_and_one_that_served_enough_promoted() {
    let wanted = MinInvocations {
        ingest: 1,
        loader: 0,
        query: 3,
    };
    let mut world = World::new(None);
    world.gates.served = vec![
        ("pipeline-uat-ingest".into(), 40),
        ("pipeline-uat-query".into(), 2),
    ];
    let start = world.clock.now.get();
    let rollouts = Rollouts {
        min_invocations: wanted,
        ..world.rollouts()
    };
    let mut state = state(Strategy::Canary);
    let outcome = run(rollouts.run(&mut state)).expect("rollout");
    let reason = "query version 8 served 2 invocations in its 300 s bake at 10%, fewer than the 3 the gates need to judge it";
    assert_eq!(
        outcome,
        Outcome::RolledBack(vec![Firing {
            name: "rollout.min_invocations.query".into(),
            reason: reason.into(),
        }])
    );
    assert_eq!(state.phase, Phase::RolledBack);
    assert_eq!(
        world.aliases.history.borrow()[1..5],
        [
            "pipeline-uat-ingest: 3 + 4@0.1",
            "pipeline-uat-query: 7 + 8@0.1",
            "pipeline-uat-ingest: 3",
            "pipeline-uat-query: 7",
        ]
    );
    // Counted once the bake was over, from its start, for each new version.
    assert_eq!(
        *world.gates.asked.borrow(),
        [
            ("pipeline-uat-ingest".into(), "4".into(), start),
            ("pipeline-uat-query".into(), "8".into(), start),
        ]
    );

    // Each case in a world of its own: the record of the one before ended.
    let mut world = World::new(None);
    world.gates.served = vec![
        ("pipeline-uat-ingest".into(), 1),
        ("pipeline-uat-query".into(), 3),
    ];
    let rollouts = Rollouts {
        min_invocations: wanted,
        ..world.rollouts()
    };
    let mut state = self::state(Strategy::Canary);
    let outcome = run(rollouts.run(&mut state)).expect("rollout");
    assert_eq!(outcome, Outcome::Promoted);
    assert_eq!(world.gates.asked.borrow().len(), 2);

    let world = World::new(None);
    let mut state = self::state(Strategy::Canary);
    let outcome = run(world.rollouts().run(&mut state)).expect("rollout");
    assert_eq!(outcome, Outcome::Promoted);
    assert!(world.gates.asked.borrow().is_empty());
}
