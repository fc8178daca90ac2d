//! `pipeline destroy`: deletes the environment's stacks, newest first,
//! after saying what data outlives them.

use std::fmt;
use std::io::BufRead;

use serde::Serialize;

use crate::aws::{AwsArgs, runtime};
use crate::deploy::engine::delete_and_wait;
use crate::deploy::progress::{CliReporter, interactive};
use crate::deploy::{Session, kept_resources, load, options};
use crate::{Cli, Error, output::Ui};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Environment to destroy.
    #[arg(short, long = "env", value_name = "ENV")]
    pub env: String,
    /// Do not ask to type the environment's name.
    #[arg(short, long)]
    pub yes: bool,
    /// Destroy a prod-like environment (deletion protection or gradual rollouts).
    #[arg(long)]
    pub force: bool,
    /// Delete the bootstrap stack too (its bucket and repository are kept).
    #[arg(long)]
    pub bootstrap: bool,
    #[command(flatten)]
    pub aws: AwsArgs,
}

/// A resource that outlives its stack.
#[derive(Debug, Serialize)]
pub struct Kept {
    pub stack: String,
    pub resource: String,
    pub resource_type: String,
    /// `Retain` or `RetainExceptOnCreate` (kept as it is), or `Snapshot` (a
    /// final snapshot is taken).
    pub policy: String,
}

#[derive(Debug, Serialize)]
pub struct Destroyed {
    pub event: &'static str,
    pub environment: String,
    pub deleted: Vec<String>,
    pub kept: Vec<Kept>,
}

impl fmt::Display for Destroyed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "destroyed {}: {} stacks deleted",
            self.environment,
            self.deleted.len()
        )?;
        for k in &self.kept {
            writeln!(f, "  {}", kept_line(k))?;
        }
        Ok(())
    }
}

fn kept_line(k: &Kept) -> String {
    let what = if k.policy == "Snapshot" {
        "a final snapshot is kept"
    } else {
        "kept"
    };
    format!(
        "{} ({}) of {}: {what}",
        k.resource, k.resource_type, k.stack
    )
}

pub fn run(cli: &Cli, args: &Args, ui: &Ui) -> Result<(), Error> {
    let (env, synthesis) = load(cli, &args.env, ui)?;
    if env.spec.prod_like() && !args.force {
        return Err(Error::Refused {
            message: format!(
                "`{}` is prod-like (deletion protection or gradual rollouts); nothing was deleted",
                env.name
            ),
            help: Some("pass --force to destroy it anyway".into()),
        });
    }
    let mut stacks: Vec<(String, String)> = synthesis
        .manifest
        .stacks
        .iter()
        .rev()
        .map(|s| (s.name.clone(), s.template.clone()))
        .collect();
    if args.bootstrap {
        let b = &synthesis.manifest.bootstrap;
        stacks.push((b.name.clone(), b.template.clone()));
    }
    let mut kept = Vec::new();
    for (name, template) in &stacks {
        for (resource, resource_type, policy) in kept_resources(&synthesis, template)? {
            kept.push(Kept {
                stack: name.clone(),
                resource,
                resource_type,
                policy,
            });
        }
    }
    if !args.yes {
        if !interactive() {
            return Err(Error::Refused {
                message: format!("destroying `{}` needs a confirmation", env.name),
                help: Some("pass --yes to destroy without a terminal".into()),
            });
        }
        eprintln!("This deletes the stacks of `{}`:", env.name);
        for (name, _) in &stacks {
            eprintln!("  {name}");
        }
        for k in &kept {
            eprintln!("  {}", kept_line(k));
        }
        eprint!("Type the environment's name to go on: ");
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if answer.trim() != env.name {
            return Err(Error::Refused {
                message: "not confirmed; nothing was deleted".into(),
                help: None,
            });
        }
    }
    let destroyed = runtime()?.block_on(async {
        let session = Session::open(env, synthesis, &args.aws).await;
        session.check_account().await?;
        let reporter = CliReporter::new(ui);
        let opts = options(true, true);
        let mut deleted = Vec::new();
        for (name, _) in &stacks {
            delete_and_wait(&session.cfn, name, &opts, &reporter).await?;
            deleted.push(name.clone());
        }
        reporter.finish();
        Ok::<_, Error>(Destroyed {
            event: "destroyed",
            environment: session.env.name.clone(),
            deleted,
            kept,
        })
    })?;
    ui.event(&destroyed);
    Ok(())
}
