//! `pipeline local`: its arguments, and the environment it runs (the
//! emulation itself is `crate::local`).

use super::Cli;
use super::load_error;
use crate::local::{Reload, Settings, local_error, serve};
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
    let env = load_one(cli.environments.clone(), &args.env, ui)?;
    let reload: Reload = {
        let (environments, name, ui) = (cli.environments.clone(), args.env.clone(), ui.clone());
        Box::new(move || load_one(environments.clone(), &name, &ui))
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| local_error("cannot start the async runtime", e))?;
    runtime.block_on(serve(env, &args.settings, ui, reload))
}

/// Loads one environment, printing its problems.
fn load_one(
    environments: Option<std::path::PathBuf>,
    name: &str,
    ui: &Ui,
) -> Result<crate::spec::Environment, Error> {
    let mut loader = Loader::new(environments);
    let outcomes = super::load_each(&mut loader, &[name.to_string()], ui)?;
    if let Some(error) = super::invalid_summary(&outcomes) {
        return Err(error);
    }
    match outcomes.into_iter().next().map(|o| o.result) {
        Some(Ok(env)) => Ok(env),
        _ => Err(load_error(
            crate::spec::LoadError::BadName {
                name: name.to_string(),
            },
            &loader,
        )),
    }
}
