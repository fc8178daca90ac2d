//! The CloudFormation calls the engine makes, behind a small trait: the AWS
//! SDK in real runs, a scripted fake in the engine's tests.

use std::collections::BTreeMap;

use serde::Serialize;

/// A failed CloudFormation call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CfnError {
    /// The service's error code, such as `ValidationError`, when it gave one.
    pub code: Option<String>,
    pub message: String,
}

impl CfnError {
    pub fn new(message: impl Into<String>) -> CfnError {
        CfnError {
            code: None,
            message: message.into(),
        }
    }
}

/// A stack as `DescribeStacks` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stack {
    pub name: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// Last update, or creation when never updated (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<String>,
    pub outputs: BTreeMap<String, String>,
    pub parameters: BTreeMap<String, String>,
}

/// Whether a change set creates the stack or updates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeSetKind {
    Create,
    Update,
}

/// Where CloudFormation reads a template from: the body itself (at most
/// 51,200 bytes), an S3 URL, or the template the stack has now
/// (`UsePreviousTemplate`, for a change of parameters only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateSource {
    Body(String),
    Url(String),
    Previous,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeSetRequest {
    pub stack: String,
    pub name: String,
    pub kind: ChangeSetKind,
    pub template: TemplateSource,
    pub parameters: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
    pub description: String,
}

/// What a change does to a resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// `Add`, `Modify`, `Remove`, `Import` or `Dynamic`.
    pub action: String,
    pub logical_id: String,
    pub resource_type: String,
    /// For `Modify`: `True`, `False` or `Conditional`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
}

impl Change {
    /// Whether the change deletes the resource's current physical resource.
    pub fn destroys(&self) -> bool {
        self.action == "Remove"
            || (self.action == "Modify"
                && matches!(self.replacement.as_deref(), Some("True" | "Conditional")))
    }
}

/// A change set as `DescribeChangeSet` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeSet {
    /// `CREATE_PENDING`, `CREATE_IN_PROGRESS`, `CREATE_COMPLETE`, `FAILED`, ...
    pub status: String,
    pub status_reason: Option<String>,
    pub changes: Vec<Change>,
}

/// One stack event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StackEvent {
    pub id: String,
    /// RFC 3339.
    pub timestamp: String,
    pub logical_id: String,
    pub resource_type: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The CloudFormation operations the engine uses.
#[allow(async_fn_in_trait)]
pub trait CloudFormation {
    /// The stack, or `None` when there is none by that name.
    async fn stack(&self, name: &str) -> Result<Option<Stack>, CfnError>;
    async fn create_change_set(&self, request: &ChangeSetRequest) -> Result<(), CfnError>;
    async fn change_set(&self, stack: &str, name: &str) -> Result<ChangeSet, CfnError>;
    async fn execute_change_set(&self, stack: &str, name: &str) -> Result<(), CfnError>;
    async fn delete_change_set(&self, stack: &str, name: &str) -> Result<(), CfnError>;
    async fn delete_stack(&self, name: &str) -> Result<(), CfnError>;
    /// The stack's events, newest first, down to (not including) the event
    /// `after` when given.
    async fn events(&self, stack: &str, after: Option<&str>) -> Result<Vec<StackEvent>, CfnError>;
    async fn continue_update_rollback(&self, stack: &str, skip: &[String]) -> Result<(), CfnError>;
}

/// Stack statuses in which nothing is going on.
pub fn is_settled(status: &str) -> bool {
    !status.ends_with("_IN_PROGRESS")
}

/// Whether the status ends an operation that failed.
pub fn is_failure(status: &str) -> bool {
    status.ends_with("_FAILED") || status.ends_with("ROLLBACK_COMPLETE")
}

/// The SDK implementation.
pub struct AwsCloudFormation {
    pub client: aws_sdk_cloudformation::Client,
}

fn sdk_error<E>(e: aws_sdk_cloudformation::error::SdkError<E>) -> CfnError
where
    E: aws_sdk_cloudformation::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    let code = e
        .as_service_error()
        .and_then(|s| s.code().map(str::to_string));
    let message = match e.as_service_error().and_then(|s| s.message()) {
        Some(m) => m.to_string(),
        None => crate::chain::message_chain(&e),
    };
    CfnError { code, message }
}

fn time(t: Option<&aws_sdk_cloudformation::primitives::DateTime>) -> Option<String> {
    t.and_then(|t| {
        t.fmt(aws_sdk_cloudformation::primitives::DateTimeFormat::DateTime)
            .ok()
    })
}

impl CloudFormation for AwsCloudFormation {
    async fn stack(&self, name: &str) -> Result<Option<Stack>, CfnError> {
        let result = self.client.describe_stacks().stack_name(name).send().await;
        let out = match result {
            Ok(out) => out,
            // "Stack with id X does not exist" comes as a ValidationError.
            Err(e)
                if e.as_service_error().is_some_and(|s| {
                    aws_sdk_cloudformation::error::ProvideErrorMetadata::message(s)
                        .is_some_and(|m| m.contains("does not exist"))
                }) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(sdk_error(e)),
        };
        let Some(s) = out.stacks().first() else {
            return Ok(None);
        };
        let status = s
            .stack_status()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default();
        if status == "DELETE_COMPLETE" {
            return Ok(None);
        }
        Ok(Some(Stack {
            name: s.stack_name().unwrap_or(name).to_string(),
            status,
            status_reason: s.stack_status_reason().map(str::to_string),
            last_updated: time(s.last_updated_time().or(s.creation_time())),
            outputs: s
                .outputs()
                .iter()
                .filter_map(|o| {
                    Some((
                        o.output_key()?.to_string(),
                        o.output_value().unwrap_or_default().to_string(),
                    ))
                })
                .collect(),
            parameters: s
                .parameters()
                .iter()
                .filter_map(|p| {
                    Some((
                        p.parameter_key()?.to_string(),
                        p.parameter_value().unwrap_or_default().to_string(),
                    ))
                })
                .collect(),
        }))
    }

    async fn create_change_set(&self, request: &ChangeSetRequest) -> Result<(), CfnError> {
        use aws_sdk_cloudformation::types::{Capability, ChangeSetType, Parameter, Tag};
        let mut call = self
            .client
            .create_change_set()
            .stack_name(&request.stack)
            .change_set_name(&request.name)
            .description(&request.description)
            .change_set_type(match request.kind {
                ChangeSetKind::Create => ChangeSetType::Create,
                ChangeSetKind::Update => ChangeSetType::Update,
            })
            .capabilities(Capability::CapabilityIam)
            .capabilities(Capability::CapabilityNamedIam);
        call = match &request.template {
            TemplateSource::Body(body) => call.template_body(body),
            TemplateSource::Url(url) => call.template_url(url),
            TemplateSource::Previous => call.use_previous_template(true),
        };
        for (k, v) in &request.parameters {
            call = call.parameters(
                Parameter::builder()
                    .parameter_key(k)
                    .parameter_value(v)
                    .build(),
            );
        }
        for (k, v) in &request.tags {
            call = call.tags(Tag::builder().key(k).value(v).build());
        }
        call.send().await.map_err(sdk_error)?;
        Ok(())
    }

    async fn change_set(&self, stack: &str, name: &str) -> Result<ChangeSet, CfnError> {
        let mut changes = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .client
                .describe_change_set()
                .stack_name(stack)
                .change_set_name(name)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(sdk_error)?;
            for c in out.changes() {
                let Some(r) = c.resource_change() else {
                    continue;
                };
                changes.push(Change {
                    action: r
                        .action()
                        .map(|a| a.as_str().to_string())
                        .unwrap_or_default(),
                    logical_id: r.logical_resource_id().unwrap_or_default().to_string(),
                    resource_type: r.resource_type().unwrap_or_default().to_string(),
                    replacement: r.replacement().map(|x| x.as_str().to_string()),
                });
            }
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                return Ok(ChangeSet {
                    status: out
                        .status()
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_default(),
                    status_reason: out.status_reason().map(str::to_string),
                    changes,
                });
            }
        }
    }

    async fn execute_change_set(&self, stack: &str, name: &str) -> Result<(), CfnError> {
        self.client
            .execute_change_set()
            .stack_name(stack)
            .change_set_name(name)
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(())
    }

    async fn delete_change_set(&self, stack: &str, name: &str) -> Result<(), CfnError> {
        self.client
            .delete_change_set()
            .stack_name(stack)
            .change_set_name(name)
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(())
    }

    async fn delete_stack(&self, name: &str) -> Result<(), CfnError> {
        self.client
            .delete_stack()
            .stack_name(name)
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(())
    }

    async fn events(&self, stack: &str, after: Option<&str>) -> Result<Vec<StackEvent>, CfnError> {
        let mut events = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .client
                .describe_stack_events()
                .stack_name(stack)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(sdk_error)?;
            for e in out.stack_events() {
                let id = e.event_id().unwrap_or_default();
                if Some(id) == after {
                    return Ok(events);
                }
                events.push(StackEvent {
                    id: id.to_string(),
                    timestamp: time(e.timestamp()).unwrap_or_default(),
                    logical_id: e.logical_resource_id().unwrap_or_default().to_string(),
                    resource_type: e.resource_type().unwrap_or_default().to_string(),
                    status: e
                        .resource_status()
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_default(),
                    reason: e.resource_status_reason().map(str::to_string),
                });
            }
            token = out.next_token().map(str::to_string);
            // Without a known event to stop at, the first page is enough.
            if token.is_none() || after.is_none() {
                return Ok(events);
            }
        }
    }

    async fn continue_update_rollback(&self, stack: &str, skip: &[String]) -> Result<(), CfnError> {
        self.client
            .continue_update_rollback()
            .stack_name(stack)
            .set_resources_to_skip((!skip.is_empty()).then(|| skip.to_vec()))
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(())
    }
}
