//! `pipeline`: generates, validates and deploys the ingestion pipeline's
//! CloudFormation stacks from per-environment YAML specs.

pub mod aws;
pub mod chain;
pub mod client;
pub mod commands;
pub mod deploy;
pub mod error;
pub mod http;
pub mod image;
pub mod local;
pub mod output;
pub mod rollout;
pub mod smoke;
pub use pipeline_spec as spec;
pub use pipeline_synth as synth;

pub use commands::{Cli, Command, main};
pub use error::Error;
