//! `pipeline outputs`: the stacks' outputs (API URL, function names, ...).

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::Cli;
use super::load;
use crate::aws::{AwsArgs, runtime};
use crate::deploy::Session;
use crate::{Error, output::Ui};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Environment whose outputs to show.
    #[arg(short, long = "env", value_name = "ENV")]
    pub env: String,
    #[command(flatten)]
    pub aws: AwsArgs,
}

/// Outputs by stack name.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct Outputs(pub BTreeMap<String, BTreeMap<String, String>>);

impl fmt::Display for Outputs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (stack, outputs) in &self.0 {
            writeln!(f, "{stack}")?;
            for (k, v) in outputs {
                writeln!(f, "  {k:<28} {v}")?;
            }
        }
        Ok(())
    }
}

pub fn run(cli: &Cli, args: &Args, ui: &Ui) -> Result<(), Error> {
    let (env, synthesis) = load(cli, &args.env, ui)?;
    let outputs = runtime()?.block_on(async {
        let session = Session::open(env, synthesis, &args.aws).await;
        let mut all = BTreeMap::new();
        for (m, stack) in session.stacks().await? {
            if let Some(stack) = stack {
                all.insert(m.name, stack.outputs);
            }
        }
        if all.is_empty() {
            return Err(Error::Rejected {
                message: format!("`{}` has no deployed stacks", session.env.name),
            });
        }
        Ok(Outputs(all))
    })?;
    ui.result(&outputs);
    Ok(())
}
