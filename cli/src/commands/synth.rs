//! `pipeline synth`: render templates, manifest and OpenAPI document.
pub use crate::synth::command::{Args, run};
