//! `pipeline diff`: what a deploy would change, stack by stack, without
//! changing anything (the change sets are deleted again).

use std::fmt;

use serde::Serialize;

use super::Cli;
use super::load;
use crate::aws::{AwsArgs, runtime};
use crate::deploy::cfn::Change;
use crate::deploy::engine::{change_line, preview_stack};
use crate::deploy::{PackageArgs, Session, options, packages};
use crate::{Error, output::Ui};

/// `--exit-code`: changes found.
pub const EXIT_CHANGES: u8 = 2;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Environment to compare with its templates.
    #[arg(short, long = "env", value_name = "ENV")]
    pub env: String,
    /// Exit 0 when nothing would change, 2 when something would, 1 on error.
    #[arg(long)]
    pub exit_code: bool,
    #[command(flatten)]
    pub packages: PackageArgs,
    #[command(flatten)]
    pub aws: AwsArgs,
}

#[derive(Debug, Serialize)]
pub struct StackDiff {
    pub name: String,
    /// `create` (the stack does not exist), `update` or `none`.
    pub action: &'static str,
    pub changes: Vec<Change>,
}

#[derive(Debug, Serialize)]
pub struct Diff {
    pub environment: String,
    pub changed: bool,
    pub stacks: Vec<StackDiff>,
}

impl fmt::Display for Diff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.stacks {
            match s.action {
                "none" => writeln!(f, "{}: no changes", s.name)?,
                action => {
                    writeln!(f, "{}: {action}", s.name)?;
                    for c in &s.changes {
                        writeln!(f, "  {}", change_line(c))?;
                    }
                }
            }
        }
        if !self.changed {
            writeln!(f, "{} is up to date", self.environment)?;
        }
        Ok(())
    }
}

/// Runs the diff; `Some(code)` is the exit code `--exit-code` asks for.
pub fn run(cli: &Cli, args: &Args, ui: &Ui) -> Result<Option<u8>, Error> {
    let (env, synthesis) = load(cli, &args.env, ui)?;
    let packages = packages(&env, &args.packages, None, ui)?;
    let diff = runtime()?.block_on(async {
        let session = Session::open(env, synthesis, &args.aws).await;
        // Without a bootstrap stack nothing was deployed: every stack is new.
        let bootstrap = session.bootstrap().await.ok();
        let opts = options(true, true);
        let mut outputs = std::collections::BTreeMap::new();
        let mut stacks = Vec::new();
        for (m, current) in session.stacks().await? {
            let (action, changes) = match &current {
                None => (
                    "create",
                    crate::deploy::resources(&session.synthesis, &m.template)?
                        .into_iter()
                        .map(|(id, kind)| Change {
                            action: "Add".into(),
                            logical_id: id,
                            resource_type: kind,
                            replacement: None,
                        })
                        .collect(),
                ),
                Some(stack) => {
                    let plan = session
                        .plan(&m, &outputs, &packages, bootstrap.as_ref(), Some(stack))
                        .await?;
                    match preview_stack(&session.cfn, &plan, &opts).await? {
                        Some(changes) => ("update", changes),
                        None => ("none", Vec::new()),
                    }
                }
            };
            if let Some(stack) = current {
                outputs.insert(m.id.to_string(), stack.outputs);
            }
            stacks.push(StackDiff {
                name: m.name.clone(),
                action,
                changes,
            });
        }
        Ok::<_, Error>(Diff {
            environment: session.env.name.clone(),
            changed: stacks.iter().any(|s| s.action != "none"),
            stacks,
        })
    })?;
    ui.result(&diff);
    Ok(args
        .exit_code
        .then_some(if diff.changed { EXIT_CHANGES } else { 0 }))
}
