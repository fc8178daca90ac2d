//! `pipeline deploy`: validate, build, upload, then every stack in order
//! through a change set, with live progress and the root cause of a failure.

use std::time::Instant;

use super::Cli;
use super::load;
use crate::aws::{AwsArgs, runtime};
use crate::deploy::environment::{Request, deploy};
use crate::deploy::lock::Lock;
use crate::deploy::{PackageArgs, Session, packages};
use crate::{Error, output::Ui};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Environment to deploy.
    #[arg(short, long = "env", value_name = "ENV")]
    pub env: String,
    /// Execute the change sets without asking (required without a terminal).
    #[arg(short, long)]
    pub yes: bool,
    /// Let a change replace or delete a resource that holds data (database,
    /// bucket, queue, secret, key).
    #[arg(long)]
    pub allow_replacement: bool,
    /// Remove the lock a deploy that died left behind, then deploy.
    #[arg(long)]
    pub force_unlock: bool,
    /// How new function versions take traffic [default: the spec's `rollout.strategy`].
    #[arg(long, value_name = "STRATEGY", value_parser = crate::rollout::parse_strategy)]
    pub strategy: Option<crate::spec::model::Strategy>,
    #[command(flatten)]
    pub packages: PackageArgs,
    #[command(flatten)]
    pub aws: AwsArgs,
}

/// One stack's outcome.
pub fn run(cli: &Cli, args: &Args, ui: &Ui) -> Result<(), Error> {
    let started = Instant::now();
    // A spec with problems or a failed build stops here, before any AWS call.
    let (env, synthesis) = load(cli, &args.env, ui)?;
    let packages = packages(&env, &args.packages, None, ui)?;
    runtime()?.block_on(async {
        let session = Session::open(env, synthesis, &args.aws).await;
        session.check_account().await?;
        let bootstrap = session.bootstrap().await?;
        let bucket = bootstrap.assets_bucket.as_str();
        let lock = Lock::acquire(&session, bucket, args.force_unlock).await?;
        let request = Request {
            yes: args.yes,
            allow_replacement: args.allow_replacement,
            strategy: args.strategy,
        };
        let result = deploy(&session, &request, &packages, &bootstrap, ui).await;
        lock.release(&session).await;
        let mut deployed = result?;
        deployed.seconds = started.elapsed().as_secs_f64();
        ui.event(&deployed);
        Ok(())
    })
}
