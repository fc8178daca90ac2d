//! `pipeline local`: its arguments, and the environment it runs (the
//! emulation itself is `crate::local`).

use super::Cli;
use super::{Selection, load_error};
use crate::local::{Settings, local_error, serve};
use crate::spec::load::Loader;
use crate::{Error, output::Ui};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Environment whose datasets, auth and queue settings to use.
    #[arg(short, long = "env", value_name = "ENV", default_value = "dev")]
    pub env: String,
    #[command(flatten)]
    pub settings: Settings,
}

pub fn run(cli: &Cli, args: &Args, ui: &Ui) -> Result<(), Error> {
    let mut loader = Loader::new(cli.environments.clone());
    let selection = Selection {
        envs: vec![args.env.clone()],
        all: false,
    };
    let names = selection.names(&loader, false)?;
    let outcomes = super::load_each(&mut loader, &names, ui)?;
    if let Some(error) = super::invalid_summary(&outcomes) {
        return Err(error);
    }
    let env = match outcomes.into_iter().next().map(|o| o.result) {
        Some(Ok(env)) => env,
        _ => {
            return Err(load_error(
                crate::spec::LoadError::BadName {
                    name: args.env.clone(),
                },
                &loader,
            ));
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| local_error("cannot start the async runtime", e))?;
    runtime.block_on(serve(env, &args.settings, ui))
}
