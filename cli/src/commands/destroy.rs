//! `pipeline destroy`: deletes the environment's stacks, newest first,
//! after saying what data outlives them.

use std::fmt;
use std::io::BufRead;

use serde::Serialize;

use super::Cli;
use super::load;
use crate::aws::{AwsArgs, aws_error, runtime};
use crate::deploy::engine::{delete_and_wait, deploy_stack};
use crate::deploy::progress::{CliReporter, interactive};
use crate::deploy::{Note, Session, kept_resources, options, resources};
use crate::synth::Synthesis;
use crate::{Error, output::Ui};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Environment to destroy.
    #[arg(short, long = "env", value_name = "ENV")]
    pub env: String,
    /// Do not ask to type the environment's name.
    #[arg(short, long)]
    pub yes: bool,
    /// Destroy a prod-like environment (deletion protection or gradual rollouts).
    #[arg(long)]
    pub force: bool,
    /// Delete the bootstrap stack too (its bucket and repository are kept).
    #[arg(long)]
    pub bootstrap: bool,
    #[command(flatten)]
    pub aws: AwsArgs,
}

/// A resource that outlives its stack.
#[derive(Debug, Serialize)]
pub struct Kept {
    pub stack: String,
    pub resource: String,
    pub resource_type: String,
    /// `Retain` or `RetainExceptOnCreate` (kept as it is), or `Snapshot` (a
    /// final snapshot is taken).
    pub policy: String,
}

#[derive(Debug, Serialize)]
pub struct Destroyed {
    pub event: &'static str,
    pub environment: String,
    pub deleted: Vec<String>,
    pub kept: Vec<Kept>,
}

impl fmt::Display for Destroyed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "destroyed {}: {} stacks deleted",
            self.environment,
            self.deleted.len()
        )?;
        for k in &self.kept {
            writeln!(f, "  {}", kept_line(k))?;
        }
        Ok(())
    }
}

/// A bucket emptied before its stack was deleted.
#[derive(Debug, Serialize)]
pub struct Emptied {
    pub event: &'static str,
    pub stack: String,
    pub bucket: String,
    /// Object versions and delete markers deleted.
    pub deleted: usize,
}

impl fmt::Display for Emptied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "emptied s3://{} of {}: {} object versions and delete markers deleted",
            self.bucket, self.stack, self.deleted
        )
    }
}

/// The buckets of a stack that CloudFormation deletes with it (those it
/// keeps are left alone): their logical ids.
fn deleted_buckets(synthesis: &Synthesis, template: &str) -> Result<Vec<String>, Error> {
    let kept: Vec<String> = kept_resources(synthesis, template)?
        .into_iter()
        .map(|(id, _, _)| id)
        .collect();
    Ok(resources(synthesis, template)?
        .into_iter()
        .filter(|(id, kind)| kind == "AWS::S3::Bucket" && !kept.contains(id))
        .map(|(id, _)| id)
        .collect())
}

/// Empties the stack's buckets that go with it. CloudFormation deletes only
/// empty buckets, and a versioned bucket is empty only without its object
/// versions and delete markers too (CloudFormation Template Reference:
/// DeletionPolicy attribute, Delete: "you must delete all objects in the
/// bucket for deletion to succeed"; S3 User Guide: Emptying a bucket).
async fn empty_buckets(
    session: &Session,
    stack: &str,
    buckets: &[String],
    reporter: &CliReporter,
) -> Result<(), Error> {
    if buckets.is_empty() {
        return Ok(());
    }
    let cfn = &session.clients.cloudformation;
    let listed = match cfn
        .describe_stack_resources()
        .stack_name(stack)
        .send()
        .await
    {
        Ok(out) => out,
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.meta().code() == Some("ValidationError")) =>
        {
            return Ok(()); // no such stack
        }
        Err(e) => {
            return Err(aws_error(
                &format!("cannot list the resources of {stack}"),
                e,
            ));
        }
    };
    for resource in listed.stack_resources() {
        let (Some(id), Some(bucket)) = (
            resource.logical_resource_id(),
            resource.physical_resource_id(),
        ) else {
            continue;
        };
        if !buckets.iter().any(|b| b == id) || bucket.is_empty() {
            continue;
        }
        let deleted = empty_bucket(&session.clients.s3, bucket).await?;
        reporter.line(&Emptied {
            event: "bucket_emptied",
            stack: stack.to_string(),
            bucket: bucket.to_string(),
            deleted,
        });
    }
    Ok(())
}

/// Deletes every object version and delete marker of a bucket (none when it
/// is already gone); how many.
async fn empty_bucket(s3: &aws_sdk_s3::Client, bucket: &str) -> Result<usize, Error> {
    use aws_sdk_s3::types::{Delete, ObjectIdentifier};
    let fail = |what: &str, e: &dyn std::fmt::Display| Error::Aws {
        message: format!("cannot {what} s3://{bucket}: {e}"),
    };
    let mut deleted = 0;
    let mut previous: Option<(String, Option<String>)> = None;
    loop {
        // Always the first page: what was deleted is gone from the listing.
        let page = match s3.list_object_versions().bucket(bucket).send().await {
            Ok(page) => page,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.meta().code() == Some("NoSuchBucket")) =>
            {
                return Ok(deleted);
            }
            Err(e) => {
                return Err(aws_error(
                    &format!("cannot list the object versions of s3://{bucket}"),
                    e,
                ));
            }
        };
        let versions = page
            .versions()
            .iter()
            .map(|v| (v.key(), v.version_id()))
            .chain(
                page.delete_markers()
                    .iter()
                    .map(|m| (m.key(), m.version_id())),
            );
        let mut objects = Vec::new();
        for (key, version) in versions {
            let Some(key) = key else { continue };
            objects.push(
                ObjectIdentifier::builder()
                    .key(key)
                    .set_version_id(version.map(str::to_string))
                    .build()
                    .map_err(|e| fail("name the objects of", &e))?,
            );
        }
        let Some(first) = objects.first() else {
            return Ok(deleted);
        };
        let first = (
            first.key().to_string(),
            first.version_id().map(str::to_string),
        );
        if previous.as_ref() == Some(&first) {
            return Err(fail(
                "empty",
                &format!("{} is still there after its deletion", first.0),
            ));
        }
        previous = Some(first);
        let count = objects.len();
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .map_err(|e| fail("name the objects of", &e))?;
        let out = s3
            .delete_objects()
            .bucket(bucket)
            .delete(delete)
            .send()
            .await
            .map_err(|e| {
                aws_error(
                    &format!("cannot delete the object versions of s3://{bucket}"),
                    e,
                )
            })?;
        if let Some(e) = out.errors().first() {
            return Err(fail(
                "empty",
                &format!(
                    "{} ({}) of {} objects could not be deleted",
                    e.message().unwrap_or("an error"),
                    e.key().unwrap_or(""),
                    out.errors().len()
                ),
            ));
        }
        deleted += count;
    }
}

/// Turns the deletion protection of a deployed stack's databases off (an
/// update in place, without interruption), since CloudFormation cannot
/// delete a protected instance and the stack's deletion would fail
/// (DELETE_FAILED). Their final snapshots are still taken. Nothing is done
/// to a stack that is not there or asks for no protection.
async fn unprotect(session: &Session, name: &str, reporter: &CliReporter) -> Result<(), Error> {
    let Some(m) = session
        .synthesis
        .manifest
        .stacks
        .iter()
        .find(|m| m.name == name && m.stateful)
    else {
        return Ok(());
    };
    let Some(unprotected) = session.unprotected(m)? else {
        return Ok(());
    };
    let Some(current) = session.stack(name).await? else {
        return Ok(());
    };
    reporter.line(&Note {
        event: "note",
        message: format!("turning deletion protection off in {name} before deleting it"),
    });
    let outputs = session.outputs().await?;
    let bootstrap = session.bootstrap().await.ok();
    let plan = session
        .plan_of(
            &unprotected,
            m,
            &outputs,
            &[],
            bootstrap.as_ref(),
            Some(&current),
        )
        .await?;
    // Replacing a database on its way out is refused all the same.
    deploy_stack(
        &session.cfn,
        &plan,
        &options(true, false),
        reporter,
        reporter,
    )
    .await?;
    Ok(())
}

fn kept_line(k: &Kept) -> String {
    let what = if k.policy == "Snapshot" {
        "a final snapshot is kept"
    } else {
        "kept"
    };
    format!(
        "{} ({}) of {}: {what}",
        k.resource, k.resource_type, k.stack
    )
}

pub fn run(cli: &Cli, args: &Args, ui: &Ui) -> Result<(), Error> {
    let (env, synthesis) = load(cli, &args.env, ui)?;
    if env.spec.prod_like() && !args.force {
        return Err(Error::Refused {
            message: format!(
                "`{}` is prod-like (deletion protection or gradual rollouts); nothing was deleted",
                env.name
            ),
            help: Some("pass --force to destroy it anyway".into()),
        });
    }
    let mut stacks: Vec<(String, String)> = synthesis
        .manifest
        .stacks
        .iter()
        .rev()
        .map(|s| (s.name.clone(), s.template.clone()))
        .collect();
    if args.bootstrap {
        let b = &synthesis.manifest.bootstrap;
        stacks.push((b.name.clone(), b.template.clone()));
    }
    let mut kept = Vec::new();
    for (name, template) in &stacks {
        for (resource, resource_type, policy) in kept_resources(&synthesis, template)? {
            kept.push(Kept {
                stack: name.clone(),
                resource,
                resource_type,
                policy,
            });
        }
    }
    if !args.yes {
        if !interactive() {
            return Err(Error::Refused {
                message: format!("destroying `{}` needs a confirmation", env.name),
                help: Some("pass --yes to destroy without a terminal".into()),
            });
        }
        eprintln!("This deletes the stacks of `{}`:", env.name);
        for (name, _) in &stacks {
            eprintln!("  {name}");
        }
        for k in &kept {
            eprintln!("  {}", kept_line(k));
        }
        eprint!("Type the environment's name to go on: ");
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if answer.trim() != env.name {
            return Err(Error::Refused {
                message: "not confirmed; nothing was deleted".into(),
                help: None,
            });
        }
    }
    let destroyed = runtime()?.block_on(async {
        let session = Session::open(env, synthesis, &args.aws).await;
        session.check_account().await?;
        let reporter = CliReporter::new(ui);
        let opts = options(true, true);
        let mut deleted = Vec::new();
        for (name, template) in &stacks {
            unprotect(&session, name, &reporter).await?;
            // Only now, after the confirmation: the buckets that go with the stack.
            let buckets = deleted_buckets(&session.synthesis, template)?;
            empty_buckets(&session, name, &buckets, &reporter).await?;
            if let Err(e) = delete_and_wait(&session.cfn, name, &opts, &reporter).await {
                if buckets.is_empty() {
                    return Err(e.into());
                }
                // Objects may have arrived since (S3 server access logs come
                // late): empty them again, and delete once more.
                empty_buckets(&session, name, &buckets, &reporter).await?;
                delete_and_wait(&session.cfn, name, &opts, &reporter).await?;
            }
            deleted.push(name.clone());
        }
        reporter.finish();
        Ok::<_, Error>(Destroyed {
            event: "destroyed",
            environment: session.env.name.clone(),
            deleted,
            kept,
        })
    })?;
    ui.event(&destroyed);
    Ok(())
}
