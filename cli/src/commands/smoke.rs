//! `pipeline smoke`: checks an API end to end (`crate::smoke`): health, a
//! read, and a write to the dedicated smoke dataset only.

use super::Cli;
use crate::client::{Api, Target, client_error};
use crate::smoke::check;
use crate::{Error, output::Ui};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    /// Longest wait for the smoke batch to load, in seconds.
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    pub timeout: u64,
}

pub fn run(cli: &Cli, args: &Args, ui: &Ui) -> Result<(), Error> {
    let env = super::load_env(cli, &args.target.env, ui)?;
    let api = Api::new(&args.target)?.with_auth(env.spec.api.auth, &env.spec.region);
    let runtime = crate::aws::runtime()?;
    let smoke = runtime.block_on(check(&api, &env.spec.datasets, args.timeout));
    ui.result(&smoke);
    if smoke.passed {
        Ok(())
    } else {
        Err(client_error(format!(
            "{} failed its smoke checks",
            smoke.url
        )))
    }
}
