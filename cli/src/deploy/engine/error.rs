//! Why a stack could not be deployed, and how that ends the command.

use super::super::cfn::{CfnError, Change, StackEvent};

/// Why a stack could not be deployed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    #[error("stack {stack} is busy ({status}): another deploy, rollback or delete is in progress")]
    InProgress { stack: String, status: String },
    #[error("stack {stack} is in UPDATE_ROLLBACK_FAILED: its last rollback could not finish")]
    NeedsRecover { stack: String },
    #[error("stack {stack} is in {status}{}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Broken {
        stack: String,
        status: String,
        reason: Option<String>,
    },
    #[error("the change set of stack {stack} failed: {reason}")]
    ChangeSetFailed { stack: String, reason: String },
    #[error("stack {stack}: the change would replace or delete resources that hold data: {}", names(.changes))]
    Stateful { stack: String, changes: Vec<Change> },
    #[error("stack {stack} has changes, and there is no terminal to confirm them")]
    NeedsYes { stack: String },
    #[error("stack {stack}: not confirmed; nothing was changed")]
    Declined { stack: String },
    #[error("stack {stack} failed: {status}{}", causes_text(.causes))]
    Failed {
        stack: String,
        status: String,
        causes: Vec<StackEvent>,
    },
    #[error("stack {stack}: {error}")]
    Cfn { stack: String, error: CfnError },
}

fn names(changes: &[Change]) -> String {
    changes
        .iter()
        .map(|c| format!("{} ({})", c.logical_id, c.resource_type))
        .collect::<Vec<_>>()
        .join(", ")
}

fn causes_text(causes: &[StackEvent]) -> String {
    causes
        .iter()
        .map(|e| {
            format!(
                "\n  {} ({}) {}: {}",
                e.logical_id,
                e.resource_type,
                e.status,
                e.reason.as_deref().unwrap_or("no reason given")
            )
        })
        .collect()
}

impl EngineError {
    /// What the user can do about it.
    pub fn help(&self) -> Option<String> {
        match self {
            EngineError::InProgress { .. } => Some(
                "wait for it to finish (`pipeline status` shows it), then deploy again".into(),
            ),
            EngineError::NeedsRecover { .. } => Some(
                "run `pipeline recover --env <env>` to finish the rollback (with `--skip RESOURCE` for resources that cannot roll back)".into(),
            ),
            EngineError::Broken { .. } => Some(
                "look at the stack's events in the CloudFormation console; delete the stack if it holds nothing worth keeping".into(),
            ),
            EngineError::Stateful { .. } => Some(
                "check the diff; if losing that data is intended, deploy again with `--allow-replacement`".into(),
            ),
            EngineError::NeedsYes { .. } => {
                Some("review the changes with `pipeline diff`, then deploy with `--yes`".into())
            }
            EngineError::Failed { status, .. } => Some(match status.as_str() {
                "ROLLBACK_COMPLETE" => "the failed first create was rolled back; fix the cause and deploy again (the empty stack is deleted and created anew)".into(),
                "ROLLBACK_FAILED" => "the rollback of the first create could not delete every resource; delete those the events name (or the stack, keeping them with `aws cloudformation delete-stack --retain-resources`), then deploy again".into(),
                _ => "CloudFormation rolled the stack back; the previous version still serves".into(),
            }),
            _ => None,
        }
    }
}

/// How a stack's failure ends the command: refused (nothing was done) or
/// failed.
impl From<EngineError> for crate::Error {
    fn from(e: EngineError) -> crate::Error {
        use crate::Error;
        use EngineError as E;
        let help = e.help();
        let message = e.to_string();
        match e {
            E::InProgress { .. }
            | E::NeedsRecover { .. }
            | E::Stateful { .. }
            | E::NeedsYes { .. }
            | E::Declined { .. } => Error::Refused { message, help },
            E::Broken { .. } | E::ChangeSetFailed { .. } | E::Failed { .. } | E::Cfn { .. } => {
                Error::Deploy { message, help }
            }
        }
    }
}
