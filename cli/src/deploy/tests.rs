//! The engine's state machine against a scripted CloudFormation: every path
//! moto cannot show (its CloudFormation runs synchronously, emits only stack
//! events, never fails or rolls back, and has no ContinueUpdateRollback),
//! fed with event sequences as CloudFormation sends them.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Duration;

use super::cfn::*;
use super::engine::*;

mod fake;
use fake::*;

/// Collects what the user would see.
#[derive(Default)]
struct Seen {
    events: RefCell<Vec<Event>>,
    questions: RefCell<Vec<String>>,
    answer: bool,
}

impl Seen {
    fn answering(answer: bool) -> Seen {
        Seen {
            answer,
            ..Seen::default()
        }
    }

    fn text(&self) -> String {
        self.events.borrow().iter().map(|e| e.to_string()).collect()
    }
}

impl Reporter for Seen {
    fn report(&self, event: &Event) {
        self.events.borrow_mut().push(event.clone());
    }
}

impl Prompt for Seen {
    fn confirm(&self, question: &str) -> bool {
        self.questions.borrow_mut().push(question.into());
        self.answer
    }
}

const TEMPLATE: &str = r#"{"Resources": {
  "Role": {"Type": "AWS::IAM::Role", "Properties": {"P": 1}},
  "Function": {"Type": "AWS::Lambda::Function", "Properties": {"P": 1}}
}}"#;

fn plan(template: &str) -> StackPlan {
    StackPlan {
        name: STACK.into(),
        template: TemplateSource::Body(template.into()),
        parameters: BTreeMap::from([("CodeKey".into(), "assets/abc.zip".into())]),
        tags: BTreeMap::new(),
        resources: Vec::new(),
    }
}

fn opts() -> Options {
    Options {
        yes: true,
        interactive: false,
        allow_replacement: false,
        poll: Duration::ZERO,
        change_set: "pipeline-test".into(),
    }
}

fn run<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

#[test]
fn a_new_stack_is_created_with_its_diff_and_progress() {
    let fake = Fake::default();
    fake.state.borrow_mut().outputs = BTreeMap::from([("ApiUrl".into(), "https://x".into())]);
    let seen = Seen::default();
    let deployed =
        run(deploy_stack(&fake, &plan(TEMPLATE), &opts(), &seen, &seen)).expect("deploy");
    assert!(deployed.changed);
    assert_eq!(deployed.stack.status, "CREATE_COMPLETE");
    assert_eq!(deployed.stack.outputs["ApiUrl"], "https://x");
    assert_eq!(
        fake.calls(),
        ["create_change_set create", "execute_change_set"]
    );
    let text = seen.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "pipeline-dev-app: create, 2 changes");
    assert_eq!(
        lines[1].trim_end(),
        "  + Function                                     AWS::Lambda::Function"
    );
    assert_eq!(
        lines[2].trim_end(),
        "  + Role                                         AWS::IAM::Role"
    );
    // Every event, in order, one line each, then the total.
    let statuses: Vec<&str> = lines[3..lines.len() - 1]
        .iter()
        .map(|l| l.split_whitespace().nth(2).unwrap_or(""))
        .collect();
    assert_eq!(
        statuses,
        [
            "CREATE_IN_PROGRESS",
            "CREATE_IN_PROGRESS",
            "CREATE_COMPLETE",
            "CREATE_IN_PROGRESS",
            "CREATE_COMPLETE",
            "CREATE_COMPLETE"
        ]
    );
    assert!(
        lines[lines.len() - 1].starts_with("pipeline-dev-app: CREATE_COMPLETE after "),
        "{text}"
    );
}

#[test]
fn an_unchanged_stack_executes_nothing() {
    let fake = Fake::default();
    let seen = Seen::default();
    run(deploy_stack(&fake, &plan(TEMPLATE), &opts(), &seen, &seen)).expect("create");
    let seen = Seen::default();
    let again = run(deploy_stack(&fake, &plan(TEMPLATE), &opts(), &seen, &seen)).expect("again");
    assert!(!again.changed);
    assert_eq!(seen.text(), "pipeline-dev-app: no changes\n");
    assert_eq!(
        fake.calls()[2..],
        ["create_change_set update", "delete_change_set"]
    );
}

#[test]
fn a_failed_create_names_the_root_cause_not_the_cancellations() {
    let fake = Fake::default();
    fake.script(vec![
        stack_step("CREATE_IN_PROGRESS", Some("User Initiated")),
        step("Role", "AWS::IAM::Role", "CREATE_IN_PROGRESS", None),
        step("Role", "AWS::IAM::Role", "CREATE_COMPLETE", None),
        step("Function", "AWS::Lambda::Function", "CREATE_IN_PROGRESS", None),
        step("Queue", "AWS::SQS::Queue", "CREATE_IN_PROGRESS", None),
        step(
            "Function",
            "AWS::Lambda::Function",
            "CREATE_FAILED",
            Some("Resource handler returned message: \"Error occurred while GetObject. S3 Error Code: NoSuchKey\" (RequestToken: 1, HandlerErrorCode: InvalidRequest)"),
        ),
        step("Queue", "AWS::SQS::Queue", "CREATE_FAILED", Some("Resource creation cancelled")),
        stack_step(
            "ROLLBACK_IN_PROGRESS",
            Some("The following resource(s) failed to create: [Function, Queue]. Rollback requested by user."),
        ),
        step("Queue", "AWS::SQS::Queue", "DELETE_COMPLETE", None),
        step("Role", "AWS::IAM::Role", "DELETE_COMPLETE", None),
        stack_step("ROLLBACK_COMPLETE", None),
    ]);
    let seen = Seen::default();
    let error =
        run(deploy_stack(&fake, &plan(TEMPLATE), &opts(), &seen, &seen)).expect_err("fails");
    assert_eq!(
        error.to_string(),
        "stack pipeline-dev-app failed: ROLLBACK_COMPLETE\n  Function (AWS::Lambda::Function) CREATE_FAILED: Resource handler returned message: \"Error occurred while GetObject. S3 Error Code: NoSuchKey\" (RequestToken: 1, HandlerErrorCode: InvalidRequest)"
    );
    assert_eq!(
        error.help().as_deref(),
        Some(
            "the failed first create was rolled back; fix the cause and deploy again (the empty stack is deleted and created anew)"
        )
    );
    let crate::Error::Deploy { .. } = crate::Error::from(error) else {
        panic!("a failed deploy exits 1");
    };
}

#[test]
fn a_failed_update_rolls_back_and_keeps_the_previous_template() {
    let fake = Fake::default().with_stack("UPDATE_COMPLETE", TEMPLATE);
    let changed = TEMPLATE.replace("\"P\": 1}}\n}", "\"P\": 2}}\n}");
    fake.script(vec![
        stack_step("UPDATE_IN_PROGRESS", Some("User Initiated")),
        step(
            "Function",
            "AWS::Lambda::Function",
            "UPDATE_IN_PROGRESS",
            None,
        ),
        step(
            "Function",
            "AWS::Lambda::Function",
            "UPDATE_FAILED",
            Some("Memory size 20000 is above the limit of 10240"),
        ),
        stack_step(
            "UPDATE_ROLLBACK_IN_PROGRESS",
            Some("The following resource(s) failed to update: [Function]."),
        ),
        step("Function", "AWS::Lambda::Function", "UPDATE_COMPLETE", None),
        stack_step("UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS", None),
        stack_step("UPDATE_ROLLBACK_COMPLETE", None),
    ]);
    let seen = Seen::default();
    let error =
        run(deploy_stack(&fake, &plan(&changed), &opts(), &seen, &seen)).expect_err("fails");
    let EngineError::Failed { status, causes, .. } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(status, "UPDATE_ROLLBACK_COMPLETE");
    assert_eq!(causes.len(), 1);
    assert_eq!(
        causes[0].reason.as_deref(),
        Some("Memory size 20000 is above the limit of 10240")
    );
    assert_eq!(fake.state.borrow().stacks[STACK].template, TEMPLATE);
}

#[test]
fn a_stack_left_in_rollback_complete_is_recreated_after_confirmation() {
    let fake = Fake::default().with_stack("ROLLBACK_COMPLETE", TEMPLATE);
    let seen = Seen::answering(true);
    let interactive = Options {
        yes: false,
        interactive: true,
        ..opts()
    };
    let deployed = run(deploy_stack(
        &fake,
        &plan(TEMPLATE),
        &interactive,
        &seen,
        &seen,
    ))
    .expect("deploy");
    assert_eq!(deployed.stack.status, "CREATE_COMPLETE");
    assert_eq!(
        *seen.questions.borrow(),
        [
            "Delete stack pipeline-dev-app (left in ROLLBACK_COMPLETE by a failed first create) and create it again?",
            "Deploy these changes to pipeline-dev-app?"
        ]
    );
    assert_eq!(
        fake.calls(),
        [
            "delete_stack",
            "create_change_set create",
            "execute_change_set"
        ]
    );
    assert!(seen.text().starts_with(
        "pipeline-dev-app: deleting the stack left in ROLLBACK_COMPLETE by a failed first create, to create it again\n"
    ));

    // Declined: nothing is deleted.
    let fake = Fake::default().with_stack("ROLLBACK_COMPLETE", TEMPLATE);
    let seen = Seen::answering(false);
    let error = run(deploy_stack(
        &fake,
        &plan(TEMPLATE),
        &interactive,
        &seen,
        &seen,
    ))
    .expect_err("declined");
    assert_eq!(
        error.to_string(),
        "stack pipeline-dev-app: not confirmed; nothing was changed"
    );
    assert!(fake.calls().is_empty());
    assert_eq!(fake.status().as_deref(), Some("ROLLBACK_COMPLETE"));
}

#[test]
fn a_stack_in_update_rollback_failed_is_refused_then_recovered() {
    let fake = Fake::default().with_stack("UPDATE_ROLLBACK_FAILED", TEMPLATE);
    let seen = Seen::default();
    let error =
        run(deploy_stack(&fake, &plan(TEMPLATE), &opts(), &seen, &seen)).expect_err("refused");
    assert_eq!(
        error.to_string(),
        "stack pipeline-dev-app is in UPDATE_ROLLBACK_FAILED: its last rollback could not finish"
    );
    assert_eq!(
        error.help().as_deref(),
        Some(
            "run `pipeline recover --env <env>` to finish the rollback (with `--skip RESOURCE` for resources that cannot roll back)"
        )
    );
    assert!(fake.calls().is_empty());

    let skip = vec!["Database".to_string()];
    let recovered = run(recover_stack(&fake, STACK, &skip, &opts(), &seen)).expect("recover");
    assert_eq!(
        recovered.map(|s| s.status).as_deref(),
        Some("UPDATE_ROLLBACK_COMPLETE")
    );
    assert_eq!(fake.calls(), ["continue_update_rollback skip=Database"]);
    // A stack that needs no recovery is left alone.
    assert_eq!(
        run(recover_stack(&fake, STACK, &[], &opts(), &seen)),
        Ok(None)
    );
}

#[test]
fn a_busy_stack_is_refused_before_anything_is_done() {
    for status in [
        "UPDATE_IN_PROGRESS",
        "CREATE_IN_PROGRESS",
        "DELETE_IN_PROGRESS",
        "UPDATE_ROLLBACK_IN_PROGRESS",
    ] {
        let fake = Fake::default().with_stack(status, TEMPLATE);
        let seen = Seen::default();
        let error =
            run(deploy_stack(&fake, &plan(TEMPLATE), &opts(), &seen, &seen)).expect_err("busy");
        assert_eq!(
            error.to_string(),
            format!(
                "stack pipeline-dev-app is busy ({status}): another deploy, rollback or delete is in progress"
            )
        );
        assert!(fake.calls().is_empty());
        assert!(
            check_ready(
                Some(&Stack {
                    name: STACK.into(),
                    status: status.into(),
                    status_reason: None,
                    last_updated: None,
                    outputs: BTreeMap::new(),
                    parameters: BTreeMap::new(),
                }),
                STACK
            )
            .is_err()
        );
    }
}

#[test]
fn replacing_a_database_is_refused_unless_allowed() {
    let changes = vec![
        change("Modify", "Database", "AWS::RDS::DBInstance", Some("True")),
        change("Modify", "Function", "AWS::Lambda::Function", Some("False")),
    ];
    let fake = Fake::default().with_stack("UPDATE_COMPLETE", TEMPLATE);
    fake.state.borrow_mut().changes = Some(changes.clone());
    let seen = Seen::default();
    let error =
        run(deploy_stack(&fake, &plan(TEMPLATE), &opts(), &seen, &seen)).expect_err("refused");
    assert_eq!(
        error.to_string(),
        "stack pipeline-dev-app: the change would replace or delete resources that hold data: Database (AWS::RDS::DBInstance)"
    );
    assert_eq!(
        fake.calls(),
        ["create_change_set update", "delete_change_set"]
    );
    let text = seen.text();
    assert!(
        text.contains("  ! Database                                     AWS::RDS::DBInstance  (replaced)  [holds data]\n"),
        "{text}"
    );
    assert!(
        text.contains("  ~ Function                                     AWS::Lambda::Function\n"),
        "{text}"
    );

    let fake = Fake::default().with_stack("UPDATE_COMPLETE", TEMPLATE);
    fake.state.borrow_mut().changes = Some(changes);
    let allowed = Options {
        allow_replacement: true,
        ..opts()
    };
    run(deploy_stack(&fake, &plan(TEMPLATE), &allowed, &seen, &seen)).expect("allowed");
    assert_eq!(
        fake.calls(),
        ["create_change_set update", "execute_change_set"]
    );
}

#[test]
fn without_a_terminal_changes_need_yes_and_leave_nothing_behind() {
    let fake = Fake::default();
    let seen = Seen::default();
    let no = Options {
        yes: false,
        ..opts()
    };
    let error = run(deploy_stack(&fake, &plan(TEMPLATE), &no, &seen, &seen)).expect_err("refused");
    assert_eq!(
        error.to_string(),
        "stack pipeline-dev-app has changes, and there is no terminal to confirm them"
    );
    assert_eq!(
        error.help().as_deref(),
        Some("review the changes with `pipeline diff`, then deploy with `--yes`")
    );
    // The change set and the empty stack it made are gone.
    assert_eq!(
        fake.calls(),
        [
            "create_change_set create",
            "delete_change_set",
            "delete_stack"
        ]
    );
    assert_eq!(fake.status(), None);
    let crate::Error::Refused { .. } = crate::Error::from(error) else {
        panic!("a refusal exits 2");
    };
}

#[test]
fn a_change_set_of_parameters_only_is_executed() {
    let fake = Fake::default().with_stack("UPDATE_COMPLETE", TEMPLATE);
    fake.state.borrow_mut().changes = Some(vec![]);
    let seen = Seen::default();
    // Same template, another code key: CloudFormation (and moto) may list
    // no resource change, yet the function's code changes.
    let deployed =
        run(deploy_stack(&fake, &plan(TEMPLATE), &opts(), &seen, &seen)).expect("deploy");
    assert!(deployed.changed);
    assert_eq!(
        fake.calls(),
        ["create_change_set update", "execute_change_set"]
    );
}

#[test]
fn a_change_set_that_cannot_be_made_says_why() {
    let fake = Fake::default().with_stack("UPDATE_COMPLETE", TEMPLATE);
    fake.state.borrow_mut().failure = Some("Parameters: [KeyArn] must have values".into());
    let seen = Seen::default();
    let error =
        run(deploy_stack(&fake, &plan(TEMPLATE), &opts(), &seen, &seen)).expect_err("fails");
    assert_eq!(
        error.to_string(),
        "the change set of stack pipeline-dev-app failed: Parameters: [KeyArn] must have values"
    );
    assert_eq!(
        fake.calls(),
        ["create_change_set update", "delete_change_set"]
    );
}

#[test]
fn deleting_names_what_could_not_be_deleted() {
    let fake = Fake::default().with_stack("UPDATE_COMPLETE", TEMPLATE);
    fake.script(vec![
        stack_step("DELETE_IN_PROGRESS", Some("User Initiated")),
        step("Function", "AWS::Lambda::Function", "DELETE_COMPLETE", None),
        step(
            "Role",
            "AWS::IAM::Role",
            "DELETE_FAILED",
            Some("Cannot delete entity, must detach all policies first."),
        ),
        stack_step(
            "DELETE_FAILED",
            Some("The following resource(s) failed to delete: [Role]."),
        ),
    ]);
    let seen = Seen::default();
    let error = run(delete_and_wait(&fake, STACK, &opts(), &seen)).expect_err("fails");
    assert_eq!(
        error.to_string(),
        "stack pipeline-dev-app failed: DELETE_FAILED\n  Role (AWS::IAM::Role) DELETE_FAILED: Cannot delete entity, must detach all policies first."
    );

    let fake = Fake::default().with_stack("UPDATE_COMPLETE", TEMPLATE);
    run(delete_and_wait(&fake, STACK, &opts(), &seen)).expect("deleted");
    assert_eq!(fake.status(), None);
    assert!(
        seen.text()
            .ends_with("pipeline-dev-app: DELETE_COMPLETE after 0.0 s\n"),
        "{}",
        seen.text()
    );
}

#[test]
fn a_preview_deletes_its_change_set_and_a_new_stack_is_all_additions() {
    let fake = Fake::default();
    let mut p = plan(TEMPLATE);
    p.resources = vec![("Role".into(), "AWS::IAM::Role".into())];
    let changes = run(preview_stack(&fake, &p, &opts())).expect("preview");
    assert_eq!(
        changes,
        Some(vec![change("Add", "Role", "AWS::IAM::Role", None)])
    );
    assert!(fake.calls().is_empty(), "a new stack needs no change set");

    let fake = Fake::default().with_stack("UPDATE_COMPLETE", TEMPLATE);
    if let Some(s) = fake.state.borrow_mut().stacks.get_mut(STACK) {
        s.parameters = p.parameters.clone();
    }
    assert_eq!(run(preview_stack(&fake, &p, &opts())), Ok(None));
    let changed = TEMPLATE.replace("\"P\": 1}}\n}", "\"P\": 2}}\n}");
    let changes = run(preview_stack(&fake, &plan(&changed), &opts())).expect("preview");
    assert_eq!(
        changes,
        Some(vec![change(
            "Modify",
            "Function",
            "AWS::Lambda::Function",
            Some("False")
        )])
    );
    assert_eq!(
        fake.calls(),
        [
            "create_change_set update",
            "delete_change_set",
            "create_change_set update",
            "delete_change_set"
        ]
    );
}

#[test]
fn the_root_cause_falls_back_to_the_stack_when_no_resource_failed() {
    let stack = Stack {
        name: STACK.into(),
        status: "ROLLBACK_COMPLETE".into(),
        status_reason: Some("Template error: unresolved resource dependencies [X]".into()),
        last_updated: None,
        outputs: BTreeMap::new(),
        parameters: BTreeMap::new(),
    };
    let causes = root_causes(&[], &stack);
    assert_eq!(causes.len(), 1);
    assert_eq!(
        causes[0].reason.as_deref(),
        Some("Template error: unresolved resource dependencies [X]")
    );
}
