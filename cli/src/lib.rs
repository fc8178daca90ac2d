//! `pipeline`: generates, validates and deploys the ingestion pipeline's
//! CloudFormation stacks from per-environment YAML specs.

pub mod aws;
pub mod commands;
pub mod deploy;
pub mod error;
pub mod image;
pub mod output;
pub mod rollout;
pub use pipeline_spec as spec;
pub use pipeline_synth as synth;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use error::Error;
use output::{Format, Ui};

/// Generate, validate and deploy the pipeline's stacks.
#[derive(Debug, Parser)]
#[command(name = "pipeline", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Output format: `text` for people, `json` for programs.
    #[arg(long, global = true, value_enum, default_value_t = Format::Text, env = "PIPELINE_OUTPUT")]
    pub output: Format,
    /// Say more about each step (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Directory of environment files [default: ./environments, else the built-in ones].
    #[arg(long, global = true, value_name = "DIR", env = "PIPELINE_ENVIRONMENTS")]
    pub environments: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check environment specs and report every problem with its file, line and column.
    Validate(commands::validate::Args),
    /// Render the CloudFormation templates, manifest and OpenAPI document of environments.
    Synth(commands::synth::Args),
    /// List the environments with their key scale settings.
    Envs(commands::envs::Args),
    /// Print the JSON Schema of environment files, for editors.
    Schema(commands::schema::Args),
    /// Run the whole pipeline on this machine: API, storage, queue and loader, on Postgres.
    Local(commands::local::Args),
    /// Send a batch file to a dataset: inline, or through an upload when large.
    Push(commands::push::Args),
    /// Read records of a dataset, with filters.
    Query(commands::query::Args),
    /// Build the function packages for Lambda (deterministic zips).
    Build(commands::build::Args),
    /// Create or update the stack that holds an environment's deploy assets.
    Bootstrap(commands::bootstrap::Args),
    /// Deploy an environment: build, upload, then each stack through a change set.
    Deploy(commands::deploy::Args),
    /// Show what a deploy would change, without changing anything.
    Diff(commands::diff::Args),
    /// Show the stacks, function versions and outputs of an environment.
    Status(commands::status::Args),
    /// Print the stacks' outputs (API URL, function names, ...).
    Outputs(commands::outputs::Args),
    /// Delete an environment's stacks.
    Destroy(commands::destroy::Args),
    /// Print (and follow) a function's logs.
    Logs(commands::logs::Args),
    /// Finish the rollback of stacks stuck in UPDATE_ROLLBACK_FAILED.
    Recover(commands::recover::Args),
    /// Show, promote or abort the rollout of new function versions.
    Rollout(commands::rollout::Args),
    /// Check an API end to end: health, a read, a write to the smoke dataset.
    Smoke(commands::smoke::Args),
}

/// Parses the command line, runs the command and maps the result to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let ui = Ui::new(cli.output, cli.verbose);
    init_logs(cli.verbose);
    let result = match &cli.command {
        Command::Validate(args) => commands::validate::run(&cli, args, &ui),
        Command::Synth(args) => commands::synth::run(&cli, args, &ui),
        Command::Envs(args) => commands::envs::run(&cli, args, &ui),
        Command::Schema(args) => commands::schema::run(args, &ui),
        Command::Local(args) => commands::local::run(&cli, args, &ui),
        Command::Push(args) => commands::push::run(&cli, args, &ui),
        Command::Query(args) => commands::query::run(&cli, args, &ui),
        Command::Build(args) => commands::build::run(&cli, args, &ui),
        Command::Bootstrap(args) => commands::bootstrap::run(&cli, args, &ui),
        Command::Deploy(args) => commands::deploy::run(&cli, args, &ui),
        Command::Diff(args) => match commands::diff::run(&cli, args, &ui) {
            Ok(Some(code)) => return ExitCode::from(code),
            Ok(None) => Ok(()),
            // `--exit-code` keeps 2 for changes: every error is 1.
            Err(error) if args.exit_code => {
                ui.error(&error);
                return ExitCode::from(error::EXIT_FAILURE);
            }
            Err(error) => Err(error),
        },
        Command::Status(args) => commands::status::run(&cli, args, &ui),
        Command::Outputs(args) => commands::outputs::run(&cli, args, &ui),
        Command::Destroy(args) => commands::destroy::run(&cli, args, &ui),
        Command::Logs(args) => commands::logs::run(&cli, args, &ui),
        Command::Recover(args) => commands::recover::run(&cli, args, &ui),
        Command::Rollout(args) => commands::rollout::run(&cli, args, &ui),
        Command::Smoke(args) => commands::smoke::run(&cli, args, &ui),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            ui.error(&error);
            ExitCode::from(error.exit_code())
        }
    }
}

/// Logs go to stderr: warnings by default, more with `-v`, or as `RUST_LOG` says.
fn init_logs(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(
            std::env::var_os("NO_COLOR").is_none()
                && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        )
        .try_init();
}
