//! Deploying an environment: every stack in order through a change set
//! (the data stack created unprotected first), then the rollout of the
//! functions' new versions: checks before traffic, the shift under the
//! gates, the API's smoke checks after it, and no drift at the end.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::assets::Package;
use super::cfn::Stack;
use super::concurrency::check_concurrency;
use super::engine::{check_ready, deploy_stack};
use super::progress::CliReporter;
use super::progress::CliReporter as Progress;
use super::watch::GateVersions;
use super::{Bootstrap, Note, Session, function_key, options, write_json};
use crate::rollout::aws::{CloudWatch, Lambda, S3Store};
use crate::rollout::{
    ACTIVE_TIMEOUT, CallError, Outcome, Phase, Rollouts, State, Store, SystemClock, Target,
    gate_alarms, invocation_problem, migration_refused, smoke_problem, steps, wait_active,
};
use crate::spec::model::{FunctionId, Strategy};
use crate::synth::{ManifestStack, StackKind};
use crate::{Error, output::Ui};

/// What the user asked of a deploy.
#[derive(Debug, Clone, Copy)]
pub struct Request {
    /// Execute the change sets without asking.
    pub yes: bool,
    /// Let a change replace or delete a resource that holds data.
    pub allow_replacement: bool,
    /// How new versions take traffic, instead of the spec's strategy.
    pub strategy: Option<Strategy>,
}

#[derive(Debug, Serialize)]
pub struct StackResult {
    pub name: String,
    pub status: String,
    pub changed: bool,
}

/// The outcome of a deploy.
#[derive(Debug, Serialize)]
pub struct Deployed {
    pub event: &'static str,
    pub environment: String,
    pub stacks: Vec<StackResult>,
    pub packages: usize,
    pub uploaded: usize,
    /// Image blobs (layers and configs) uploaded to the registry.
    pub image_blobs_uploaded: usize,
    /// Lambda versions published by this deploy.
    pub versions_published: usize,
    /// How the new versions took traffic, when some did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<String>,
    pub outputs: BTreeMap<String, String>,
    pub outputs_file: String,
    pub seconds: f64,
}

impl fmt::Display for Deployed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let changed = self.stacks.iter().filter(|s| s.changed).count();
        if changed == 0 {
            writeln!(
                f,
                "{} is up to date: no changes in {} stacks",
                self.environment,
                self.stacks.len()
            )?;
        } else {
            writeln!(
                f,
                "deployed {} in {:.1} s: {changed} of {} stacks changed",
                self.environment,
                self.seconds,
                self.stacks.len()
            )?;
        }
        writeln!(
            f,
            "packages: {} uploaded, {} already there; versions published: {}",
            self.uploaded,
            self.packages - self.uploaded,
            self.versions_published
        )?;
        if self.image_blobs_uploaded > 0 {
            writeln!(f, "image blobs uploaded: {}", self.image_blobs_uploaded)?;
        }
        if let Some(r) = &self.rollout {
            writeln!(f, "rollout: {r}")?;
        }
        for (k, v) in &self.outputs {
            writeln!(f, "  {k:<24} {v}")?;
        }
        writeln!(f, "outputs written to {}", self.outputs_file)
    }
}

/// Deploys an environment whose packages are built and whose lock is held:
/// every stack in order through a change set, then the rollout of the
/// functions' new versions.
pub async fn deploy(
    session: &Session,
    request: &Request,
    packages: &[crate::deploy::assets::Package],
    bootstrap: &Bootstrap,
    ui: &Ui,
) -> Result<Deployed, Error> {
    let bucket = bootstrap.assets_bucket.as_str();
    let gates =
        gate_alarms(&session.env.name, &session.env.spec).map_err(|message| Error::Refused {
            message,
            help: Some("fix `rollout.alarms` in the spec; nothing was changed".into()),
        })?;
    let mut stacks = session.stacks().await?;
    serving_versions(session, &mut stacks).await?;
    // Busy or broken stacks stop the deploy before anything moves.
    for (m, current) in &stacks {
        check_ready(current.as_ref(), &m.name)?;
    }
    // So do reservations the account's concurrency cannot take.
    let app = stacks
        .iter()
        .find(|(m, _)| m.id == StackKind::App.id())
        .and_then(|(_, s)| s.as_ref());
    check_concurrency(session, app).await?;
    let store = S3Store {
        client: session.clients.s3.clone(),
        bucket: bucket.to_string(),
    };
    if let Some(state) = store.load(&session.env.name).await.map_err(call)?
        && state.phase == Phase::InProgress
    {
        return Err(Error::Refused {
            message: format!(
                "a rollout of `{}` is in flight: step {}/{}, {}% on the new versions",
                session.env.name,
                state.step + 1,
                state.steps.len(),
                state.percent()
            ),
            help: Some(format!(
                "finish it first: `pipeline rollout promote --env {0}` or `pipeline rollout abort --env {0}`",
                session.env.name
            )),
        });
    }
    let zips = session.upload_packages(bucket, packages, ui).await?;
    let (images, image_blobs_uploaded) = session
        .push_images(&bootstrap.repository_uri, packages, ui)
        .await?;
    let uploaded = zips + images;
    let reporter = CliReporter::new(ui);
    let opts = options(request.yes, request.allow_replacement);
    let mut outputs: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut results = Vec::new();
    for (m, current) in &stacks {
        // The update that follows an unprotected create is asked for by now.
        let created = first_create(m, current.as_ref())
            && create_unprotected(session, m, &outputs, bootstrap, &opts, &reporter).await?;
        let plan = session
            .plan(m, &outputs, packages, Some(bootstrap), current.as_ref())
            .await?;
        let opts = if created {
            options(true, request.allow_replacement)
        } else {
            opts.clone()
        };
        let deployed = deploy_stack(&session.cfn, &plan, &opts, &reporter, &reporter).await?;
        results.push(StackResult {
            name: m.name.clone(),
            status: deployed.stack.status.clone(),
            changed: deployed.changed,
        });
        outputs.insert(m.id.to_string(), deployed.stack.outputs);
    }
    let (versions_published, rollout) = roll_out(
        session,
        request,
        gates,
        &stacks,
        &mut outputs,
        packages,
        bootstrap,
        &store,
        &reporter,
    )
    .await?;
    reporter.finish();
    let by_name: BTreeMap<&str, &BTreeMap<String, String>> = stacks
        .iter()
        .filter_map(|(m, _)| Some((m.name.as_str(), outputs.get(m.id)?)))
        .collect();
    let file = session.out_dir().join("outputs.json");
    write_json(&file, &by_name)?;
    Ok(Deployed {
        event: "deployed",
        environment: session.env.name.clone(),
        stacks: results,
        packages: packages.len(),
        uploaded,
        image_blobs_uploaded,
        versions_published,
        rollout,
        outputs: outputs.remove(StackKind::App.id()).unwrap_or_default(),
        outputs_file: file.display().to_string(),
        seconds: 0.0,
    })
}

/// Whether the deploy creates the stateful stack now: it does not exist,
/// or a failed first create left it to be deleted and created again.
fn first_create(m: &ManifestStack, current: Option<&Stack>) -> bool {
    m.stateful
        && current.is_none_or(|s| {
            matches!(
                s.status.as_str(),
                "ROLLBACK_COMPLETE" | "REVIEW_IN_PROGRESS"
            )
        })
}

/// Creates the data stack with its databases unprotected, so that a failed
/// create rolls back to ROLLBACK_COMPLETE rather than ROLLBACK_FAILED (a
/// protected instance cannot be deleted); the update that follows at once
/// turns deletion protection on in place (see `synth::Options`). Nothing is
/// done when no protection is asked for; whether the stack was created.
async fn create_unprotected(
    session: &Session,
    m: &ManifestStack,
    outputs: &BTreeMap<String, BTreeMap<String, String>>,
    bootstrap: &Bootstrap,
    opts: &crate::deploy::engine::Options,
    reporter: &Progress,
) -> Result<bool, Error> {
    let Some(unprotected) = session.unprotected(m)? else {
        return Ok(false);
    };
    reporter.line(&Note {
        event: "note",
        message: format!(
            "creating {} with deletion protection off, so that a failed create rolls back cleanly; the update that follows turns it on",
            m.name
        ),
    });
    let plan = session
        .plan_of(&unprotected, m, outputs, &[], Some(bootstrap), None)
        .await?;
    deploy_stack(&session.cfn, &plan, opts, reporter, reporter).await?;
    Ok(true)
}

fn call(e: CallError) -> Error {
    Error::Aws { message: e.0 }
}

/// Sets the app stack's live-version parameters to the versions the aliases
/// serve, so that a deploy never moves traffic: a rollout (or a `rollout
/// promote` or `abort`) may have moved the aliases since the stack's last
/// update.
async fn serving_versions(
    session: &Session,
    stacks: &mut [(ManifestStack, Option<Stack>)],
) -> Result<(), Error> {
    let Some((_, Some(app))) = stacks.iter_mut().find(|(m, _)| m.id == StackKind::App.id()) else {
        return Ok(());
    };
    let lambda = Lambda {
        client: session.clients.lambda.clone(),
    };
    for (id, _) in session.env.spec.functions.all() {
        let key = function_key(id, "FunctionName");
        if let Some(name) = app.outputs.get(&key) {
            let version = lambda.serving(name).await.map_err(call)?;
            app.parameters
                .insert(function_key(id, "LiveVersion"), version);
        }
    }
    Ok(())
}

/// The app stack's output naming the migrations' function.
const MIGRATOR_OUTPUT: &str = "MigrateFunctionName";

/// Publishes a version of each function whose code or configuration
/// changed, checks the new versions (migrations, then a smoke invocation of
/// each) and moves the `live` aliases to them as the strategy says, gated by
/// the alarms. At the end the app stack's parameters are set to the versions
/// serving, so that CloudFormation's view of the aliases matches theirs.
#[allow(clippy::too_many_arguments)]
async fn roll_out(
    session: &Session,
    request: &Request,
    gates: Vec<String>,
    stacks: &[(ManifestStack, Option<Stack>)],
    outputs: &mut BTreeMap<String, BTreeMap<String, String>>,
    packages: &[Package],
    bootstrap: &Bootstrap,
    store: &S3Store,
    progress: &Progress,
) -> Result<(usize, Option<String>), Error> {
    let spec = &session.env.spec;
    let lambda = Lambda {
        client: session.clients.lambda.clone(),
    };
    let app = outputs
        .get(StackKind::App.id())
        .cloned()
        .unwrap_or_default();
    let mut targets = Vec::new();
    let mut published = 0;
    for (id, _) in spec.functions.all() {
        let key = function_key(id, "FunctionName");
        let Some(name) = app.get(&key) else {
            continue;
        };
        let from = lambda.serving(name).await.map_err(call)?;
        let (to, new) = lambda.version(name).await.map_err(call)?;
        published += usize::from(new);
        if to != from {
            targets.push(Target {
                function: id,
                name: name.clone(),
                from,
                to,
            });
        }
    }
    if targets.is_empty() {
        return Ok((published, None));
    }
    let no_traffic = || Some("no traffic moved; the previous versions still serve".into());
    // A version just published may be Pending, and cannot be invoked until
    // it is Active ("Lambda function states").
    for t in &targets {
        wait_active(
            &lambda,
            &SystemClock,
            &t.name,
            &t.to,
            crate::deploy::poll_interval(),
            ACTIVE_TIMEOUT,
        )
        .await
        .map_err(|e| Error::Deploy {
            message: e.0,
            help: no_traffic(),
        })?;
    }
    let cloudwatch = CloudWatch::new(&session.clients.config);
    let watch = GateVersions { session };
    let rollouts = Rollouts {
        aliases: &lambda,
        gates: &cloudwatch,
        watch: &watch,
        store,
        clock: &SystemClock,
        reporter: progress,
        alarms: gates,
        poll: std::time::Duration::from_secs(u64::from(spec.rollout.poll_seconds)),
        min_invocations: spec.rollout.min_invocations,
    };
    // Gates that do not exist could never send traffic back.
    rollouts.check_gates().await.map_err(|e| Error::Deploy {
        message: e.0,
        help: Some(
            "deploy the monitoring stack that makes them, or fix `rollout.alarms` and `rollout.external_alarms`; no traffic moved".into(),
        ),
    })?;
    // Pre-traffic: any failure here leaves all traffic where it is.
    let mut destructive: Vec<String> = Vec::new();
    if let Some(loader) = targets.iter().find(|t| t.function == FunctionId::Loader) {
        let migrate = serde_json::json!({"action": "migrate"});
        // The migrations' own function (the loader's package, updated with
        // the stack); a stack made before it had one migrates through the
        // new loader version.
        let (name, version) = match app.get(MIGRATOR_OUTPUT) {
            Some(migrator) => (migrator.as_str(), "$LATEST"),
            None => (loader.name.as_str(), loader.to.as_str()),
        };
        let answer = lambda.invoke(name, version, &migrate).await.map_err(call)?;
        if let Some(message) = migration_refused(&answer) {
            return Err(Error::Refused {
                message,
                help: no_traffic(),
            });
        }
        if let Some(e) = invocation_problem(FunctionId::Loader, &answer) {
            return Err(Error::Deploy {
                message: format!(
                    "the migrations for loader version {} failed: {e}",
                    loader.to
                ),
                help: no_traffic(),
            });
        }
        let report: serde_json::Value = serde_json::from_str(&answer.payload).unwrap_or_default();
        destructive = serde_json::from_value(report["destructive"].clone()).unwrap_or_default();
    }
    for t in &targets {
        let event = crate::rollout::smoke_event(t.function);
        let answer = lambda.invoke(&t.name, &t.to, &event).await.map_err(call)?;
        if let Some(e) = smoke_problem(t.function, &answer) {
            return Err(Error::Deploy {
                message: format!(
                    "the smoke invocation of {} version {} failed: {e}",
                    t.function, t.to
                ),
                help: no_traffic(),
            });
        }
    }
    // Weights need a published version on both sides: the first rollout
    // (from `$LATEST`) moves all at once.
    let strategy = request.strategy.unwrap_or(spec.rollout.strategy);
    let strategy = if targets.iter().any(|t| t.from == "$LATEST") {
        crate::spec::model::Strategy::AllAtOnce
    } else if !destructive.is_empty() && strategy != crate::spec::model::Strategy::AllAtOnce {
        // Old and new versions cannot share a table changed this way: the
        // old loader cannot load into a retyped or dropped column.
        progress.line(&format!(
            "all traffic moves at once: the migration made changes that the previous versions cannot load into ({})",
            destructive.join("; ")
        ));
        crate::spec::model::Strategy::AllAtOnce
    } else {
        strategy
    };
    let previous_tag = store
        .load(&session.env.name)
        .await
        .map_err(call)?
        .and_then(|s| s.tag);
    let now = chrono::Utc::now().to_rfc3339();
    let mut state = State {
        environment: session.env.name.clone(),
        strategy,
        steps: steps(strategy, &spec.rollout),
        step: 0,
        phase: Phase::InProgress,
        started_at: now.clone(),
        updated_at: now,
        targets,
        alarms: Vec::new(),
        finished: Vec::new(),
        // The rollout's record replaces the previous one: saved only if
        // that is still the one read before (else another deploy started).
        tag: previous_tag,
    };
    match rollouts.run(&mut state).await.map_err(call)? {
        Outcome::RolledBack(firing) => {
            return Err(Error::RolledBack {
                message: format!(
                    "the rollout was rolled back: {}",
                    listed(&firing, |a| format!(
                        "{} is in ALARM ({})",
                        a.name, a.reason
                    ))
                ),
            });
        }
        Outcome::Blocked(firing) => {
            return Err(Error::Refused {
                message: format!(
                    "gate alarms are in ALARM before any traffic moved: {}",
                    listed(&firing, |a| format!("{} ({})", a.name, a.reason))
                ),
                help: Some(
                    "no traffic moved; the previous versions still serve. Find what the alarms say, then deploy again".into(),
                ),
            });
        }
        Outcome::Ended(Phase::Aborted | Phase::RolledBack) => {
            return Err(Error::RolledBack {
                message: "the rollout was aborted by `pipeline rollout abort` while it ran; the previous versions serve".into(),
            });
        }
        Outcome::Promoted | Outcome::Ended(_) => {}
    }
    // Post-traffic: the API end to end; a failure sends the traffic back.
    let smoke = post_traffic_smoke(session, &app).await?;
    progress.line(&smoke);
    if !smoke.passed {
        rollouts.abort(&mut state, None).await.map_err(call)?;
        return Err(Error::RolledBack {
            message: format!(
                "the rollout was rolled back: the smoke checks of {} failed",
                smoke.url
            ),
        });
    }
    // No drift: the app stack's live versions become the ones serving.
    let app = stacks
        .iter()
        .map(|(m, _)| m)
        .find(|m| m.id == StackKind::App.id());
    if let Some((m, Some(mut current))) = match app {
        Some(m) => Some((m, session.stack(&m.name).await?)),
        None => None,
    } {
        for t in &state.targets {
            current
                .parameters
                .insert(function_key(t.function, "LiveVersion"), t.to.clone());
        }
        let plan = session
            .plan(m, outputs, packages, Some(bootstrap), Some(&current))
            .await?;
        let done = deploy_stack(
            &session.cfn,
            &plan,
            &options(true, false),
            progress,
            progress,
        )
        .await?;
        outputs.insert(m.id.to_string(), done.stack.outputs);
    }
    Ok((published, Some(format!("{} promoted", strategy.as_str()))))
}

/// `pipeline smoke` against the deployed API, with the key in
/// `PIPELINE_API_KEY` when the API takes keys; skipped (and said so) when
/// there is no key, or the API wants SigV4.
async fn post_traffic_smoke(
    session: &Session,
    app: &BTreeMap<String, String>,
) -> Result<crate::smoke::Smoke, Error> {
    use crate::spec::model::AuthMode;
    let url = app.get("ApiUrl").cloned().unwrap_or_default();
    let key = std::env::var("PIPELINE_API_KEY").ok();
    let skipped = |why: &str| crate::smoke::Smoke {
        url: url.clone(),
        passed: true,
        checks: vec![crate::smoke::Check {
            check: "api",
            result: "skipped",
            detail: why.to_string(),
            millis: 0,
        }],
    };
    match (session.env.spec.api.auth, &key) {
        (AuthMode::Iam, _) => {
            return Ok(skipped(
                "the API takes SigV4 requests, which the smoke checks do not sign",
            ));
        }
        (AuthMode::ApiKey, None) => {
            return Ok(skipped(
                "set PIPELINE_API_KEY to the API's key (`aws apigateway get-api-key --api-key <ApiKeyId> --include-value`) to check the API after each rollout",
            ));
        }
        (AuthMode::Cognito, _) if std::env::var_os(crate::client::CLIENT_SECRET).is_none() => {
            return Ok(skipped(
                "set PIPELINE_CLIENT_ID and PIPELINE_CLIENT_SECRET to a client with the datasets' read and write scopes (`aws cognito-idp describe-user-pool-client`) to check the API after each rollout",
            ));
        }
        _ => {}
    }
    let target = crate::client::Target {
        env: session.env.name.clone(),
        url: Some(url),
        api_key: key,
        client: None,
    };
    let api = crate::client::Api::with_token_url(&target, app.get("TokenUrl").cloned())?;
    Ok(crate::smoke::check(&api, &session.env.spec.datasets, 120).await)
}

/// The alarms, each as `each` writes it, joined with `; `.
fn listed(
    firing: &[crate::rollout::Firing],
    each: impl Fn(&crate::rollout::Firing) -> String,
) -> String {
    firing.iter().map(each).collect::<Vec<_>>().join("; ")
}
