//! Code shared by the pipeline's functions and by the `pipeline` CLI.
//!
//! The dataset model is `pipeline-dataset`'s, re-exported here as
//! [`dataset`], so that the spec the CLI validates and the handlers that
//! enforce it at run time read one definition; the batch decoder is
//! `pipeline-records`', re-exported as [`records`].

pub mod api;
pub mod chunks;
pub mod compression;
pub mod db;
pub mod iam;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod runtime;
pub mod store;

pub use pipeline_dataset as dataset;
pub use pipeline_dataset::{Column, ColumnType, Dataset, Format, OnConflict};
pub use pipeline_records as records;
