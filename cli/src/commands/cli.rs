//! The command line: the arguments every command takes, the subcommands,
//! and the dispatch from a parsed command line to its exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error;
use crate::output::{Format, Ui};

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
    Validate(super::validate::Args),
    /// Render the CloudFormation templates, manifest and OpenAPI document of environments.
    Synth(super::synth::Args),
    /// List the environments with their key scale settings.
    Envs(super::envs::Args),
    /// Print the JSON Schema of environment files, for editors.
    Schema(super::schema::Args),
    /// Run the whole pipeline on this machine: API, storage, queue and loader, on Postgres.
    Local(super::local::Args),
    /// Send a batch file to a dataset: inline, or through an upload when large.
    Push(super::push::Args),
    /// Read records of a dataset, with filters.
    Query(super::query::Args),
    /// Build the function packages for Lambda (deterministic zips).
    Build(super::build::Args),
    /// Create or update the stack that holds an environment's deploy assets.
    Bootstrap(super::bootstrap::Args),
    /// Deploy an environment: build, upload, then each stack through a change set.
    Deploy(super::deploy::Args),
    /// Show what a deploy would change, without changing anything.
    Diff(super::diff::Args),
    /// Show the stacks, function versions and outputs of an environment.
    Status(super::status::Args),
    /// Print the stacks' outputs (API URL, function names, ...).
    Outputs(super::outputs::Args),
    /// Delete an environment's stacks.
    Destroy(super::destroy::Args),
    /// Print (and follow) a function's logs.
    Logs(super::logs::Args),
    /// Finish the rollback of stacks stuck in UPDATE_ROLLBACK_FAILED.
    Recover(super::recover::Args),
    /// Show, promote or abort the rollout of new function versions.
    Rollout(super::rollout::Args),
    /// Check an API end to end: health, a read, a write to the smoke dataset.
    Smoke(super::smoke::Args),
}

/// Parses the command line, runs the command and maps the result to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let ui = Ui::new(cli.output, cli.verbose);
    init_logs(cli.verbose);
    let result = match &cli.command {
        Command::Validate(args) => super::validate::run(&cli, args, &ui),
        Command::Synth(args) => super::synth::run(&cli, args, &ui),
        Command::Envs(args) => super::envs::run(&cli, args, &ui),
        Command::Schema(args) => super::schema::run(args, &ui),
        Command::Local(args) => super::local::run(&cli, args, &ui),
        Command::Push(args) => super::push::run(&cli, args, &ui),
        Command::Query(args) => super::query::run(&cli, args, &ui),
        Command::Build(args) => super::build::run(&cli, args, &ui),
        Command::Bootstrap(args) => super::bootstrap::run(&cli, args, &ui),
        Command::Deploy(args) => super::deploy::run(&cli, args, &ui),
        Command::Diff(args) => match super::diff::run(&cli, args, &ui) {
            Ok(Some(code)) => return ExitCode::from(code),
            Ok(None) => Ok(()),
            // `--exit-code` keeps 2 for changes: every error is 1.
            Err(error) if args.exit_code => {
                ui.error(&error);
                return ExitCode::from(error::EXIT_FAILURE);
            }
            Err(error) => Err(error),
        },
        Command::Status(args) => super::status::run(&cli, args, &ui),
        Command::Outputs(args) => super::outputs::run(&cli, args, &ui),
        Command::Destroy(args) => super::destroy::run(&cli, args, &ui),
        Command::Logs(args) => super::logs::run(&cli, args, &ui),
        Command::Recover(args) => super::recover::run(&cli, args, &ui),
        Command::Rollout(args) => super::rollout::run(&cli, args, &ui),
        Command::Smoke(args) => super::smoke::run(&cli, args, &ui),
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
