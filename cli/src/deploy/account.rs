//! The account's API Gateway CloudWatch logging role: one setting per
//! account and region, which a stage's access logging needs.
//!
//! The bootstrap stack makes the role; the bootstrap command then sets it,
//! instead of an `AWS::ApiGateway::Account` resource in the stack. That
//! resource fails when API Gateway checks the role before IAM has made it
//! visible to API Gateway (IAM changes are eventually consistent), which is
//! right after the stack created it; and it overwrote whatever role the
//! account had. Here a role already set is kept, and a new one is set with
//! retries while API Gateway refuses it.

use std::time::Duration;

use serde::Serialize;

use crate::Error;
use crate::aws::aws_error;

/// What API Gateway answers while IAM has not yet made a new role visible
/// to it.
const NOT_YET: &str = "does not have required permissions";

/// Tries before giving up: with the waits doubling from the poll interval
/// (2 s), about two minutes in all.
const ATTEMPTS: u32 = 7;

/// The account's logging role after the bootstrap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum LoggingRole {
    /// The account had a role; it is left as it was.
    Kept { arn: String },
    /// The bootstrap's role was set, at the `attempts`th try.
    Set { arn: String, attempts: u32 },
}

/// Sets `role` as the account's logging role unless one is set already,
/// trying again while API Gateway does not yet accept it.
pub async fn ensure_logging_role(
    client: &aws_sdk_apigateway::Client,
    env: &str,
    role: &str,
    first_wait: Duration,
) -> Result<LoggingRole, Error> {
    let account = client
        .get_account()
        .send()
        .await
        .map_err(|e| aws_error("cannot read API Gateway's account settings", e))?;
    if let Some(arn) = account.cloudwatch_role_arn().filter(|a| !a.is_empty()) {
        return Ok(LoggingRole::Kept {
            arn: arn.to_string(),
        });
    }
    let mut wait = first_wait;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = client
            .update_account()
            .patch_operations(
                aws_sdk_apigateway::types::PatchOperation::builder()
                    .op(aws_sdk_apigateway::types::Op::Replace)
                    .path("/cloudwatchRoleArn")
                    .value(role)
                    .build(),
            )
            .send()
            .await;
        let reason = match result {
            Ok(_) => {
                return Ok(LoggingRole::Set {
                    arn: role.to_string(),
                    attempts: attempt,
                });
            }
            Err(e) => match e.as_service_error() {
                Some(service) if service.is_bad_request_exception() => {
                    let message = service.meta().message().unwrap_or_default().to_string();
                    if !message.contains(NOT_YET) {
                        return Err(aws_error("cannot set API Gateway's logging role", e));
                    }
                    message
                }
                _ => return Err(aws_error("cannot set API Gateway's logging role", e)),
            },
        };
        if attempt >= ATTEMPTS {
            return Err(Error::LoggingRole {
                env: env.to_string(),
                role: role.to_string(),
                attempts: attempt,
                reason,
            });
        }
        tokio::time::sleep(wait).await;
        wait *= 2;
    }
}
