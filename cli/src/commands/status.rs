//! `pipeline status`: the environment's stacks, their state and last
//! update, and which function versions serve traffic.

use crate::spec::model::FunctionId;
use crate::synth::StackKind;
use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::Cli;
use super::load;
use crate::aws::{AwsArgs, runtime};
use crate::deploy::Session;
use crate::deploy::cfn::CloudFormation;
use crate::{Error, output::Ui};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Environment to look at.
    #[arg(short, long = "env", value_name = "ENV")]
    pub env: String,
    #[command(flatten)]
    pub aws: AwsArgs,
}

#[derive(Debug, Serialize)]
pub struct StackStatus {
    pub name: String,
    /// The stack's status, or `NOT_DEPLOYED`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct FunctionStatus {
    pub function: FunctionId,
    pub name: String,
    /// The version the `live` alias points to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live_version: Option<String>,
    /// Versions taking a share of the traffic besides `live_version`.
    pub weights: BTreeMap<String, f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub environment: String,
    pub stacks: Vec<StackStatus>,
    pub functions: Vec<FunctionStatus>,
    pub outputs: BTreeMap<String, String>,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.environment)?;
        for s in &self.stacks {
            write!(f, "  {:<28} {:<24}", s.name, s.status)?;
            if let Some(t) = &s.last_updated {
                write!(f, " {t}")?;
            }
            match &s.reason {
                Some(r) => writeln!(f, "  {r}")?,
                None => writeln!(f)?,
            }
        }
        if !self.functions.is_empty() {
            writeln!(f, "functions")?;
        }
        for fs in &self.functions {
            write!(f, "  {:<8} {:<28}", fs.function, fs.name)?;
            match &fs.live_version {
                Some(v) => {
                    let others: f64 = fs.weights.values().sum();
                    write!(f, " live: version {v} {:.0}%", (1.0 - others) * 100.0)?;
                    for (version, w) in &fs.weights {
                        write!(f, ", version {version} {:.0}%", w * 100.0)?;
                    }
                    writeln!(f)?;
                }
                None => writeln!(f, " {}", fs.note.as_deref().unwrap_or(""))?,
            }
        }
        for (k, v) in &self.outputs {
            writeln!(f, "  {k:<28} {v}")?;
        }
        Ok(())
    }
}

pub fn run(cli: &Cli, args: &Args, ui: &Ui) -> Result<(), Error> {
    let (env, synthesis) = load(cli, &args.env, ui)?;
    let status = runtime()?.block_on(async {
        let session = Session::open(env, synthesis, &args.aws).await;
        let mut stacks = Vec::new();
        let bootstrap = session.synthesis.manifest.bootstrap.name.clone();
        let boot = session
            .cfn
            .stack(&bootstrap)
            .await
            .map_err(|e| crate::aws::aws_error(&format!("cannot read stack {bootstrap}"), e))?;
        let mut all = vec![(bootstrap, None, boot)];
        all.extend(
            session
                .stacks()
                .await?
                .into_iter()
                .map(|(m, s)| (m.name, Some(m.id), s)),
        );
        let mut outputs = BTreeMap::new();
        for (name, id, stack) in all {
            match stack {
                Some(s) => {
                    if id == Some(StackKind::App.id()) {
                        outputs = s.outputs.clone();
                    }
                    stacks.push(StackStatus {
                        name,
                        status: s.status,
                        reason: s.status_reason,
                        last_updated: s.last_updated,
                    });
                }
                None => stacks.push(StackStatus {
                    name,
                    status: "NOT_DEPLOYED".into(),
                    reason: None,
                    last_updated: None,
                }),
            }
        }
        let mut functions = Vec::new();
        for (id, _) in session.env.spec.functions.all() {
            let key = crate::deploy::function_key(id, "FunctionName");
            let Some(name) = outputs.get(&key).cloned() else {
                continue;
            };
            functions.push(function_status(&session, id, name).await);
        }
        Ok::<_, Error>(Status {
            environment: session.env.name.clone(),
            stacks,
            functions,
            outputs,
        })
    })?;
    ui.result(&status);
    Ok(())
}

async fn function_status(session: &Session, id: FunctionId, name: String) -> FunctionStatus {
    let lambda = crate::rollout::aws::Lambda {
        client: session.clients.lambda.clone(),
    };
    let (route, note) = match lambda.live_route(&name).await {
        Ok(Some(route)) => (Some(route), None),
        Ok(None) => (None, Some("no live alias yet".to_string())),
        Err(e) => (None, Some(format!("no live alias: {e}"))),
    };
    FunctionStatus {
        function: id,
        name,
        live_version: route.as_ref().map(|r| r.version.clone()),
        weights: route.map(|r| r.weights).unwrap_or_default(),
        note,
    }
}
