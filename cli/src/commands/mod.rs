//! The command line: its arguments, one module per subcommand, and what
//! they share (choosing and loading environments).

pub mod bootstrap;
pub mod build;
mod cli;
pub mod deploy;
pub mod destroy;
pub mod diff;
pub mod envs;
pub mod local;
pub mod logs;
pub mod outputs;
pub mod push;
pub mod query;
pub mod recover;
pub mod rollout;
pub mod schema;
pub mod smoke;
pub mod status;
pub mod synth;
pub mod validate;

pub use cli::{Cli, Command, main};

use crate::error::Error;
use crate::output::Ui;
use crate::spec::diag::ProblemRecord;
use crate::spec::load::{Environment, LoadError, Loader};
use crate::synth::Synthesis;

/// `--env` / `--all`, shared by the commands that take environments.
#[derive(Debug, Clone, clap::Args)]
pub struct Selection {
    /// Environment to use (repeat for several); the name of a file in the environments directory.
    #[arg(short, long = "env", value_name = "ENV", conflicts_with = "all")]
    pub envs: Vec<String>,
    /// Use every environment.
    #[arg(long)]
    pub all: bool,
}

impl Selection {
    /// The environment names chosen; all of them when `all_by_default` and none was named.
    pub fn names(&self, loader: &Loader, all_by_default: bool) -> Result<Vec<String>, Error> {
        if self.all || (self.envs.is_empty() && all_by_default) {
            return loader.names().map_err(|e| load_error(e, loader));
        }
        if self.envs.is_empty() {
            return Err(Error::NoEnvironment);
        }
        let mut names = self.envs.clone();
        names.dedup();
        Ok(names)
    }
}

/// An environment's outcome: loaded, or the problems found in it.
pub struct Outcome {
    pub name: String,
    pub result: Result<Environment, Vec<ProblemRecord>>,
}

/// Loads each environment, printing spec problems as they are found (each
/// problem once, even when several environments inherit it). Errors other
/// than spec problems stop the run.
pub fn load_each(loader: &mut Loader, names: &[String], ui: &Ui) -> Result<Vec<Outcome>, Error> {
    let mut printed = Vec::new();
    let mut outcomes = Vec::new();
    for name in names {
        ui.info(format_args!("loading environment `{name}`"));
        match loader.load(name) {
            Ok(env) => outcomes.push(Outcome {
                name: name.clone(),
                result: Ok(env),
            }),
            Err(LoadError::Invalid { problems, .. }) => {
                let fresh: Vec<_> = problems
                    .iter()
                    .filter(|p| !printed.contains(*p))
                    .cloned()
                    .collect();
                if !ui.json() {
                    ui.diagnostics(&loader.sources().render(&fresh, ui.color));
                }
                printed.extend(fresh);
                outcomes.push(Outcome {
                    name: name.clone(),
                    result: Err(loader.sources().records(&problems)),
                });
            }
            Err(e) => return Err(load_error(e, loader)),
        }
    }
    Ok(outcomes)
}

/// The error that ends a run in which some environments were invalid.
pub fn invalid_summary(outcomes: &[Outcome]) -> Option<Error> {
    let invalid: Vec<String> = outcomes
        .iter()
        .filter_map(|o| match &o.result {
            Err(problems) => {
                let n = problems.len();
                Some(format!(
                    "`{}` has {n} problem{}",
                    o.name,
                    if n == 1 { "" } else { "s" }
                ))
            }
            Ok(_) => None,
        })
        .collect();
    (!invalid.is_empty()).then(|| Error::InvalidSpec {
        summary: invalid.join(", "),
    })
}

/// Maps a loader error that is not a list of spec problems.
pub fn load_error(error: LoadError, loader: &Loader) -> Error {
    match error {
        LoadError::Unknown { name, available } => {
            let help = match crate::spec::diag::did_you_mean(
                &name,
                available.iter().map(String::as_str),
            ) {
                Some(m) => format!("did you mean `{m}`? (run `pipeline envs` to list them)"),
                None if available.is_empty() => match loader.origin() {
                    crate::spec::load::Origin::Dir(dir) => {
                        format!("{} holds no environment files", dir.display())
                    }
                    crate::spec::load::Origin::Embedded => {
                        "no environments are built in".to_string()
                    }
                },
                None => format!("the environments are: {}", available.join(", ")),
            };
            Error::UnknownEnvironment { name, help }
        }
        LoadError::BadName { name } => Error::BadEnvironmentName { name },
        LoadError::Io { path, error } => Error::Read {
            path,
            source: error,
        },
        LoadError::Invalid { name, problems } => Error::InvalidSpec {
            summary: format!("`{name}` has {} problems", problems.len()),
        },
    }
}

/// Loads an environment, printing its spec problems (with file, line and
/// column) and stopping when it has any.
pub fn load_env(cli: &Cli, name: &str, ui: &Ui) -> Result<Environment, Error> {
    let mut loader = Loader::new(cli.environments.clone());
    let outcomes = load_each(&mut loader, &[name.to_string()], ui)?;
    if let Some(error) = invalid_summary(&outcomes) {
        return Err(error);
    }
    outcomes
        .into_iter()
        .find_map(|o| o.result.ok())
        .ok_or(Error::NoEnvironment)
}

/// [`load_env`], stopping before any AWS call on a problem, then renders it.
pub fn load(cli: &Cli, name: &str, ui: &Ui) -> Result<(Environment, Synthesis), Error> {
    let env = load_env(cli, name, ui)?;
    let synthesis = crate::synth::synthesize(&env)?;
    Ok((env, synthesis))
}
