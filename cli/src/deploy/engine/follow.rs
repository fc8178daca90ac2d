//! Following a stack's events until it settles, and finding the root
//! causes of a failure among them.

use super::super::cfn::{CloudFormation, Stack, StackEvent, is_settled};
use super::{EngineError, Event, Options, Reporter, cfn_err};

/// The id of the stack's newest event: where the events of the operation
/// about to start begin.
pub(super) async fn newest_event(
    cfn: &impl CloudFormation,
    name: &str,
) -> Result<Option<String>, EngineError> {
    Ok(cfn
        .events(name, None)
        .await
        .map_err(cfn_err(name))?
        .first()
        .map(|e| e.id.clone()))
}

/// Polls of a settled stack, without the stack's own event of that status,
/// before the wait ends anyway.
const SETTLED_POLLS: u32 = 30;

/// Follows the stack's events until it settles (or is gone): the stack as
/// it ends, and the events seen, oldest first. Right after an operation
/// starts the stack may still show its earlier, settled status; the wait
/// ends on a settled status once the stack's own event of it has arrived.
pub(super) async fn wait(
    cfn: &impl CloudFormation,
    name: &str,
    mut last: Option<String>,
    opts: &Options,
    reporter: &impl Reporter,
) -> Result<(Option<Stack>, Vec<StackEvent>), EngineError> {
    let mut seen: Vec<StackEvent> = Vec::new();
    let mut settled_polls = 0;
    loop {
        let stack = cfn.stack(name).await.map_err(cfn_err(name))?;
        // Events up to the status just read: none can be missed.
        match cfn.events(name, last.as_deref()).await {
            Ok(mut fresh) => {
                fresh.reverse();
                for event in fresh {
                    reporter.report(&Event::Resource {
                        stack: name.to_string(),
                        resource: event.clone(),
                    });
                    last = Some(event.id.clone());
                    seen.push(event);
                }
            }
            // A deleted stack has no events to read by name.
            Err(_) if stack.is_none() => {}
            Err(e) => return Err(cfn_err(name)(e)),
        }
        match stack {
            None => return Ok((None, seen)),
            Some(s) if is_settled(&s.status) => {
                let announced = seen.iter().any(|e| {
                    e.resource_type == "AWS::CloudFormation::Stack" && e.status == s.status
                });
                settled_polls += 1;
                if announced || settled_polls >= SETTLED_POLLS {
                    return Ok((Some(s), seen));
                }
            }
            Some(_) => {}
        }
        tokio::time::sleep(opts.poll).await;
    }
}

/// The first failures of an operation: the events that failed for a reason
/// of their own, not because CloudFormation cancelled them after another
/// failure, nor the stack's summary of them.
pub fn root_causes(events: &[StackEvent], stack: &Stack) -> Vec<StackEvent> {
    let mut causes: Vec<StackEvent> = events
        .iter()
        .filter(|e| {
            e.status.ends_with("_FAILED")
                && e.resource_type != "AWS::CloudFormation::Stack"
                && !e
                    .reason
                    .as_deref()
                    .is_some_and(|r| r.contains("cancelled") || r.is_empty())
        })
        .take(5)
        .cloned()
        .collect();
    if causes.is_empty() {
        // Only the stack said something (a template or parameter problem).
        if let Some(e) = events
            .iter()
            .find(|e| e.status.ends_with("_FAILED") || e.status.contains("ROLLBACK_IN_PROGRESS"))
        {
            causes.push(e.clone());
        } else if let Some(reason) = &stack.status_reason {
            causes.push(StackEvent {
                id: String::new(),
                timestamp: String::new(),
                logical_id: stack.name.clone(),
                resource_type: "AWS::CloudFormation::Stack".into(),
                status: stack.status.clone(),
                reason: Some(reason.clone()),
            });
        }
    }
    causes
}
