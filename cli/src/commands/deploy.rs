//! `pipeline deploy`: validate, build, upload, then every stack in order
//! through a change set, with live progress and the root cause of a failure.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Instant;

use serde::Serialize;

use crate::aws::{AwsArgs, aws_error, runtime};
use crate::deploy::engine::{check_ready, deploy_stack};
use crate::deploy::progress::CliReporter;
use crate::deploy::{PackageArgs, Session, load, options, packages, write_json};
use crate::{Cli, Error, output::Ui};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Environment to deploy.
    #[arg(short, long = "env", value_name = "ENV")]
    pub env: String,
    /// Execute the change sets without asking (required without a terminal).
    #[arg(short, long)]
    pub yes: bool,
    /// Let a change replace or delete a resource that holds data (database,
    /// bucket, queue, secret, key).
    #[arg(long)]
    pub allow_replacement: bool,
    /// Remove the lock a deploy that died left behind, then deploy.
    #[arg(long)]
    pub force_unlock: bool,
    #[command(flatten)]
    pub packages: PackageArgs,
    #[command(flatten)]
    pub aws: AwsArgs,
}

/// One stack's outcome.
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
            "packages: {} uploaded, {} already there",
            self.uploaded,
            self.packages - self.uploaded
        )?;
        for (k, v) in &self.outputs {
            writeln!(f, "  {k:<24} {v}")?;
        }
        writeln!(f, "outputs written to {}", self.outputs_file)
    }
}

pub fn run(cli: &Cli, args: &Args, ui: &Ui) -> Result<(), Error> {
    let started = Instant::now();
    // A spec with problems or a failed build stops here, before any AWS call.
    let (env, synthesis) = load(cli, &args.env, ui)?;
    let packages = packages(&env, &args.packages, None, ui)?;
    runtime()?.block_on(async {
        let session = Session::open(env, synthesis, &args.aws).await;
        session.check_account().await?;
        let bootstrap = session.bootstrap().await?;
        let bucket = bootstrap.assets_bucket.as_str();
        let lock = Lock::acquire(&session, bucket, args.force_unlock).await?;
        let result = deploy(&session, args, &packages, bucket, ui).await;
        lock.release(&session).await;
        let mut deployed = result?;
        deployed.seconds = started.elapsed().as_secs_f64();
        ui.event(&deployed);
        Ok(())
    })
}

async fn deploy(
    session: &Session,
    args: &Args,
    packages: &[crate::deploy::assets::Package],
    bucket: &str,
    ui: &Ui,
) -> Result<Deployed, Error> {
    let stacks = session.stacks().await?;
    // Busy or broken stacks stop the deploy before anything moves.
    for (m, current) in &stacks {
        check_ready(current.as_ref(), &m.name)?;
    }
    let uploaded = session.upload_packages(bucket, packages, ui).await?;
    let reporter = CliReporter::new(ui);
    let opts = options(args.yes, args.allow_replacement);
    let mut outputs: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut results = Vec::new();
    for (m, current) in &stacks {
        let plan = session
            .plan(m, &outputs, packages, Some(bucket), current.as_ref())
            .await?;
        let deployed = deploy_stack(&session.cfn, &plan, &opts, &reporter, &reporter).await?;
        results.push(StackResult {
            name: m.name.clone(),
            status: deployed.stack.status.clone(),
            changed: deployed.changed,
        });
        outputs.insert(m.id.to_string(), deployed.stack.outputs);
    }
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
        outputs: outputs.remove("app").unwrap_or_default(),
        outputs_file: file.display().to_string(),
        seconds: 0.0,
    })
}

/// One deploy at a time per environment: an object in the assets bucket,
/// created only if absent (an S3 conditional write), removed at the end.
struct Lock {
    bucket: String,
    key: String,
}

#[derive(Debug, Serialize, serde::Deserialize)]
struct LockRecord {
    started_at: String,
    by: String,
    pid: u32,
}

impl Lock {
    async fn acquire(session: &Session, bucket: &str, force: bool) -> Result<Lock, Error> {
        let lock = Lock {
            bucket: bucket.to_string(),
            key: format!("locks/{}.json", session.env.name),
        };
        let s3 = &session.clients.s3;
        if force {
            lock.release(session).await;
        }
        let record = LockRecord {
            started_at: chrono::Utc::now().to_rfc3339(),
            by: std::env::var("USER")
                .or_else(|_| std::env::var("GITHUB_ACTOR"))
                .unwrap_or_else(|_| "unknown".into()),
            pid: std::process::id(),
        };
        let body = serde_json::to_vec(&record).unwrap_or_default();
        let put = s3
            .put_object()
            .bucket(bucket)
            .key(&lock.key)
            .if_none_match("*")
            .body(body.into())
            .send()
            .await;
        match put {
            Ok(_) => Ok(lock),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 412) => {
                let holder =
                    match s3.get_object().bucket(bucket).key(&lock.key).send().await {
                        Ok(o) => o.body.collect().await.ok().and_then(|b| {
                            serde_json::from_slice::<LockRecord>(&b.into_bytes()).ok()
                        }),
                        Err(_) => None,
                    };
                let who = holder
                    .map(|h| format!(" (started {} by {}, pid {})", h.started_at, h.by, h.pid))
                    .unwrap_or_default();
                Err(Error::Refused {
                    message: format!(
                        "another deploy of `{}` is in progress{who}",
                        session.env.name
                    ),
                    help: Some(
                        "wait for it to finish; if it died, deploy again with --force-unlock"
                            .into(),
                    ),
                })
            }
            Err(e) => Err(aws_error("cannot take the deploy lock", e)),
        }
    }

    async fn release(&self, session: &Session) {
        let deleted = session
            .clients
            .s3
            .delete_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .send()
            .await;
        if let Err(e) = deleted {
            tracing::warn!(
                "cannot remove the deploy lock s3://{}/{}: {e}",
                self.bucket,
                self.key
            );
        }
    }
}
