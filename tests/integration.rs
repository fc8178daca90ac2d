//! The integration tests, one binary: the real `pipeline` binary and the
//! libraries against real Postgres, moto, an OCI registry and the pinned
//! linters and fuzzer. A test whose service is missing says so and is
//! skipped (`pipeline_testkit::require!`); the test command sets
//! `PIPELINE_TEST_STRICT=1`, which makes such a skip a failure.

mod common;

mod build;
mod cli;
mod cuts;
mod deliveries;
mod deploy;
mod destroy;
mod emulator;
mod events;
mod image;
mod lint;
mod local;
mod skew;
mod slices;
mod synth;
