//! `pipeline envs`: one line per environment with its key scale settings.

use std::fmt;

use serde::Serialize;

use super::Cli;
use super::{invalid_summary, load_each};
use crate::spec::load::Loader;
use crate::{Error, output::Ui};

#[derive(Debug, clap::Args)]
pub struct Args {}

#[derive(Debug, Serialize)]
pub struct Listing {
    pub environments: Vec<Row>,
}

/// An environment's key settings; `valid: false` rows carry only the name.
#[derive(Debug, Serialize)]
pub struct Row {
    pub name: String,
    pub valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale: Option<Scale>,
}

#[derive(Debug, Serialize)]
pub struct Scale {
    pub region: String,
    pub azs: u8,
    pub instance_class: String,
    pub multi_az: bool,
    pub read_replicas: u8,
    pub deletion_protection: bool,
    pub rollout: String,
    pub log_retention_days: u32,
    pub auth: String,
}

impl fmt::Display for Listing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .environments
            .iter()
            .map(|r| r.name.len())
            .max()
            .unwrap_or(3)
            .max(3);
        writeln!(
            f,
            "{:width$}  {:<12}  {:>3}  {:<14}  {:<8}  {:>8}  {:<9}  {:<17}  {:>4}  AUTH",
            "ENV",
            "REGION",
            "AZS",
            "DATABASE",
            "MULTI-AZ",
            "REPLICAS",
            "PROTECTED",
            "ROLLOUT",
            "LOGS"
        )?;
        for row in &self.environments {
            match &row.scale {
                None => writeln!(
                    f,
                    "{:width$}  invalid: run `pipeline validate --env {}`",
                    row.name, row.name
                )?,
                Some(s) => writeln!(
                    f,
                    "{:width$}  {:<12}  {:>3}  {:<14}  {:<8}  {:>8}  {:<9}  {:<17}  {:>3}d  {}",
                    row.name,
                    s.region,
                    s.azs,
                    s.instance_class,
                    if s.multi_az { "yes" } else { "no" },
                    s.read_replicas,
                    if s.deletion_protection { "yes" } else { "no" },
                    s.rollout,
                    s.log_retention_days,
                    s.auth,
                )?,
            }
        }
        Ok(())
    }
}

pub fn run(cli: &Cli, _args: &Args, ui: &Ui) -> Result<(), Error> {
    let mut loader = Loader::new(cli.environments.clone());
    let names = loader.names().map_err(|e| super::load_error(e, &loader))?;
    let outcomes = load_each(&mut loader, &names, ui)?;
    let listing = Listing {
        environments: outcomes
            .iter()
            .map(|o| Row {
                name: o.name.clone(),
                valid: o.result.is_ok(),
                scale: o.result.as_ref().ok().map(|env| {
                    let s = &env.spec;
                    let rollout = match (
                        s.rollout.percent,
                        s.rollout.bake_minutes,
                        s.rollout.interval_minutes,
                    ) {
                        (Some(p), Some(b), _) => {
                            format!("{} {p}%/{b}m", s.rollout.strategy.as_str())
                        }
                        (Some(p), _, Some(i)) => {
                            format!("{} {p}%/{i}m", s.rollout.strategy.as_str())
                        }
                        _ => s.rollout.strategy.as_str().to_string(),
                    };
                    Scale {
                        region: s.region.clone(),
                        azs: s.network.azs,
                        instance_class: s.database.instance_class.clone(),
                        multi_az: s.database.multi_az,
                        read_replicas: s.database.read_replicas,
                        deletion_protection: s.database.deletion_protection,
                        rollout,
                        log_retention_days: s.monitoring.log_retention_days,
                        auth: serde_json::to_value(s.api.auth)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default(),
                    }
                }),
            })
            .collect(),
    };
    ui.result(&listing);
    match invalid_summary(&outcomes) {
        Some(error) => Err(error),
        None => Ok(()),
    }
}
