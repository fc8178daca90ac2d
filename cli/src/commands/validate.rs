//! `pipeline validate`: check specs without touching AWS.

use std::fmt;

use serde::Serialize;

use super::Cli;
use super::{Selection, invalid_summary, load_each};
use crate::spec::diag::ProblemRecord;
use crate::spec::load::Loader;
use crate::{Error, output::Ui};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub selection: Selection,
}

/// What `validate` found.
#[derive(Debug, Serialize)]
pub struct Report {
    pub environments: Vec<Checked>,
}

#[derive(Debug, Serialize)]
pub struct Checked {
    pub name: String,
    pub valid: bool,
    /// The files layered into the environment, its own first.
    pub files: Vec<String>,
    pub problems: Vec<ProblemRecord>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for env in self.environments.iter().filter(|e| e.valid) {
            writeln!(f, "ok: {} ({})", env.name, env.files.join(" <- "))?;
        }
        Ok(())
    }
}

/// With no `--env`, every environment is validated.
pub fn run(cli: &Cli, args: &Args, ui: &Ui) -> Result<(), Error> {
    let mut loader = Loader::new(cli.environments.clone());
    let names = args.selection.names(&loader, true)?;
    let outcomes = load_each(&mut loader, &names, ui)?;
    let report = Report {
        environments: outcomes
            .iter()
            .map(|o| match &o.result {
                Ok(env) => Checked {
                    name: o.name.clone(),
                    valid: true,
                    files: env.files.clone(),
                    problems: Vec::new(),
                },
                Err(problems) => Checked {
                    name: o.name.clone(),
                    valid: false,
                    files: Vec::new(),
                    problems: problems.clone(),
                },
            })
            .collect(),
    };
    ui.result(&report);
    match invalid_summary(&outcomes) {
        Some(error) => Err(error),
        None => Ok(()),
    }
}
