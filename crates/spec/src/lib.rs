//! The environment spec: model, YAML reading, layering and validation.
//!
//! Nothing here does I/O beyond reading spec files, and nothing depends on
//! AWS, a database or an async runtime, so `cargo test -p pipeline-spec`
//! builds and runs in seconds.

pub mod check;
pub mod diag;
pub mod load;
pub mod model;
pub mod reference;
pub mod rules;
pub mod yaml;

pub use diag::{Problem, Sources};
pub use load::{Environment, LoadError, Loader};
pub use model::Spec;
