//! `pipeline recover`: finishes the rollback of stacks left in
//! `UPDATE_ROLLBACK_FAILED`, optionally skipping resources that cannot
//! roll back.

use std::fmt;

use serde::Serialize;

use super::Cli;
use super::load;
use crate::aws::{AwsArgs, runtime};
use crate::deploy::engine::recover_stack;
use crate::deploy::progress::CliReporter;
use crate::deploy::{Session, options};
use crate::{Error, output::Ui};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Environment to recover.
    #[arg(short, long = "env", value_name = "ENV")]
    pub env: String,
    /// Logical id of a resource to leave as it is (repeat for several).
    #[arg(long, value_name = "RESOURCE")]
    pub skip: Vec<String>,
    #[command(flatten)]
    pub aws: AwsArgs,
}

#[derive(Debug, Serialize)]
pub struct Recovered {
    pub event: &'static str,
    pub environment: String,
    pub recovered: Vec<String>,
}

impl fmt::Display for Recovered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.recovered.is_empty() {
            return writeln!(f, "no stack of {} needed recovering", self.environment);
        }
        for s in &self.recovered {
            writeln!(f, "{s}: rolled back; deploy again to apply the templates")?;
        }
        Ok(())
    }
}

pub fn run(cli: &Cli, args: &Args, ui: &Ui) -> Result<(), Error> {
    let (env, synthesis) = load(cli, &args.env, ui)?;
    let recovered = runtime()?.block_on(async {
        let session = Session::open(env, synthesis, &args.aws).await;
        session.check_account().await?;
        let reporter = CliReporter::new(ui);
        let opts = options(true, false);
        let mut recovered = Vec::new();
        for m in &session.synthesis.manifest.stacks {
            if recover_stack(&session.cfn, &m.name, &args.skip, &opts, &reporter)
                .await?
                .is_some()
            {
                recovered.push(m.name.clone());
            }
        }
        reporter.finish();
        Ok::<_, Error>(Recovered {
            event: "recovered",
            environment: session.env.name.clone(),
            recovered,
        })
    })?;
    ui.event(&recovered);
    Ok(())
}
