//! The emulator is at least as strict as AWS where our stacks rely on it:
//! tests of `tests/moto/server.py` itself, through the CloudFormation API
//! as the deploy engine calls it.
//! - A REST API body that API Gateway's import refuses fails the stack with
//!   the import's reason, as in AWS (moto alone imports anything).
//! - A resource that fails fails its change set asynchronously and rolls the
//!   stack back, with the resource's reason in its event (moto alone answers
//!   the error to ExecuteChangeSet and leaves the stack half made).

use crate::common;

use pipeline_testkit::{Service, require};

use aws_sdk_cloudformation::types::{ChangeSetType, StackStatus};
use serde_json::{Value, json};

async fn cloudformation(moto: &common::moto::Moto) -> aws_sdk_cloudformation::Client {
    let config = pipeline_cli::aws::config_loader()
        .region(aws_config::Region::new("eu-west-1"))
        .endpoint_url(&moto.url)
        .credentials_provider(aws_sdk_cloudformation::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .load()
        .await;
    aws_sdk_cloudformation::Client::new(&config)
}

/// Creates or updates `stack` through a change set and executes it; the
/// stack's status and its resources' failure events (logical id, reason).
async fn apply(
    cfn: &aws_sdk_cloudformation::Client,
    stack: &str,
    kind: ChangeSetType,
    template: &Value,
) -> (StackStatus, Vec<(String, String)>) {
    let name = format!("c{}", uuid::Uuid::new_v4().simple());
    cfn.create_change_set()
        .stack_name(stack)
        .change_set_name(&name)
        .change_set_type(kind)
        .template_body(template.to_string())
        .send()
        .await
        .expect("create change set");
    cfn.execute_change_set()
        .stack_name(stack)
        .change_set_name(&name)
        .send()
        .await
        .expect("execute change set: a failing resource fails the stack, not the call");
    let status = cfn
        .describe_stacks()
        .stack_name(stack)
        .send()
        .await
        .expect("describe stacks")
        .stacks()[0]
        .stack_status()
        .cloned()
        .expect("status");
    let events = cfn
        .describe_stack_events()
        .stack_name(stack)
        .send()
        .await
        .expect("events");
    let failed = events
        .stack_events()
        .iter()
        .filter(|e| {
            e.resource_status()
                .is_some_and(|s| s.as_str().ends_with("_FAILED"))
        })
        .map(|e| {
            (
                e.logical_resource_id().unwrap_or("").to_string(),
                e.resource_status_reason().unwrap_or("").to_string(),
            )
        })
        .collect();
    (status, failed)
}

fn api(body: Value) -> Value {
    json!({"Resources": {
        "Queue": {"Type": "AWS::SQS::Queue"},
        "Api": {"Type": "AWS::ApiGateway::RestApi", "Properties": {"Name": "api", "Body": body}}
    }})
}

#[tokio::test]
async fn a_rest_api_body_that_api_gateway_refuses_fails_the_stack_with_the_reason() {
    require!(Service::Moto);
    let moto = common::moto::start();
    let cfn = cloudformation(&moto).await;
    // What the API document looked like before it followed API Gateway's rules.
    let refused = json!({
        "openapi": "3.0.1", "info": {"title": "t", "version": "1"},
        "paths": {"/v1/health": {"get": {"responses": {"200": {"description": "ok"}}}}},
        "components": {"schemas": {
            "Record_events": {"type": "object"},
            "Page": {"type": "object", "properties": {"next": {"type": ["string", "null"]}}}
        }}
    });
    let (status, failed) = apply(&cfn, "refused", ChangeSetType::Create, &api(refused)).await;
    assert_eq!(status, StackStatus::RollbackComplete);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, "Api");
    assert!(
        failed[0].1.contains(
            "Unable to create model for 'Record_events': Model name must be alphanumeric"
        ),
        "{}",
        failed[0].1
    );
    assert!(
        failed[0].1.contains("Invalid OpenAPI document"),
        "{}",
        failed[0].1
    );

    // The document synth makes for dev is imported.
    let env = pipeline_cli::spec::Loader::new(Some(common::repo().join("environments")))
        .load("dev")
        .expect("dev");
    let body = pipeline_cli::synth::openapi::document("dev", &env.spec, false);
    let (status, failed) = apply(&cfn, "accepted", ChangeSetType::Create, &api(body)).await;
    assert_eq!((status, failed), (StackStatus::CreateComplete, Vec::new()));
}

#[tokio::test]
async fn an_injected_resource_failure_rolls_the_stack_back_with_its_reason() {
    require!(Service::Moto);
    let reason =
        "Resource handler returned message: \"Rate exceeded\" (HandlerErrorCode: Throttling)";
    let moto = common::moto::start_with_env(&[("PIPELINE_MOTO_FAIL", &format!("Broken={reason}"))]);
    let cfn = cloudformation(&moto).await;
    let queue = json!({"Type": "AWS::SQS::Queue"});
    // A first create that fails: nothing is left, the stack is ROLLBACK_COMPLETE.
    let template = json!({"Resources": {"Good": queue, "Broken": queue}});
    let (status, failed) = apply(&cfn, "first", ChangeSetType::Create, &template).await;
    assert_eq!(status, StackStatus::RollbackComplete);
    assert_eq!(failed, vec![("Broken".to_string(), reason.to_string())]);

    // An update that fails: UPDATE_ROLLBACK_COMPLETE, the previous template kept.
    let good = json!({"Resources": {"Good": queue}});
    let (status, _) = apply(&cfn, "second", ChangeSetType::Create, &good).await;
    assert_eq!(status, StackStatus::CreateComplete);
    let (status, failed) = apply(&cfn, "second", ChangeSetType::Update, &template).await;
    assert_eq!(status, StackStatus::UpdateRollbackComplete);
    assert_eq!(failed, vec![("Broken".to_string(), reason.to_string())]);
    let kept = cfn
        .get_template()
        .stack_name("second")
        .send()
        .await
        .expect("template");
    let kept: Value = serde_json::from_str(kept.template_body().unwrap_or("{}")).expect("JSON");
    assert_eq!(kept, good);
}
