//! Lambda entry point of the loader: builds the context once, then handles
//! SQS events, or the `{"action": "migrate"}` the deploy invokes it with.

#![recursion_limit = "256"]

use lambda_runtime::{Diagnostic, Error, LambdaEvent, service_fn};
use pipeline_shared::runtime;
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    runtime::init_logs();
    let ctx = runtime::context_or_exit().await;
    let ctx = &ctx;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        if loader::is_migration(&event.payload) {
            // Migrations run as the database's administrator.
            let admin = runtime::admin_context(ctx)
                .await
                .map_err(|e| diagnostic("ConfigError", e))?;
            return loader::invoke(&admin, event.payload, None)
                .await
                .map_err(|e| diagnostic(e.kind(), e));
        }
        // Lambda stops the function at its deadline: the loader stops its
        // work a little before, to record what it could not finish.
        let remaining = std::time::Duration::from_millis(
            event
                .context
                .deadline
                .saturating_sub(chrono::Utc::now().timestamp_millis().max(0) as u64),
        );
        let margin = loader::deadline_margin(remaining);
        let deadline = tokio::time::Instant::now() + remaining.saturating_sub(margin);
        loader::invoke(ctx, event.payload, Some((deadline, margin)))
            .await
            .map_err(|e| diagnostic(e.kind(), e))
    }))
    .await
}

/// An invocation's error as Lambda reports it: the error's kind (rather
/// than the Rust type name the runtime would give a boxed error) and its
/// message.
fn diagnostic(kind: &str, error: impl std::fmt::Display) -> Diagnostic {
    Diagnostic {
        error_type: kind.into(),
        error_message: error.to_string(),
    }
}
