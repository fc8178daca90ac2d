//! `pipeline rollout status|promote|abort`: the rollout in flight (or the
//! last one), as its state record and the aliases show it; finish it either
//! way, for example after a CI job was killed mid-bake.

use std::fmt;

use super::Cli;
use super::load;
use crate::aws::{AwsArgs, runtime};
use crate::deploy::Session;
use crate::deploy::watch::GateVersions;
use crate::local::local_error;
use crate::rollout::aws::{CloudWatch, Lambda, S3Store};
use crate::rollout::{Phase, Rollouts, State, Store, SystemClock};
use crate::spec::model::FunctionId;
use crate::{Error, output::Ui};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Show the rollout in flight, or the last one.
    Status(Target),
    /// Give the new versions all the traffic now.
    Promote(Target),
    /// Send all the traffic back to the previous versions now.
    Abort(Target),
}

#[derive(Debug, clap::Args)]
pub struct Target {
    /// Environment of the rollout.
    #[arg(short, long = "env", value_name = "ENV")]
    pub env: String,
    /// Only this function (the others' rollout goes on).
    #[arg(short, long, value_parser = function_name())]
    pub function: Option<FunctionId>,
    /// The rollouts of `pipeline local` (kept in its Postgres), not AWS's.
    #[arg(long)]
    pub local: bool,
    /// With `--local`: the Postgres `pipeline local` runs on.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub database_url: String,
    #[command(flatten)]
    pub aws: AwsArgs,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let phase = match self.phase {
            Phase::InProgress => "in progress",
            Phase::Promoted => "promoted",
            Phase::RolledBack => "rolled back",
            Phase::Aborted => "aborted",
        };
        writeln!(
            f,
            "{} rollout of {}: {phase}, step {}/{}, new versions take {}%",
            self.strategy.as_str(),
            self.environment,
            self.step + 1,
            self.steps.len(),
            self.percent()
        )?;
        writeln!(
            f,
            "  started {}, updated {}",
            self.started_at, self.updated_at
        )?;
        for t in &self.targets {
            writeln!(f, "  {:<8} {} → {}", t.function, t.from, t.to)?;
        }
        for a in &self.alarms {
            writeln!(f, "  {} was in ALARM: {}", a.name, a.reason)?;
        }
        Ok(())
    }
}

/// `--function`: one of the functions' names, listed in `--help`.
pub fn function_name() -> impl clap::builder::TypedValueParser<Value = FunctionId> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(FunctionId::ALL.map(FunctionId::as_str))
        .try_map(|name| name.parse::<FunctionId>())
}

pub fn run(cli: &Cli, args: &Args, ui: &Ui) -> Result<(), Error> {
    let target = match &args.action {
        Action::Status(t) | Action::Promote(t) | Action::Abort(t) => t,
    };
    if target.local {
        return runtime()?.block_on(run_local(&args.action, target, ui));
    }
    let (env, synthesis) = load(cli, &target.env, ui)?;
    runtime()?.block_on(async {
        let session = Session::open(env, synthesis, &target.aws).await;
        let bucket = session.bootstrap().await?.assets_bucket;
        let store = S3Store {
            client: session.clients.s3.clone(),
            bucket,
        };
        let failed = |e: crate::rollout::CallError| Error::Aws { message: e.0 };
        let mut state = stored(&store, &session.env.name, failed).await?;
        if !to_finish(&args.action, target, &mut state, ui)? {
            return Ok(());
        }
        session.check_account().await?;
        let reporter = crate::deploy::progress::CliReporter::new(ui);
        let rollouts = Rollouts {
            aliases: &Lambda {
                client: session.clients.lambda.clone(),
            },
            gates: &CloudWatch::new(&session.clients.config),
            watch: &GateVersions { session: &session },
            store: &store,
            clock: &SystemClock,
            reporter: &reporter,
            alarms: Vec::new(),
            poll: std::time::Duration::from_secs(1),
            // Promote and abort end a rollout at once: nothing bakes.
            min_invocations: Default::default(),
        };
        finish(&rollouts, &args.action, &mut state, target.function)
            .await
            .map_err(failed)
    })
}

/// The same against `pipeline local`: its record and aliases are in its
/// database, and the running `pipeline local` follows what they say.
async fn run_local(action: &Action, target: &Target, ui: &Ui) -> Result<(), Error> {
    let pool = crate::local::environment_pool(&target.database_url, &target.env).await?;
    let store = crate::local::PgStore { pool: pool.clone() };
    let failed = |e: crate::rollout::CallError| local_error("cannot read the rollout", e);
    let mut state = stored(&store, &target.env, failed).await?;
    if !to_finish(action, target, &mut state, ui)? {
        return Ok(());
    }
    let gates = crate::local::LocalGates::new(None);
    let reporter = crate::deploy::progress::CliReporter::new(ui);
    let rollouts = Rollouts {
        aliases: &crate::local::LocalAliases {
            pool: &pool,
            router: None,
        },
        gates: &gates,
        watch: &gates,
        store: &store,
        clock: &SystemClock,
        reporter: &reporter,
        alarms: Vec::new(),
        poll: std::time::Duration::from_secs(1),
        min_invocations: Default::default(),
    };
    finish(&rollouts, action, &mut state, target.function)
        .await
        .map_err(|e| local_error("the rollout", e))
}

/// The environment's rollout record; an error when it has none.
async fn stored(
    store: &impl Store,
    env: &str,
    failed: impl Fn(crate::rollout::CallError) -> Error,
) -> Result<State, Error> {
    store
        .load(env)
        .await
        .map_err(failed)?
        .ok_or_else(|| Error::Rejected {
            message: format!("`{env}` has no rollout"),
        })
}

/// Shows the rollout for `status` (`false`: nothing more to do), or checks
/// that a promote or an abort can finish it.
fn to_finish(action: &Action, target: &Target, state: &mut State, ui: &Ui) -> Result<bool, Error> {
    if matches!(action, Action::Status(_)) {
        if let Some(f) = &target.function {
            state.targets.retain(|t| t.function == *f);
        }
        ui.result(state);
        return Ok(false);
    }
    if state.phase != Phase::InProgress {
        return Err(Error::Refused {
            message: format!("the last rollout of `{}` is over", state.environment),
            help: Some("`pipeline rollout status` shows how it ended".into()),
        });
    }
    if let Some(f) = target.function
        && !state.targets.iter().any(|t| t.function == f)
    {
        return Err(Error::Rejected {
            message: format!(
                "`{f}` takes no part in the rollout of `{}`",
                state.environment
            ),
        });
    }
    Ok(true)
}

/// Promotes or aborts.
async fn finish<A, G, W, S, C, R>(
    rollouts: &Rollouts<'_, A, G, W, S, C, R>,
    action: &Action,
    state: &mut State,
    function: Option<FunctionId>,
) -> Result<(), crate::rollout::CallError>
where
    A: crate::rollout::Aliases,
    G: crate::rollout::Gates,
    W: crate::rollout::Watch,
    S: Store,
    C: crate::rollout::Clock,
    R: crate::rollout::Reporter,
{
    match action {
        Action::Promote(_) => rollouts.promote(state, function).await,
        _ => rollouts.abort(state, function).await,
    }
}
