//! A scripted CloudFormation: stacks, change sets and the events of each
//! operation, as a test scripts them.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};

use super::super::cfn::*;

pub(super) const STACK: &str = "pipeline-dev-app";
pub(super) const STACK_TYPE: &str = "AWS::CloudFormation::Stack";

/// One event of a scripted operation; an event of the stack itself also
/// sets the stack's status.
#[derive(Clone)]
pub(super) struct Step {
    pub(super) logical_id: &'static str,
    pub(super) resource_type: &'static str,
    pub(super) status: &'static str,
    pub(super) reason: Option<&'static str>,
}

pub(super) fn step(
    logical_id: &'static str,
    resource_type: &'static str,
    status: &'static str,
    reason: Option<&'static str>,
) -> Step {
    Step {
        logical_id,
        resource_type,
        status,
        reason,
    }
}

pub(super) fn stack_step(status: &'static str, reason: Option<&'static str>) -> Step {
    step(STACK, STACK_TYPE, status, reason)
}

#[derive(Default)]
pub(super) struct FakeStack {
    pub(super) status: String,
    pub(super) reason: Option<String>,
    pub(super) template: String,
    pub(super) parameters: BTreeMap<String, String>,
    pub(super) outputs: BTreeMap<String, String>,
    pub(super) events: Vec<StackEvent>,
    pub(super) pending: VecDeque<Step>,
    /// What the stack becomes if the operation under way succeeds.
    pub(super) next: Option<(String, BTreeMap<String, String>)>,
}

pub(super) struct FakeChangeSet {
    pub(super) template: String,
    pub(super) parameters: BTreeMap<String, String>,
    pub(super) polls: u32,
    pub(super) status: &'static str,
    pub(super) reason: Option<String>,
    pub(super) changes: Vec<Change>,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) stacks: BTreeMap<String, FakeStack>,
    pub(super) change_sets: BTreeMap<String, FakeChangeSet>,
    /// The next operation's events, when a test scripts them.
    pub(super) script: Option<Vec<Step>>,
    /// The next change set's changes, when a test scripts them.
    pub(super) changes: Option<Vec<Change>>,
    pub(super) outputs: BTreeMap<String, String>,
    /// Why the next change set fails, when a test says it does.
    pub(super) failure: Option<String>,
    pub(super) calls: Vec<String>,
    pub(super) next_id: u64,
}

#[derive(Default)]
pub(super) struct Fake {
    pub(super) state: RefCell<State>,
}

pub(super) fn resources(template: &str) -> BTreeMap<String, serde_json::Value> {
    serde_json::from_str::<serde_json::Value>(template)
        .ok()
        .and_then(|t| t["Resources"].as_object().cloned())
        .map(|m| m.into_iter().collect())
        .unwrap_or_default()
}

pub(super) fn change(action: &str, id: &str, kind: &str, replacement: Option<&str>) -> Change {
    Change {
        action: action.into(),
        logical_id: id.into(),
        resource_type: kind.into(),
        replacement: replacement.map(str::to_string),
    }
}

impl Fake {
    pub(super) fn with_stack(self, status: &str, template: &str) -> Fake {
        self.state.borrow_mut().stacks.insert(
            STACK.into(),
            FakeStack {
                status: status.into(),
                template: template.into(),
                ..FakeStack::default()
            },
        );
        self
    }

    pub(super) fn script(&self, steps: Vec<Step>) {
        self.state.borrow_mut().script = Some(steps);
    }

    pub(super) fn calls(&self) -> Vec<String> {
        self.state.borrow().calls.clone()
    }

    pub(super) fn status(&self) -> Option<String> {
        self.state
            .borrow()
            .stacks
            .get(STACK)
            .map(|s| s.status.clone())
    }

    /// The default events of an operation that goes well.
    pub(super) fn success(verb: &str, ids: &[(String, String)]) -> Vec<Step> {
        let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
        let mut steps = vec![stack_step(
            leak(format!("{verb}_IN_PROGRESS")),
            Some("User Initiated"),
        )];
        for (id, kind) in ids {
            let (id, kind) = (leak(id.clone()), leak(kind.clone()));
            steps.push(step(id, kind, leak(format!("{verb}_IN_PROGRESS")), None));
            steps.push(step(id, kind, leak(format!("{verb}_COMPLETE")), None));
        }
        steps.push(stack_step(leak(format!("{verb}_COMPLETE")), None));
        steps
    }

    pub(super) fn start(&self, stack: &str, default: Vec<Step>) {
        let mut state = self.state.borrow_mut();
        let steps = state.script.take().unwrap_or(default);
        if let Some(s) = state.stacks.get_mut(stack) {
            s.pending = steps.into();
        }
    }
}

impl CloudFormation for Fake {
    async fn stack(&self, name: &str) -> Result<Option<Stack>, CfnError> {
        let state = self.state.borrow();
        Ok(state.stacks.get(name).map(|s| Stack {
            name: name.into(),
            status: s.status.clone(),
            status_reason: s.reason.clone(),
            last_updated: None,
            outputs: s.outputs.clone(),
            parameters: s.parameters.clone(),
        }))
    }

    async fn create_change_set(&self, r: &ChangeSetRequest) -> Result<(), CfnError> {
        let mut state = self.state.borrow_mut();
        state
            .calls
            .push(format!("create_change_set {:?}", r.kind).to_lowercase());
        let TemplateSource::Body(template) = &r.template else {
            return Err(CfnError::new("the fake takes template bodies"));
        };
        let existing = state.stacks.get(&r.stack);
        let (old_template, old_parameters) = match (r.kind, existing) {
            (ChangeSetKind::Create, Some(s)) if s.status != "REVIEW_IN_PROGRESS" => {
                return Err(CfnError::new(format!("Stack [{}] already exists", r.stack)));
            }
            (ChangeSetKind::Update, None) => {
                return Err(CfnError::new(format!("Stack [{}] does not exist", r.stack)));
            }
            (_, Some(s)) => (s.template.clone(), s.parameters.clone()),
            (_, None) => (String::new(), BTreeMap::new()),
        };
        let computed = {
            let (old, new) = (resources(&old_template), resources(template));
            let mut changes = Vec::new();
            for (id, r) in &new {
                let kind = r["Type"].as_str().unwrap_or("");
                match old.get(id) {
                    None => changes.push(change("Add", id, kind, None)),
                    Some(o) if o != r => changes.push(change("Modify", id, kind, Some("False"))),
                    Some(_) => {}
                }
            }
            for (id, r) in &old {
                if !new.contains_key(id) {
                    changes.push(change("Remove", id, r["Type"].as_str().unwrap_or(""), None));
                }
            }
            changes
        };
        let changes = state.changes.take().unwrap_or(computed);
        let unchanged =
            r.kind == ChangeSetKind::Update && changes.is_empty() && old_parameters == r.parameters;
        if r.kind == ChangeSetKind::Create {
            let id = state.next_id;
            state.next_id += 1;
            let stack = state.stacks.entry(r.stack.clone()).or_default();
            stack.status = "REVIEW_IN_PROGRESS".into();
            stack.events.push(StackEvent {
                id: format!("e{id}"),
                timestamp: String::new(),
                logical_id: r.stack.clone(),
                resource_type: STACK_TYPE.into(),
                status: "REVIEW_IN_PROGRESS".into(),
                reason: Some("User Initiated".into()),
            });
        }
        let (status, reason) = if let Some(reason) = state.failure.take() {
            ("FAILED", Some(reason))
        } else if unchanged {
            ("FAILED", Some("The submitted information didn't contain changes. Submit different information to create a change set.".to_string()))
        } else {
            ("CREATE_COMPLETE", None)
        };
        state.change_sets.insert(
            r.name.clone(),
            FakeChangeSet {
                template: template.clone(),
                parameters: r.parameters.clone(),
                polls: 0,
                status,
                reason,
                changes,
            },
        );
        Ok(())
    }

    async fn change_set(&self, _stack: &str, name: &str) -> Result<ChangeSet, CfnError> {
        let mut state = self.state.borrow_mut();
        let set = state
            .change_sets
            .get_mut(name)
            .ok_or_else(|| CfnError::new(format!("ChangeSet [{name}] does not exist")))?;
        set.polls += 1;
        // CloudFormation works a change set out for a while first.
        if set.polls == 1 {
            return Ok(ChangeSet {
                status: "CREATE_IN_PROGRESS".into(),
                status_reason: None,
                changes: Vec::new(),
            });
        }
        Ok(ChangeSet {
            status: set.status.into(),
            status_reason: set.reason.clone(),
            changes: set.changes.clone(),
        })
    }

    async fn execute_change_set(&self, stack: &str, name: &str) -> Result<(), CfnError> {
        let (verb, ids) = {
            let mut state = self.state.borrow_mut();
            state.calls.push("execute_change_set".into());
            let set = state
                .change_sets
                .remove(name)
                .ok_or_else(|| CfnError::new("no such change set"))?;
            let outputs = state.outputs.clone();
            let s = state
                .stacks
                .get_mut(stack)
                .ok_or_else(|| CfnError::new("no such stack"))?;
            let verb = if s.status == "REVIEW_IN_PROGRESS" {
                "CREATE"
            } else {
                "UPDATE"
            };
            s.next = Some((set.template.clone(), set.parameters.clone()));
            s.outputs = outputs;
            let ids: Vec<(String, String)> = set
                .changes
                .iter()
                .map(|c| (c.logical_id.clone(), c.resource_type.clone()))
                .collect();
            (verb, ids)
        };
        self.start(stack, Fake::success(verb, &ids));
        Ok(())
    }

    async fn delete_change_set(&self, _stack: &str, name: &str) -> Result<(), CfnError> {
        let mut state = self.state.borrow_mut();
        state.calls.push("delete_change_set".into());
        state.change_sets.remove(name);
        Ok(())
    }

    async fn delete_stack(&self, name: &str) -> Result<(), CfnError> {
        let ids: Vec<(String, String)> = {
            let mut state = self.state.borrow_mut();
            state.calls.push("delete_stack".into());
            let Some(s) = state.stacks.get(name) else {
                return Ok(());
            };
            if s.status == "REVIEW_IN_PROGRESS" {
                state.stacks.remove(name);
                return Ok(());
            }
            resources(&s.template)
                .iter()
                .map(|(id, r)| (id.clone(), r["Type"].as_str().unwrap_or("").to_string()))
                .collect()
        };
        self.start(name, Fake::success("DELETE", &ids));
        Ok(())
    }

    async fn events(&self, stack: &str, after: Option<&str>) -> Result<Vec<StackEvent>, CfnError> {
        let mut state = self.state.borrow_mut();
        let id = state.next_id;
        let s = state
            .stacks
            .get_mut(stack)
            .ok_or_else(|| CfnError::new(format!("Stack [{stack}] does not exist")))?;
        // Each poll sees one more event of the operation under way.
        let mut revealed = false;
        if let Some(step) = s.pending.pop_front() {
            revealed = true;
            if step.resource_type == STACK_TYPE {
                s.status = step.status.into();
                s.reason = step.reason.map(str::to_string);
                if step.status.ends_with("COMPLETE")
                    && !is_failure(step.status)
                    && let Some((template, parameters)) = s.next.take()
                {
                    s.template = template;
                    s.parameters = parameters;
                }
            }
            s.events.push(StackEvent {
                id: format!("e{id}"),
                timestamp: String::new(),
                logical_id: step.logical_id.into(),
                resource_type: step.resource_type.into(),
                status: step.status.into(),
                reason: step.reason.map(str::to_string),
            });
        }
        let events: Vec<StackEvent> = s
            .events
            .iter()
            .rev()
            .take_while(|e| Some(e.id.as_str()) != after)
            .cloned()
            .collect();
        let gone = s.status == "DELETE_COMPLETE";
        if gone {
            state.stacks.remove(stack);
        }
        if revealed {
            state.next_id += 1;
        }
        Ok(events)
    }

    async fn continue_update_rollback(&self, stack: &str, skip: &[String]) -> Result<(), CfnError> {
        {
            let mut state = self.state.borrow_mut();
            state
                .calls
                .push(format!("continue_update_rollback skip={}", skip.join(",")));
        }
        let steps = vec![
            stack_step("UPDATE_ROLLBACK_IN_PROGRESS", None),
            step("Database", "AWS::RDS::DBInstance", "UPDATE_COMPLETE", None),
            stack_step("UPDATE_ROLLBACK_COMPLETE", None),
        ];
        self.start(stack, steps);
        Ok(())
    }
}
