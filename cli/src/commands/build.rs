//! `pipeline build`: the function packages, built for Lambda and zipped the
//! same way on every machine.

use std::fmt;

use serde::Serialize;

use super::Cli;
use super::load;
use crate::deploy::assets::Package;
use crate::deploy::{PackageArgs, packages};
use crate::{Error, output::Ui};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Environment whose functions (architecture, datasets) to build.
    #[arg(short, long = "env", value_name = "ENV", default_value = "dev")]
    pub env: String,
    /// Build only this function.
    #[arg(long, value_name = "FUNCTION", value_parser = super::rollout::function_name())]
    pub function: Option<crate::spec::model::FunctionId>,
    #[command(flatten)]
    pub packages: PackageArgs,
}

/// The packages built.
#[derive(Debug, Serialize)]
pub struct Built {
    pub environment: String,
    pub packages: Vec<Package>,
}

impl fmt::Display for Built {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.packages {
            let what = match &p.image {
                Some(image) => format!("image {}", image.digest),
                None => format!("sha256 {}", p.sha256),
            };
            writeln!(
                f,
                "{:<7} {:<7} {:>10} bytes  {what}  {}",
                p.function,
                p.architecture,
                p.bytes,
                p.path.display()
            )?;
        }
        Ok(())
    }
}

pub fn run(cli: &Cli, args: &Args, ui: &Ui) -> Result<(), Error> {
    let (env, _) = load(cli, &args.env, ui)?;
    let packages = packages(&env, &args.packages, args.function, ui)?;
    ui.result(&Built {
        environment: env.name,
        packages,
    });
    Ok(())
}
