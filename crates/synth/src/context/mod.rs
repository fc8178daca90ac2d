//! Typed contexts of the templates: everything a template shows is computed
//! here, so templates only lay it out.

use serde::Serialize;

use pipeline_spec::model::{AuthMode, Endpoint, FunctionId, Packaging, Spec};

/// A checkov check deliberately skipped on a resource, with the reason.
#[derive(Debug, Clone, Serialize)]
pub struct Skip {
    pub id: &'static str,
    pub comment: String,
}

fn skip(id: &'static str, comment: impl Into<String>) -> Skip {
    Skip {
        id,
        comment: comment.into(),
    }
}

/// Where a stack parameter's value comes from at deploy time.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// An output of an earlier stack of the same environment.
    Output {
        stack: &'static str,
        output: &'static str,
    },
    /// Where a function's code is: the S3 key of its package (uploaded
    /// under its SHA-256), or its image's URI with the image's digest.
    Asset { asset: &'static str },
    /// A value the deploy engine provides.
    Deploy { value: DeployValue },
}

/// The values a deploy provides itself, each handled by name in the
/// deploy (a closed set: a new one cannot be left unhandled).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DeployValue {
    /// The bootstrap stack's assets bucket.
    AssetsBucket,
    /// The version a function's `live` alias serves: the rollout's
    /// business, so a deploy keeps the current one.
    LiveVersion,
    /// The version the gate alarms watch.
    GateVersion,
}

/// One parameter of a stack.
#[derive(Debug, Clone, Serialize)]
pub struct Param {
    pub name: &'static str,
    /// CloudFormation parameter type.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub description: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<&'static str>,
    pub source: Source,
}

fn from_output(name: &'static str, stack: &'static str, description: &'static str) -> Param {
    Param {
        name,
        kind: "String",
        description,
        default: None,
        source: Source::Output {
            stack,
            output: name,
        },
    }
}

fn list_from_output(name: &'static str, stack: &'static str, description: &'static str) -> Param {
    Param {
        kind: "CommaDelimitedList",
        ..from_output(name, stack, description)
    }
}

/// What every template knows.
#[derive(Debug, Clone, Serialize)]
pub struct Common {
    pub project: String,
    pub env: String,
    /// `<project>-<env>`: the prefix of stack and resource names.
    pub prefix: String,
    pub description: String,
    pub prod_like: bool,
    /// Deletion policy of resources that hold data. Kept ones are
    /// `RetainExceptOnCreate`: deleted when the create that made them rolls
    /// back, so a fixed name is free again for the next create, and kept by
    /// every other operation (CloudFormation Template Reference:
    /// DeletionPolicy attribute).
    pub deletion_policy: &'static str,
    /// Their UpdateReplacePolicy, which takes Delete, Retain or Snapshot only
    /// (CloudFormation Template Reference: UpdateReplacePolicy attribute).
    pub replace_policy: &'static str,
}

/// The deletion policy of what outlives its stack.
pub const KEEP: &str = "RetainExceptOnCreate";

impl Common {
    fn new(env: &str, spec: &Spec, stack: &str, what: &str) -> Common {
        let prod_like = spec.prod_like();
        Common {
            project: spec.project.clone(),
            env: env.to_string(),
            prefix: format!("{}-{env}", spec.project),
            description: format!("{} {env}: {stack} stack ({what})", spec.project),
            prod_like,
            deletion_policy: if prod_like { KEEP } else { "Delete" },
            replace_policy: if prod_like { "Retain" } else { "Delete" },
        }
    }
}

mod app;
mod bootstrap;
mod data;
mod monitoring;
mod network;

pub use app::*;
pub use bootstrap::*;
pub use data::*;
pub use monitoring::*;
pub use network::*;

/// `secrets-manager` -> `SecretsManager`, `ingest` -> `Ingest`.
pub fn pascal(s: &str) -> String {
    s.split(['-', '_'])
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// A name in CamelCase, as API Gateway's model names and CloudFormation's
/// logical ids want them (alphanumeric: `page_views` becomes `PageViews`).
pub fn model_name(name: &str) -> String {
    name.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}
