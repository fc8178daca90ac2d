//! `pipeline synth`: write each environment's templates, manifest and OpenAPI document.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use super::Cli;
use super::{Selection, invalid_summary, load_each};
use crate::spec::load::Loader;
use crate::{Error, output::Ui};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub selection: Selection,
    /// Directory to write into; each environment gets `<DIR>/<env>/`.
    #[arg(long, value_name = "DIR", default_value = "out")]
    pub out: PathBuf,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub environments: Vec<Written>,
}

#[derive(Debug, Serialize)]
pub struct Written {
    pub name: String,
    pub dir: String,
    pub stacks: Vec<StackLine>,
    pub files: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct StackLine {
    pub name: String,
    pub template: String,
    pub resources: usize,
    pub parameters: usize,
    pub outputs: usize,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for env in &self.environments {
            writeln!(f, "{}: {}", env.name, env.dir)?;
            for s in &env.stacks {
                writeln!(
                    f,
                    "  {:<28} {:>3} resources  {:>2} parameters  {:>2} outputs  {}",
                    s.name, s.resources, s.parameters, s.outputs, s.template
                )?;
            }
        }
        Ok(())
    }
}

pub fn run(cli: &Cli, args: &Args, ui: &Ui) -> Result<(), Error> {
    let mut loader = Loader::new(cli.environments.clone());
    let names = args.selection.names(&loader, false)?;
    // Template parsing and environment loading overlap, then each environment
    // renders and writes on its own thread; the report keeps their order.
    let (prepared, outcomes) = std::thread::scope(|s| {
        let prepared = s.spawn(crate::synth::prepare);
        let outcomes = load_each(&mut loader, &names, ui);
        (prepared.join(), outcomes)
    });
    let outcomes = outcomes?;
    if let Some(error) = invalid_summary(&outcomes) {
        return Err(error);
    }
    match prepared {
        Ok(result) => result?,
        Err(_) => {
            return Err(Error::Render {
                what: "the templates".into(),
                message: "the template parser panicked".into(),
            });
        }
    }
    let envs: Vec<_> = outcomes.into_iter().filter_map(|o| o.result.ok()).collect();
    let written: Vec<Result<Written, Error>> = std::thread::scope(|s| {
        let handles: Vec<_> = envs
            .iter()
            .map(|env| s.spawn(|| write(env, &args.out, ui)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(Error::Render {
                        what: "an environment".into(),
                        message: "rendering panicked".into(),
                    })
                })
            })
            .collect()
    });
    let report = Report {
        environments: written.into_iter().collect::<Result<_, _>>()?,
    };
    ui.result(&report);
    Ok(())
}

/// Renders one environment and writes its files under `out/<env>/`.
fn write(env: &crate::spec::Environment, out: &std::path::Path, ui: &Ui) -> Result<Written, Error> {
    let synthesis = crate::synth::synthesize(env)?;
    let dir = out.join(&env.name);
    std::fs::create_dir_all(&dir).map_err(|source| Error::Write {
        path: dir.display().to_string(),
        source,
    })?;
    for (name, text) in &synthesis.files {
        let path = dir.join(name);
        ui.info(format_args!("writing {}", path.display()));
        std::fs::write(&path, text).map_err(|source| Error::Write {
            path: path.display().to_string(),
            source,
        })?;
    }
    Ok(Written {
        name: env.name.clone(),
        dir: dir.display().to_string(),
        stacks: synthesis
            .manifest
            .stacks
            .iter()
            .map(|s| StackLine {
                name: s.name.clone(),
                template: dir.join(&s.template).display().to_string(),
                resources: s.resources,
                parameters: s.parameters.len(),
                outputs: s.outputs.len(),
            })
            .collect(),
        files: synthesis.files.iter().map(|(n, _)| n.clone()).collect(),
    })
}
