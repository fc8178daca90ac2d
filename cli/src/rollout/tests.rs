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

/// Alarms that go to ALARM after `fire_after` polls.
struct FakeGates {
    polls: Cell<u32>,
    fire_after: Option<u32>,
}

impl Gates for FakeGates {
    async fn firing(&self, names: &[String]) -> Result<Vec<Firing>, CallError> {
        self.polls.set(self.polls.get() + 1);
        Ok(match self.fire_after {
            Some(n) if self.polls.get() > n => vec![Firing {
                name: names[0].clone(),
                reason: "Threshold Crossed: 1 datapoint [3.0] was greater than the threshold (1.0)"
                    .into(),
            }],
            _ => vec![],
        })
    }
}

#[derive(Default)]
struct FakeStore {
    saved: RefCell<Vec<State>>,
}

impl Store for FakeStore {
    async fn load(&self, _environment: &str) -> Result<Option<State>, CallError> {
        Ok(self.saved.borrow().last().cloned())
    }
    async fn save(&self, state: &State) -> Result<(), CallError> {
        self.saved.borrow_mut().push(state.clone());
        Ok(())
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
                function: "ingest".into(),
                name: "pipeline-uat-ingest".into(),
                from: "3".into(),
                to: "4".into(),
            },
            Target {
                function: "query".into(),
                name: "pipeline-uat-query".into(),
                from: "7".into(),
                to: "8".into(),
            },
        ],
        alarms: vec![],
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

    fn rollouts(&self) -> Rollouts<'_, FakeAliases, FakeGates, FakeStore, FakeClock, Seen> {
        Rollouts {
            aliases: &self.aliases,
            gates: &self.gates,
            store: &self.store,
            clock: &self.clock,
            reporter: &self.seen,
            alarms: vec!["pipeline-uat-ingest-errors".into()],
            poll: Duration::from_secs(30),
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
            "pipeline-uat-ingest: 3 + 4@0.1",
            "pipeline-uat-query: 7 + 8@0.1",
            "pipeline-uat-ingest: 4",
            "pipeline-uat-query: 8",
        ]
    );
    // The bake lasted five minutes of polls every 30 s.
    assert_eq!(world.gates.polls.get(), 11 + 1);
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
        text.starts_with("rollout step 1/2: new versions take 10% (ingest 3→4, query 7→8)\n"),
        "{text}"
    );
    assert!(
        text.contains("rollout step 1: 10% on the new versions, 300 s left, 1 gate alarms OK\n"),
        "{text}"
    );
    assert!(
        text.ends_with("rollout promoted: ingest 3→4, query 7→8\n"),
        "{text}"
    );
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
            "pipeline-uat-ingest: 3 + 4@0.1",
            "pipeline-uat-query: 7 + 8@0.1",
            "pipeline-uat-ingest: 3",
            "pipeline-uat-query: 7",
        ]
    );
    assert_eq!(world.gates.polls.get(), 4);
    assert_eq!(state.phase, Phase::RolledBack);
    assert_eq!(
        world.store.saved.borrow().last().map(|s| s.alarms.len()),
        Some(1)
    );
    let last = world
        .seen
        .0
        .borrow()
        .last()
        .map(|e| e.to_string())
        .unwrap_or_default();
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
                ["pipeline-uat-ingest: 4", "pipeline-uat-query: 8"]
            );
            assert_eq!((state.phase, state.percent()), (Phase::Promoted, 100));
        } else {
            run(rollouts.abort(&mut state, None)).expect("abort");
            assert_eq!(
                *world.aliases.history.borrow(),
                ["pipeline-uat-ingest: 3", "pipeline-uat-query: 7"]
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
            "pipeline-uat-ingest: 3 + 4@0.9",
            "pipeline-uat-query: 7 + 8@0.9",
            "pipeline-uat-ingest: 4",
            "pipeline-uat-query: 8"
        ]
    );
}

#[test]
fn one_function_can_be_promoted_or_aborted_alone() {
    let world = World::new(None);
    let mut state = state(Strategy::Canary);
    let rollouts = world.rollouts();
    run(rollouts.abort(&mut state, Some("query"))).expect("abort query");
    assert_eq!(*world.aliases.history.borrow(), ["pipeline-uat-query: 7"]);
    // The other function's rollout goes on.
    assert_eq!(state.phase, Phase::InProgress);
    assert_eq!(state.targets.len(), 1);
    let error = run(rollouts.promote(&mut state, Some("query"))).expect_err("gone");
    assert_eq!(
        error.0,
        "`query` takes no part in the rollout; its functions are: ingest"
    );
    run(rollouts.promote(&mut state, Some("ingest"))).expect("promote ingest");
    assert_eq!(state.phase, Phase::Promoted);
    assert_eq!(
        *world.aliases.history.borrow(),
        ["pipeline-uat-query: 7", "pipeline-uat-ingest: 4"]
    );
}
