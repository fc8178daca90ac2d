//! `pipeline local`: its arguments, and the environment it runs (the
//! emulation itself is `crate::local`).

use std::path::PathBuf;

use pipeline_shared::runtime::DEFAULT_CHUNK_BYTES;
use pipeline_shared::store::DEFAULT_UPLOAD_PART_BYTES;

use super::Cli;
use super::{Selection, load_error};
use crate::local::{Settings, local_error, serve};
use crate::spec::load::Loader;
use crate::{Error, output::Ui};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Environment whose datasets, auth and queue settings to use.
    #[arg(short, long = "env", value_name = "ENV", default_value = "dev")]
    pub env: String,
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Where objects and the API key are kept [default: .pipeline/<env>].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Postgres to use; the database `pipeline_<env>` is created in it if missing.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub database_url: String,
    /// Loader workers running at once.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Seconds before a failed or abandoned message is delivered again
    /// [default: the queue's visibility timeout, at most 30].
    #[arg(long, value_name = "SECONDS")]
    pub retry_after: Option<u64>,
    /// NDJSON objects larger than this many bytes load in parallel chunks of
    /// about this size (0: never).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_CHUNK_BYTES)]
    pub chunk_size: u64,
    /// Uploads larger than this many bytes are multipart uploads, in parts of
    /// this size.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_UPLOAD_PART_BYTES,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub upload_part_size: u64,
}

impl Args {
    fn settings(&self) -> Settings {
        Settings {
            port: self.port,
            data_dir: self.data_dir.clone(),
            database_url: self.database_url.clone(),
            workers: self.workers,
            retry_after: self.retry_after,
            chunk_size: self.chunk_size,
            upload_part_size: self.upload_part_size,
        }
    }
}

pub fn run(cli: &Cli, args: &Args, ui: &Ui) -> Result<(), Error> {
    let mut loader = Loader::new(cli.environments.clone());
    let selection = Selection {
        envs: vec![args.env.clone()],
        all: false,
    };
    let names = selection.names(&loader, false)?;
    let outcomes = super::load_each(&mut loader, &names, ui)?;
    if let Some(error) = super::invalid_summary(&outcomes) {
        return Err(error);
    }
    let env = match outcomes.into_iter().next().map(|o| o.result) {
        Some(Ok(env)) => env,
        _ => {
            return Err(load_error(
                crate::spec::LoadError::BadName {
                    name: args.env.clone(),
                },
                &loader,
            ));
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| local_error("cannot start the async runtime", e))?;
    runtime.block_on(serve(env, &args.settings(), ui))
}
