//! The environment spec: model, YAML reading, layering and validation.

pub mod check;
pub mod diag;
pub mod load;
pub mod model;
pub mod rules;
pub mod yaml;

pub use diag::{Problem, Sources};
pub use load::{Environment, LoadError, Loader};
pub use model::Spec;
