//! Deploying to a running `pipeline local`: when its environment files
//! change (or it starts over a data directory with a changed spec), the
//! change goes out as `pipeline deploy` sends it: migrated first, published
//! as a new version, then rolled out (`super::rollout`).

use std::time::SystemTime;

use super::rollout::{Pace, begin, ended, note, run};
use super::versions::*;
use super::*;
use crate::rollout::{self, Phase, State};
use crate::spec::model::{FunctionId, Spec, Strategy};

/// Loads the environment again from its files (printing its problems).
pub type Reload = Box<dyn Fn() -> Result<crate::spec::Environment, Error> + Send + Sync>;

/// How often the environment files are looked at.
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// A spec migrated to and published: what to roll out.
pub(super) struct Prepared {
    spec: Spec,
    to: i32,
    strategy: Strategy,
}

impl Prepared {
    pub(super) fn to(&self) -> i32 {
        self.to
    }
}

/// Migrates the database to `spec`, as a deploy does before any new version
/// takes traffic (a change the spec does not allow is refused, nothing
/// changed), and publishes it as a version.
pub(super) async fn prepare(router: &Router, ui: &Ui, spec: &Spec) -> Result<Prepared, Error> {
    let new = router.unpublished(spec);
    let report = loader::migrate(&new.ctx).await.map_err(migration_error)?;
    for statement in &report.statements {
        ui.info(format_args!("migrated: {statement}"));
    }
    let to = router
        .publish(spec)
        .await
        .map_err(|e| local_error("cannot publish the version", e))?;
    let strategy = if !report.destructive.is_empty() && spec.rollout.strategy != Strategy::AllAtOnce
    {
        note(
            ui,
            "all_at_once",
            format!(
                "version {to} takes all traffic at once: the migration made changes that the previous version cannot load into ({})",
                report.destructive.join("; ")
            ),
        );
        Strategy::AllAtOnce
    } else {
        spec.rollout.strategy
    };
    Ok(Prepared {
        spec: spec.clone(),
        to,
        strategy,
    })
}

/// Gives every function's alias to `to` (a first start: no traffic to move).
pub(super) async fn first(router: &Router, to: i32) -> Result<(), Error> {
    for function in FunctionId::ALL {
        if router.alias(function).is_none() {
            let alias = Alias {
                version: to,
                canary: None,
            };
            router
                .route(function, alias)
                .await
                .map_err(|e| local_error("cannot write the aliases", e))?;
        }
    }
    Ok(())
}

/// Rolls a prepared version out, from what the aliases serve now.
async fn roll_out(router: &Router, ui: &Ui, pace: Pace, prepared: &Prepared) {
    let Prepared { spec, to, strategy } = prepared;
    let state = match begin(router, spec, *to, *strategy, pace).await {
        Ok(Some(state)) => state,
        Ok(None) => return,
        Err(e) => {
            return note(
                ui,
                "rollout_failed",
                format!("the rollout cannot start: {e}"),
            );
        }
    };
    let from: Vec<String> = state
        .targets
        .iter()
        .map(|t| format!("{} {}", t.function, t.from))
        .collect();
    note(
        ui,
        "rollout",
        format!(
            "{} rollout of version {to} (from {}), {} step{}",
            strategy.as_str(),
            from.join(", "),
            state.steps.len(),
            if state.steps.len() == 1 { "" } else { "s" }
        ),
    );
    finish(router, ui, spec, pace, state).await;
}

/// Runs a rollout's steps to the end, and says how it ended.
async fn finish(router: &Router, ui: &Ui, spec: &Spec, pace: Pace, state: State) {
    match run(router, ui, spec, pace, state).await {
        Ok(outcome) => ended(ui, &outcome),
        Err(e) => note(
            ui,
            "rollout_failed",
            format!("the rollout stopped: {e}; `pipeline rollout status --local` shows where"),
        ),
    }
}

/// What a start found: a rollout the last run left in progress is resumed
/// when it rolls out this spec, else aborted first.
async fn resume_or_abort(router: &Router, ui: &Ui, pace: Pace, prepared: &Prepared) -> bool {
    let store = PgStore {
        pool: router.pool().clone(),
    };
    let Ok(Some(mut state)) = rollout::Store::load(&store, router.env()).await else {
        return false;
    };
    if state.phase != Phase::InProgress {
        return false;
    }
    let to = prepared.to.to_string();
    if state.targets.iter().all(|t| t.to == to) {
        note(
            ui,
            "rollout",
            format!(
                "resuming the rollout of version {to} at step {}",
                state.step + 1
            ),
        );
        finish(router, ui, &prepared.spec, pace, state).await;
        return true;
    }
    note(
        ui,
        "rollout",
        "the spec changed since the rollout left in progress: aborting it first".into(),
    );
    let engine = super::rollout::Engine::new(router, ui);
    let rollouts = engine.rollouts(Vec::new(), WATCH_EVERY, Default::default());
    if let Err(e) = rollouts.abort(&mut state, None).await {
        note(ui, "rollout_failed", format!("the abort failed: {e}"));
    }
    false
}

/// When each file was last changed.
pub(super) fn stamps(files: &[String]) -> Vec<Option<SystemTime>> {
    files
        .iter()
        .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .collect()
}

/// Rolls out what the start prepared, then deploys every change of the
/// environment files (`seen` is when they were changed as loaded) until
/// `stop`.
pub(super) async fn deploys(
    router: Arc<Router>,
    ui: Ui,
    pace: Pace,
    reload: Reload,
    (mut files, mut seen): (Vec<String>, Vec<Option<SystemTime>>),
    started: Prepared,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let work = async {
        if !resume_or_abort(&router, &ui, pace, &started).await {
            roll_out(&router, &ui, pace, &started).await;
        }
        loop {
            tokio::time::sleep(WATCH_EVERY).await;
            if stamps(&files) == seen {
                continue;
            }
            note(
                &ui,
                "reload",
                "the environment files changed: deploying".into(),
            );
            let env = match reload() {
                Ok(env) => env,
                Err(e) => {
                    failed(&ui, &e);
                    seen = stamps(&files);
                    continue;
                }
            };
            files = env.files.clone();
            seen = stamps(&files);
            let live = router
                .alias(FunctionId::Ingest)
                .and_then(|a| router.get(a.version));
            if live.is_some_and(|v| v.fingerprint == fingerprint(&env.spec)) {
                note(
                    &ui,
                    "reload",
                    "nothing the handlers read changed: no new version".into(),
                );
                continue;
            }
            match prepare(&router, &ui, &env.spec).await {
                Ok(prepared) => roll_out(&router, &ui, pace, &prepared).await,
                Err(e) => failed(&ui, &e),
            }
        }
    };
    tokio::select! {
        () = work => {}
        _ = stop.changed() => {}
    }
}

/// A change that was not deployed: the error (on stderr, as a command's),
/// and an event saying that the previous version still serves.
fn failed(ui: &Ui, error: &Error) {
    ui.error(error);
    note(
        ui,
        "deploy_failed",
        format!("not deployed, the previous version serves on: {error}"),
    );
}

/// Reads the aliases again every so often: `pipeline rollout promote` or
/// `abort` from another process moves them in the database.
pub(super) async fn follow_aliases(
    router: Arc<Router>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if let Err(e) = router.refresh().await {
            tracing::warn!(error = %e, "cannot read the aliases");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.changed() => return,
        }
    }
}
