//! `pipeline rollout status|promote|abort`: the rollout in flight (or the
//! last one), as its state record and the aliases show it; finish it either
//! way, for example after a CI job was killed mid-bake.

use std::fmt;

use super::Cli;
use super::load;
use crate::aws::{AwsArgs, runtime};
use crate::deploy::Session;
use crate::deploy::watch::GateVersions;
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
    let (env, synthesis) = load(cli, &target.env, ui)?;
    runtime()?.block_on(async {
        let session = Session::open(env, synthesis, &target.aws).await;
        let bucket = session.bootstrap().await?.assets_bucket;
        let store = S3Store {
            client: session.clients.s3.clone(),
            bucket,
        };
        let failed = |e: crate::rollout::CallError| Error::Aws { message: e.0 };
        let Some(mut state) = store.load(&session.env.name).await.map_err(failed)? else {
            return Err(Error::Rejected {
                message: format!("`{}` has no rollout", session.env.name),
            });
        };
        if matches!(args.action, Action::Status(_)) {
            if let Some(f) = &target.function {
                state.targets.retain(|t| t.function == *f);
            }
            ui.result(&state);
            return Ok(());
        }
        if state.phase != Phase::InProgress {
            return Err(Error::Refused {
                message: format!("the last rollout of `{}` is over", session.env.name),
                help: Some("`pipeline rollout status` shows how it ended".into()),
            });
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
        let function = target.function;
        if let Some(f) = function
            && !state.targets.iter().any(|t| t.function == f)
        {
            return Err(Error::Rejected {
                message: format!(
                    "`{f}` takes no part in the rollout of `{}`",
                    state.environment
                ),
            });
        }
        match args.action {
            Action::Promote(_) => rollouts.promote(&mut state, function).await,
            _ => rollouts.abort(&mut state, function).await,
        }
        .map_err(failed)?;
        Ok(())
    })
}
