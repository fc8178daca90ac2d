//! The deploy state machine of one stack: find out where the stack stands,
//! make a change set, show it, refuse what must not happen, execute, follow
//! the events until the stack settles, and name the root cause of a failure.
//! It talks to CloudFormation only through [`CloudFormation`], so that every
//! path is tested against a scripted fake as well as against moto.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::cfn::{
    CfnError, Change, ChangeSetKind, ChangeSetRequest, CloudFormation, Stack, TemplateSource,
    is_failure, is_settled,
};

mod error;
mod event;
mod follow;

pub use error::EngineError;
pub use event::{Event, Reporter, change_line};
pub use follow::root_causes;
use follow::{newest_event, wait};

/// Resource types that hold data: replacing or deleting one loses it.
pub const STATEFUL_TYPES: &[&str] = &[
    "AWS::RDS::DBInstance",
    "AWS::RDS::DBCluster",
    "AWS::S3::Bucket",
    "AWS::SQS::Queue",
    "AWS::SecretsManager::Secret",
    "AWS::KMS::Key",
    "AWS::DynamoDB::Table",
    "AWS::Logs::LogGroup",
    "AWS::ECR::Repository",
];

/// Everything needed to deploy one stack, computed before anything is done.
#[derive(Debug, Clone)]
pub struct StackPlan {
    pub name: String,
    pub template: TemplateSource,
    pub parameters: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
    /// The template's resources (logical id, type), for the diff of a stack
    /// that does not exist yet.
    pub resources: Vec<(String, String)>,
}

/// How the engine behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// Execute without asking.
    pub yes: bool,
    /// Whether a person can be asked (stdin and stderr are terminals).
    pub interactive: bool,
    /// Let a change replace or delete a resource that holds data.
    pub allow_replacement: bool,
    /// Time between two polls of CloudFormation.
    pub poll: Duration,
    /// Name of the change sets made by this run.
    pub change_set: String,
}

/// Asks a person a yes/no question; only called when `interactive`.
pub trait Prompt {
    fn confirm(&self, question: &str) -> bool;
}

/// What a deploy of one stack did.
#[derive(Debug, Clone, PartialEq)]
pub struct Deployed {
    pub stack: Stack,
    pub changed: bool,
}

/// Whether a change set failed only because there was nothing to change.
fn is_empty_change_set(reason: &str) -> bool {
    reason.contains("didn't contain changes") || reason.contains("No updates are to be performed")
}

/// Where a stack stands before a deploy: create or update it, or refuse.
fn kind_for(stack: Option<&Stack>, name: &str) -> Result<(ChangeSetKind, bool), EngineError> {
    let Some(stack) = stack else {
        return Ok((ChangeSetKind::Create, false));
    };
    match stack.status.as_str() {
        // Left by a change set of a create that was never executed.
        "REVIEW_IN_PROGRESS" => Ok((ChangeSetKind::Create, false)),
        "ROLLBACK_COMPLETE" => Ok((ChangeSetKind::Create, true)),
        "UPDATE_ROLLBACK_FAILED" => Err(EngineError::NeedsRecover {
            stack: name.to_string(),
        }),
        s if !is_settled(s) => Err(EngineError::InProgress {
            stack: name.to_string(),
            status: s.to_string(),
        }),
        "CREATE_FAILED"
        | "ROLLBACK_FAILED"
        | "DELETE_FAILED"
        | "UPDATE_FAILED"
        | "IMPORT_ROLLBACK_FAILED" => Err(EngineError::Broken {
            stack: name.to_string(),
            status: stack.status.clone(),
            reason: stack.status_reason.clone(),
        }),
        _ => Ok((ChangeSetKind::Update, false)),
    }
}

/// Refuses a stack's deploy before anything is changed when it is busy or
/// broken; lets a whole environment be checked before its first stack moves.
pub fn check_ready(stack: Option<&Stack>, name: &str) -> Result<(), EngineError> {
    kind_for(stack, name).map(|_| ())
}

/// Creates the change set and waits until CloudFormation has worked it out:
/// its changes, or `None` when there are none (the change set is then gone).
async fn make_change_set(
    cfn: &impl CloudFormation,
    plan: &StackPlan,
    kind: ChangeSetKind,
    opts: &Options,
) -> Result<Option<Vec<Change>>, EngineError> {
    let name = plan.name.as_str();
    let created = cfn
        .create_change_set(&ChangeSetRequest {
            stack: plan.name.clone(),
            name: opts.change_set.clone(),
            kind,
            template: plan.template.clone(),
            parameters: plan.parameters.clone(),
            tags: plan.tags.clone(),
            description: "made by pipeline".into(),
        })
        .await;
    match created {
        Ok(()) => {}
        // Some implementations refuse an empty change set outright.
        Err(e) if is_empty_change_set(&e.message) => return Ok(None),
        Err(e) => return Err(cfn_err(name)(e)),
    }
    loop {
        let set = cfn
            .change_set(name, &opts.change_set)
            .await
            .map_err(cfn_err(name))?;
        match set.status.as_str() {
            "CREATE_COMPLETE" => return Ok(Some(set.changes)),
            "FAILED" => {
                let reason = set.status_reason.unwrap_or_default();
                // A change set that failed is kept by CloudFormation; remove it.
                cfn.delete_change_set(name, &opts.change_set)
                    .await
                    .map_err(cfn_err(name))?;
                if is_empty_change_set(&reason) {
                    return Ok(None);
                }
                return Err(EngineError::ChangeSetFailed {
                    stack: name.to_string(),
                    reason,
                });
            }
            _ => tokio::time::sleep(opts.poll).await,
        }
    }
}

fn cfn_err(stack: &str) -> impl Fn(CfnError) -> EngineError + '_ {
    move |error| EngineError::Cfn {
        stack: stack.to_string(),
        error,
    }
}

/// Deploys one stack.
pub async fn deploy_stack(
    cfn: &impl CloudFormation,
    plan: &StackPlan,
    opts: &Options,
    prompt: &impl Prompt,
    reporter: &impl Reporter,
) -> Result<Deployed, EngineError> {
    let name = plan.name.as_str();
    let current = cfn.stack(name).await.map_err(cfn_err(name))?;
    let (kind, recreate) = kind_for(current.as_ref(), name)?;
    if recreate {
        let status = current.map(|s| s.status).unwrap_or_default();
        confirm(
            opts,
            prompt,
            name,
            &format!(
                "Delete stack {name} (left in {status} by a failed first create) and create it again?"
            ),
        )?;
        reporter.report(&Event::Recreating {
            stack: name.to_string(),
            status,
        });
        delete_and_wait(cfn, name, opts, reporter).await?;
    }

    let Some(changes) = make_change_set(cfn, plan, kind, opts).await? else {
        reporter.report(&Event::NoChanges {
            stack: name.to_string(),
        });
        let stack = cfn
            .stack(name)
            .await
            .map_err(cfn_err(name))?
            .ok_or_else(|| EngineError::Cfn {
                stack: name.to_string(),
                error: CfnError::new("the stack disappeared"),
            })?;
        return Ok(Deployed {
            stack,
            changed: false,
        });
    };
    reporter.report(&Event::Changes {
        stack: name.to_string(),
        kind,
        changes: changes.clone(),
    });
    let result = check_and_confirm(&changes, plan, opts, prompt);
    if let Err(e) = result {
        cfn.delete_change_set(name, &opts.change_set)
            .await
            .map_err(cfn_err(name))?;
        // A create change set leaves an empty stack in REVIEW_IN_PROGRESS.
        if kind == ChangeSetKind::Create {
            cfn.delete_stack(name).await.map_err(cfn_err(name))?;
        }
        return Err(e);
    }

    let last_event = newest_event(cfn, name).await?;
    let started = Instant::now();
    cfn.execute_change_set(name, &opts.change_set)
        .await
        .map_err(cfn_err(name))?;
    let (stack, events) = wait(cfn, name, last_event, opts, reporter).await?;
    let Some(stack) = stack else {
        return Err(EngineError::Cfn {
            stack: name.to_string(),
            error: CfnError::new("the stack disappeared while it was deployed"),
        });
    };
    reporter.report(&Event::Settled {
        stack: name.to_string(),
        status: stack.status.clone(),
        seconds: started.elapsed().as_secs_f64(),
    });
    if is_failure(&stack.status) {
        return Err(EngineError::Failed {
            stack: name.to_string(),
            causes: root_causes(&events, &stack),
            status: stack.status,
        });
    }
    Ok(Deployed {
        stack,
        changed: true,
    })
}

/// Refuses stateful replacements, then asks (or checks `--yes`).
fn check_and_confirm(
    changes: &[Change],
    plan: &StackPlan,
    opts: &Options,
    prompt: &impl Prompt,
) -> Result<(), EngineError> {
    let stateful: Vec<Change> = changes
        .iter()
        .filter(|c| c.destroys() && STATEFUL_TYPES.contains(&c.resource_type.as_str()))
        .cloned()
        .collect();
    if !stateful.is_empty() && !opts.allow_replacement {
        return Err(EngineError::Stateful {
            stack: plan.name.clone(),
            changes: stateful,
        });
    }
    confirm(
        opts,
        prompt,
        &plan.name,
        &format!("Deploy these changes to {}?", plan.name),
    )
}

fn confirm(
    opts: &Options,
    prompt: &impl Prompt,
    stack: &str,
    question: &str,
) -> Result<(), EngineError> {
    if opts.yes {
        return Ok(());
    }
    if !opts.interactive {
        return Err(EngineError::NeedsYes {
            stack: stack.to_string(),
        });
    }
    if prompt.confirm(question) {
        Ok(())
    } else {
        Err(EngineError::Declined {
            stack: stack.to_string(),
        })
    }
}

/// Deletes a stack and follows it until it is gone.
pub async fn delete_and_wait(
    cfn: &impl CloudFormation,
    name: &str,
    opts: &Options,
    reporter: &impl Reporter,
) -> Result<(), EngineError> {
    let Some(stack) = cfn.stack(name).await.map_err(cfn_err(name))? else {
        return Ok(());
    };
    if !is_settled(&stack.status) && stack.status != "REVIEW_IN_PROGRESS" {
        return Err(EngineError::InProgress {
            stack: name.to_string(),
            status: stack.status,
        });
    }
    let last = newest_event(cfn, name).await?;
    let started = Instant::now();
    cfn.delete_stack(name).await.map_err(cfn_err(name))?;
    let (stack, events) = wait(cfn, name, last, opts, reporter).await?;
    match stack {
        None => {
            reporter.report(&Event::Settled {
                stack: name.to_string(),
                status: "DELETE_COMPLETE".into(),
                seconds: started.elapsed().as_secs_f64(),
            });
            Ok(())
        }
        Some(stack) => Err(EngineError::Failed {
            stack: name.to_string(),
            causes: root_causes(&events, &stack),
            status: stack.status,
        }),
    }
}

/// Finishes the rollback of a stack in `UPDATE_ROLLBACK_FAILED`, skipping
/// the named resources.
pub async fn recover_stack(
    cfn: &impl CloudFormation,
    name: &str,
    skip: &[String],
    opts: &Options,
    reporter: &impl Reporter,
) -> Result<Option<Stack>, EngineError> {
    let Some(stack) = cfn.stack(name).await.map_err(cfn_err(name))? else {
        return Ok(None);
    };
    if stack.status != "UPDATE_ROLLBACK_FAILED" {
        return Ok(None);
    }
    let last = newest_event(cfn, name).await?;
    let started = Instant::now();
    cfn.continue_update_rollback(name, skip)
        .await
        .map_err(cfn_err(name))?;
    let (stack, events) = wait(cfn, name, last, opts, reporter).await?;
    let stack = stack.ok_or_else(|| EngineError::Cfn {
        stack: name.to_string(),
        error: CfnError::new("the stack disappeared during its rollback"),
    })?;
    reporter.report(&Event::Settled {
        stack: name.to_string(),
        status: stack.status.clone(),
        seconds: started.elapsed().as_secs_f64(),
    });
    if stack.status != "UPDATE_ROLLBACK_COMPLETE" {
        return Err(EngineError::Failed {
            stack: name.to_string(),
            causes: root_causes(&events, &stack),
            status: stack.status,
        });
    }
    Ok(Some(stack))
}

/// The changes a deploy would make to one stack, without making them: a
/// change set that is deleted again, or, for a stack that does not exist,
/// every resource of the template as added.
pub async fn preview_stack(
    cfn: &impl CloudFormation,
    plan: &StackPlan,
    opts: &Options,
) -> Result<Option<Vec<Change>>, EngineError> {
    let name = plan.name.as_str();
    let current = cfn.stack(name).await.map_err(cfn_err(name))?;
    let (kind, recreate) = kind_for(current.as_ref(), name)?;
    if kind == ChangeSetKind::Create || recreate {
        return Ok(Some(
            plan.resources
                .iter()
                .map(|(id, kind)| Change {
                    action: "Add".into(),
                    logical_id: id.clone(),
                    resource_type: kind.clone(),
                    replacement: None,
                })
                .collect(),
        ));
    }
    let changes = make_change_set(cfn, plan, kind, opts).await?;
    if changes.is_some() {
        cfn.delete_change_set(name, &opts.change_set)
            .await
            .map_err(cfn_err(name))?;
    }
    Ok(changes)
}
