//! `pipeline bootstrap`: the stack that holds what deploys upload (function
//! packages, large templates, images). Running it again changes nothing.

use std::fmt;

use serde::Serialize;

use super::Cli;
use super::load;
use crate::aws::{AwsArgs, runtime};
use crate::deploy::account::{LoggingRole, ensure_logging_role};
use crate::deploy::engine::{StackPlan, deploy_stack};
use crate::deploy::progress::CliReporter;
use crate::deploy::{Bootstrap, Session, options, poll_interval, resources};
use crate::{Error, output::Ui};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Environment to bootstrap.
    #[arg(short, long = "env", value_name = "ENV")]
    pub env: String,
    #[command(flatten)]
    pub aws: AwsArgs,
}

impl fmt::Display for Bootstrap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} is ready", self.stack)?;
        writeln!(f, "  assets bucket  {}", self.assets_bucket)?;
        writeln!(f, "  repository     {}", self.repository_uri)
    }
}

/// What `bootstrap` reports: the stack's outputs and the account's API
/// Gateway logging role.
#[derive(Debug, Serialize)]
pub struct Bootstrapped {
    #[serde(flatten)]
    pub bootstrap: Bootstrap,
    pub logging_role: LoggingRole,
}

impl fmt::Display for Bootstrapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.bootstrap)?;
        match &self.logging_role {
            LoggingRole::Kept { arn } => {
                writeln!(f, "  API logging    {arn} (the account's, kept)")
            }
            LoggingRole::Set { arn, .. } => writeln!(f, "  API logging    {arn} (set)"),
        }
    }
}

pub fn run(cli: &Cli, args: &Args, ui: &Ui) -> Result<(), Error> {
    let (env, synthesis) = load(cli, &args.env, ui)?;
    runtime()?.block_on(async {
        let session = Session::open(env, synthesis, &args.aws).await;
        session.check_account().await?;
        let manifest = &session.synthesis.manifest;
        let plan = StackPlan {
            name: manifest.bootstrap.name.clone(),
            template: session
                .template_source(&session.synthesis, None, &manifest.bootstrap.template)
                .await?,
            parameters: Default::default(),
            tags: manifest.tags.clone(),
            resources: resources(&session.synthesis, &manifest.bootstrap.template)?,
        };
        let reporter = CliReporter::new(ui);
        // Creating the bootstrap stack needs no confirmation: it only adds
        // an empty bucket and repository.
        deploy_stack(
            &session.cfn,
            &plan,
            &options(true, false),
            &reporter,
            &reporter,
        )
        .await?;
        reporter.finish();
        let bootstrap = session.bootstrap().await?;
        let logging_role = ensure_logging_role(
            &session.clients.apigateway,
            &session.env.name,
            &bootstrap.api_logging_role,
            poll_interval(),
        )
        .await?;
        ui.event(&Bootstrapped {
            bootstrap,
            logging_role,
        });
        Ok(())
    })
}
