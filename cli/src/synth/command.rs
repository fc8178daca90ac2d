use crate::{Cli, Error, output::Ui};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub selection: crate::commands::Selection,
}

pub fn run(_cli: &Cli, _args: &Args, _ui: &Ui) -> Result<(), Error> {
    Ok(())
}
