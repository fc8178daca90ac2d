//! Lambda entry point of the ingest function: builds the context once, then
//! serves API Gateway events through the handler in lib.rs.

use lambda_http::{Error, service_fn};
use pipeline_shared::{lambda, runtime};

#[tokio::main]
async fn main() -> Result<(), Error> {
    runtime::init_logs();
    let ctx = runtime::context_or_exit().await;
    let ctx = &ctx;
    lambda_http::run(service_fn(move |request| async move {
        let response = ingest::handle(ctx, lambda::request(request)).await;
        Ok::<_, Error>(lambda::response(response))
    }))
    .await
}
