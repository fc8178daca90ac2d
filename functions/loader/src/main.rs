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
        if loader::is_action(&event.payload) {
            // Migrations run as the database's administrator.
            let admin = runtime::admin_context(ctx).await?;
            return loader::invoke(&admin, event.payload)
                .await
                .map_err(Error::from);
        }
        loader::invoke(ctx, event.payload)
            .await
            .map_err(Error::from)
    }))
    .await
}
