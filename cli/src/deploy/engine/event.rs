//! What the engine tells the user while it works.

use std::fmt;

use serde::Serialize;

use super::super::cfn::{Change, ChangeSetKind, StackEvent};
use super::STATEFUL_TYPES;

/// What the engine tells the user, as it happens.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The change set of a stack is ready.
    Changes {
        stack: String,
        kind: ChangeSetKind,
        changes: Vec<Change>,
    },
    /// The stack is already as the templates say.
    NoChanges { stack: String },
    /// A failed first create left the stack empty; it is deleted to start again.
    Recreating { stack: String, status: String },
    /// A resource (or the stack itself) changed status.
    Resource {
        stack: String,
        #[serde(flatten)]
        resource: StackEvent,
    },
    /// The stack settled.
    Settled {
        stack: String,
        status: String,
        seconds: f64,
    },
}

/// Receives the engine's events.
pub trait Reporter {
    fn report(&self, event: &Event);
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Changes {
                stack,
                kind,
                changes,
            } => {
                let verb = match kind {
                    ChangeSetKind::Create => "create",
                    ChangeSetKind::Update => "update",
                };
                writeln!(
                    f,
                    "{stack}: {verb}, {} change{}",
                    changes.len(),
                    if changes.len() == 1 { "" } else { "s" }
                )?;
                for c in changes {
                    writeln!(f, "  {}", change_line(c))?;
                }
                Ok(())
            }
            Event::NoChanges { stack } => writeln!(f, "{stack}: no changes"),
            Event::Recreating { stack, status } => writeln!(
                f,
                "{stack}: deleting the stack left in {status} by a failed first create, to create it again"
            ),
            Event::Resource {
                stack,
                resource: event,
            } => {
                write!(
                    f,
                    "{stack}: {:<44} {:<26} {}",
                    event.logical_id, event.status, event.resource_type
                )?;
                match &event.reason {
                    Some(r) if !r.is_empty() => writeln!(f, ": {r}"),
                    _ => writeln!(f),
                }
            }
            Event::Settled {
                stack,
                status,
                seconds,
            } => writeln!(f, "{stack}: {status} after {seconds:.1} s"),
        }
    }
}

/// One line of a diff: `+` added, `~` modified, `-` removed, `!` replaced.
pub fn change_line(c: &Change) -> String {
    let (mark, note) = match (c.action.as_str(), c.replacement.as_deref()) {
        ("Add", _) => ("+", ""),
        ("Remove", _) => ("-", ""),
        ("Modify", Some("True")) => ("!", "  (replaced)"),
        ("Modify", Some("Conditional")) => ("!", "  (may be replaced)"),
        ("Modify", _) => ("~", ""),
        _ => ("?", ""),
    };
    let stateful = if c.destroys() && STATEFUL_TYPES.contains(&c.resource_type.as_str()) {
        "  [holds data]"
    } else {
        ""
    };
    format!(
        "{mark} {:<44} {}{note}{stateful}",
        c.logical_id, c.resource_type
    )
}
