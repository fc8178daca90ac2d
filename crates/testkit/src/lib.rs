//! What the tests need from the machine, found once per test: Postgres,
//! moto, the OCI registry and skopeo, the pinned linters and fuzzers, and
//! cargo-lambda; and moto and the registry started on free loopback ports.
//!
//! A test that needs a service starts with [`require!`]: when the service
//! is missing the test returns at once, after one line on stderr that names
//! what is missing and how to get it. With `PIPELINE_TEST_STRICT=1` (the
//! test command sets it, and so CI) a missing service fails the test
//! instead, so that CI can never pass by skipping.

pub mod moto;
pub mod registry;
mod service;

pub use service::{Service, cargo_lambda_dir, missing, skip};

/// The repository's root.
pub fn repo() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Returns from the test when one of the services is missing (see the
/// crate's documentation): `require!(Service::Postgres, Service::Moto);`.
#[macro_export]
macro_rules! require {
    ($($service:expr),+ $(,)?) => {
        if let Some(missing) = $crate::missing(&[$($service),+]) {
            $crate::skip(concat!(module_path!(), ":", line!()), &missing);
            return;
        }
    };
}
