//! Lambda entry point of the loader: builds the context once, then handles
//! SQS events, or the `{"action": "migrate"}` the deploy invokes it with.

#![recursion_limit = "256"]

use lambda_runtime::{Error, LambdaEvent, service_fn};
use pipeline_shared::runtime;
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    runtime::init_logs();
    let ctx = runtime::context_from_env().await?;
    let ctx = &ctx;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        loader::invoke(ctx, event.payload)
            .await
            .map_err(Error::from)
    }))
    .await
}
