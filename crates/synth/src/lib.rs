//! Rendering an environment into CloudFormation templates, a manifest and
//! the API's OpenAPI document. Output is byte-for-byte deterministic.

pub mod apigateway;
pub mod context;
pub mod dashboard;
pub mod openapi;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Serialize;
use sha2::{Digest, Sha256};

use context::Param;
use pipeline_spec::Environment;

/// The stacks of an environment, in deploy order.
pub const STACKS: &[StackKind] = &[
    StackKind::Network,
    StackKind::Data,
    StackKind::Monitoring,
    StackKind::App,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StackKind {
    Network,
    Data,
    Monitoring,
    App,
}

impl StackKind {
    pub fn id(self) -> &'static str {
        match self {
            StackKind::Network => "network",
            StackKind::Data => "data",
            StackKind::Monitoring => "monitoring",
            StackKind::App => "app",
        }
    }

    /// Whether the stack holds data that a routine deploy must not touch.
    pub fn stateful(self) -> bool {
        matches!(self, StackKind::Data)
    }

    fn template(self) -> &'static str {
        match self {
            StackKind::Network => "network.json.tera",
            StackKind::Data => "data.json.tera",
            StackKind::Monitoring => "monitoring.json.tera",
            StackKind::App => "app.json.tera",
        }
    }
}

const TEMPLATES: &[(&str, &str)] = &[
    (
        "macros.json.tera",
        include_str!("../../../templates/macros.json.tera"),
    ),
    (
        "network.json.tera",
        include_str!("../../../templates/network.json.tera"),
    ),
    (
        "data.json.tera",
        include_str!("../../../templates/data.json.tera"),
    ),
    (
        "monitoring.json.tera",
        include_str!("../../../templates/monitoring.json.tera"),
    ),
    (
        "app.json.tera",
        include_str!("../../../templates/app.json.tera"),
    ),
    (
        "bootstrap.json.tera",
        include_str!("../../../templates/bootstrap.json.tera"),
    ),
];

/// A rendering that failed: a bug in the templates or in what feeds them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("rendering {what} failed: {message}")]
    Render { what: String, message: String },
}

fn tera() -> Result<&'static tera::Tera, Error> {
    static TERA: OnceLock<Result<tera::Tera, String>> = OnceLock::new();
    TERA.get_or_init(|| {
        let mut t = tera::Tera::default();
        t.autoescape_on(Vec::new());
        t.add_raw_templates(TEMPLATES.iter().copied())
            .map_err(|e| render_message(&e))?;
        Ok(t)
    })
    .as_ref()
    .map_err(|message| Error::Render {
        what: "the templates".into(),
        message: message.clone(),
    })
}

fn render_message(e: &tera::Error) -> String {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

/// Parses the templates now (they are parsed once per process); lets a
/// caller overlap that work with loading the environments.
pub fn prepare() -> Result<(), Error> {
    tera().map(|_| ())
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    pipeline_contract::hex(&Sha256::digest(bytes))
}

/// Renders a template and re-reads the result as JSON, so that a template bug
/// cannot produce an invalid file, and formats it the same way every time.
fn render<T: Serialize>(name: &str, context: &T) -> Result<serde_json::Value, Error> {
    let fail = |message: String| Error::Render {
        what: name.to_string(),
        message,
    };
    let ctx = tera::Context::from_serialize(context).map_err(|e| fail(render_message(&e)))?;
    let text = tera()?
        .render(name, &ctx)
        .map_err(|e| fail(render_message(&e)))?;
    serde_json::from_str(&text).map_err(|e| {
        let line = text.lines().nth(e.line().saturating_sub(1)).unwrap_or("");
        fail(format!(
            "invalid JSON at line {}: {e}\n    {}",
            e.line(),
            line.trim()
        ))
    })
}

fn pretty(value: &serde_json::Value) -> Result<String, Error> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| Error::Render {
        what: "JSON".into(),
        message: e.to_string(),
    })?;
    text.push('\n');
    Ok(text)
}

/// The plan of one stack: where its template is and where its parameters come from.
#[derive(Debug, Clone, Serialize)]
pub struct ManifestStack {
    pub id: &'static str,
    /// CloudFormation stack name: `<project>-<env>-<id>`.
    pub name: String,
    pub template: String,
    pub stateful: bool,
    pub termination_protection: bool,
    pub parameters: Vec<Param>,
    pub outputs: Vec<String>,
    pub resources: usize,
}

/// A package the deploy builds and uploads before the stacks.
#[derive(Debug, Clone, Serialize)]
pub struct Asset {
    pub id: &'static str,
    pub kind: &'static str,
    /// The crate that is built, relative to the workspace.
    pub package: String,
    pub architecture: &'static str,
}

/// The stack `pipeline bootstrap` deploys once, before the others.
#[derive(Debug, Clone, Serialize)]
pub struct BootstrapStack {
    /// CloudFormation stack name: `<project>-<env>-bootstrap`.
    pub name: String,
    pub template: String,
    pub outputs: Vec<String>,
}

/// What the deploy engine needs to know: stacks in order, their parameters and outputs, the assets.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub version: u32,
    pub project: String,
    pub environment: String,
    pub region: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Tags given to every stack (and so to every resource that takes tags).
    pub tags: BTreeMap<String, String>,
    pub bootstrap: BootstrapStack,
    pub stacks: Vec<ManifestStack>,
    pub assets: Vec<Asset>,
}

/// The files of one environment, by name, in a fixed order.
#[derive(Debug, Clone)]
pub struct Synthesis {
    pub manifest: Manifest,
    pub files: Vec<(String, String)>,
}

fn outputs_of(template: &serde_json::Value) -> Vec<String> {
    template
        .get("Outputs")
        .and_then(|v| v.as_object())
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// How a synthesis renders the stacks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// The stacks are about to be created, not updated: the data stack's
    /// database instances are rendered without deletion protection, so that
    /// a failed create rolls back cleanly (see [`context::data`]). The deploy
    /// uses this rendering for a stack that does not exist yet (or that a
    /// failed first create left in ROLLBACK_COMPLETE) and, once the create
    /// succeeded, updates the stack at once with the default rendering,
    /// which turns protection on in place.
    pub first_create: bool,
}

/// Renders every stack of an environment, as deployed stacks are updated.
pub fn synthesize(env: &Environment) -> Result<Synthesis, Error> {
    synthesize_with(env, Options::default())
}

/// Renders every stack of an environment with `options`.
pub fn synthesize_with(env: &Environment, options: Options) -> Result<Synthesis, Error> {
    let spec = &env.spec;
    let name = env.name.as_str();
    let prefix = format!("{}-{name}", spec.project);
    let mut files = Vec::new();
    let mut stacks = Vec::new();
    for kind in STACKS {
        let (template, params) = match kind {
            StackKind::Network => (
                render(kind.template(), &context::network(name, spec))?,
                Vec::new(),
            ),
            StackKind::Data => {
                let ctx = context::data(name, spec, options.first_create);
                (render(kind.template(), &ctx)?, ctx.params)
            }
            StackKind::Monitoring => {
                let mut ctx = context::monitoring(name, spec);
                if spec.monitoring.dashboard {
                    ctx.dashboard = Some(dashboard::body(&prefix, spec, &ctx.alarms));
                }
                (render(kind.template(), &ctx)?, ctx.params)
            }
            StackKind::App => {
                let document = openapi::document(name, spec, true);
                let problems = apigateway::import_problems(&document);
                if !problems.is_empty() {
                    return Err(Error::Render {
                        what: "the REST API's OpenAPI body (API Gateway's import rules)".into(),
                        message: problems.join("; "),
                    });
                }
                let body = serde_json::to_string(&document).map_err(|e| Error::Render {
                    what: "the OpenAPI document".into(),
                    message: e.to_string(),
                })?;
                let ctx = context::app(name, spec, body);
                (render(kind.template(), &ctx)?, ctx.params)
            }
        };
        let count = |key: &str| {
            template
                .get(key)
                .and_then(|v| v.as_object())
                .map(|o| o.len())
        };
        let outputs = outputs_of(&template);
        let file = format!("{}.template.json", kind.id());
        stacks.push(ManifestStack {
            id: kind.id(),
            name: format!("{prefix}-{}", kind.id()),
            template: file.clone(),
            stateful: kind.stateful(),
            termination_protection: kind.stateful() && spec.prod_like(),
            parameters: params,
            outputs,
            resources: count("Resources").unwrap_or(0),
        });
        files.push((file, pretty(&template)?));
    }
    let bootstrap = render("bootstrap.json.tera", &context::bootstrap(name, spec))?;
    let bootstrap_stack = BootstrapStack {
        name: format!("{prefix}-bootstrap"),
        template: "bootstrap.template.json".into(),
        outputs: outputs_of(&bootstrap),
    };
    files.push((bootstrap_stack.template.clone(), pretty(&bootstrap)?));
    files.push((
        "openapi.json".into(),
        pretty(&openapi::document(name, spec, false))?,
    ));

    let mut tags = spec.tags.clone();
    tags.insert("pipeline:project".into(), spec.project.clone());
    tags.insert("pipeline:environment".into(), name.to_string());
    let manifest = Manifest {
        version: 1,
        project: spec.project.clone(),
        environment: name.to_string(),
        region: spec.region.clone(),
        account: spec.account.clone(),
        tags,
        bootstrap: bootstrap_stack,
        stacks,
        assets: spec
            .functions
            .all()
            .iter()
            .map(|(id, f)| Asset {
                id: id.as_str(),
                kind: "lambda-zip",
                package: format!("functions/{id}"),
                architecture: f.architecture.as_str(),
            })
            .collect(),
    };
    let manifest_json = serde_json::to_value(&manifest).map_err(|e| Error::Render {
        what: "the manifest".into(),
        message: e.to_string(),
    })?;
    files.push(("manifest.json".into(), pretty(&manifest_json)?));
    Ok(Synthesis { manifest, files })
}
