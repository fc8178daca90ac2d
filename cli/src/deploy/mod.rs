//! The deploy engine: function packages, the bootstrap stack, and the
//! environment's stacks through change sets. The commands `bootstrap`,
//! `deploy`, `diff`, `status`, `outputs`, `destroy`, `logs` and `recover`
//! share what is here.

pub mod account;
pub mod assets;
pub mod cfn;
pub mod concurrency;
pub mod engine;
pub mod environment;
pub mod images;
pub mod lock;
pub mod progress;
#[cfg(test)]
mod tests;
pub mod watch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::Error;
use crate::aws::{AwsArgs, Clients, aws_error};
use crate::output::Ui;
use crate::spec::Environment;
use crate::synth::context::{DeployValue, Source};
use crate::synth::{ManifestStack, Synthesis};
use assets::Package;
use cfn::{AwsCloudFormation, CloudFormation, Stack, TemplateSource};
use engine::{Options, StackPlan};
use pipeline_contract::FunctionId;

/// CloudFormation takes template bodies up to this size; larger templates
/// are uploaded to the assets bucket and passed by URL.
pub const MAX_TEMPLATE_BODY: usize = 51_200;

/// Where the function packages come from.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PackageArgs {
    /// Take prebuilt packages from DIR instead of building: `<function>.zip`
    /// each, or `<function>.image/` (an OCI image layout) for image functions.
    #[arg(long, value_name = "DIR", env = "PIPELINE_ARTIFACTS")]
    pub artifacts: Option<PathBuf>,
    /// CA bundle the functions check RDS certificates against, shipped in
    /// each package as `rds-ca.pem` (the RDS global bundle).
    #[arg(long, value_name = "FILE", env = "PIPELINE_RDS_CA_BUNDLE")]
    pub rds_ca_bundle: Option<PathBuf>,
}

/// The function packages of an environment (of one function with `only`):
/// the prebuilt zips of `--artifacts`, or built with cargo-lambda and
/// zipped into `out/<env>/<function>.zip`.
pub fn packages(
    env: &Environment,
    args: &PackageArgs,
    only: Option<crate::spec::model::FunctionId>,
    ui: &Ui,
) -> Result<Vec<Package>, Error> {
    let functions: Vec<(&str, &str)> = env
        .spec
        .functions
        .all()
        .iter()
        .filter(|(name, _)| only.is_none_or(|o| o == *name))
        .map(|(name, f)| (name.as_str(), f.architecture.as_str()))
        .collect();
    if let Some(dir) = &args.artifacts {
        let packages = functions
            .iter()
            .map(|(name, arch)| {
                let path = dir.join(format!("{name}.zip"));
                let layout = dir.join(format!("{name}.image"));
                let image = env
                    .spec
                    .functions
                    .named(name)
                    .is_some_and(|f| f.package == crate::spec::model::Packaging::Image);
                if image && layout.is_dir() {
                    return Package::from_layout(name, arch, &layout);
                }
                if !path.is_file() {
                    return Err(Error::Build {
                        message: format!("there is no {name}.zip in {}", dir.display()),
                        help: Some(
                            "`pipeline build --env <env>` writes the packages to out/<env>/".into(),
                        ),
                    });
                }
                Package::from_zip(name, arch, &path)
            })
            .collect::<Result<Vec<_>, Error>>()?;
        return images::images(env, packages, ui);
    }
    let workspace = workspace()?;
    let ca_path = args
        .rds_ca_bundle
        .clone()
        .unwrap_or_else(|| workspace.join("rds-ca.pem"));
    let rds_ca = std::fs::read(&ca_path).map_err(|e| Error::Build {
        message: format!("cannot read the RDS CA bundle {}: {e}", ca_path.display()),
        help: Some("download the RDS global bundle (truststore.pki.rds.amazonaws.com/global/global-bundle.pem) to rds-ca.pem in the workspace, or pass --rds-ca-bundle FILE".into()),
    })?;
    let mut architectures: Vec<&str> = functions.iter().map(|(_, a)| *a).collect();
    architectures.sort();
    architectures.dedup();
    assets::check_tools(&architectures)?;
    let datasets = serde_json::to_vec(&env.spec.datasets).map_err(|e| Error::Render {
        what: "the datasets".into(),
        message: e.to_string(),
    })?;
    let out = PathBuf::from("out").join(&env.name);
    let mut packages = Vec::new();
    for arch in architectures {
        let names: Vec<&str> = functions
            .iter()
            .filter(|(_, a)| *a == arch)
            .map(|(n, _)| *n)
            .collect();
        ui.info(format_args!("building {} for {arch}", names.join(", ")));
        // Every function is built, whichever are asked for: cargo unifies
        // the features of the packages it builds together, so a function
        // built alone would link other code than in a full build, and its
        // package would change for nothing.
        let every: Vec<&str> = FunctionId::ALL.iter().map(|f| f.as_str()).collect();
        let built = assets::cargo_lambda(&workspace, arch, &every, ui.verbose == 0)?;
        for name in names {
            packages.push(assets::package(
                name,
                arch,
                &built.join(name).join("bootstrap"),
                &datasets,
                Some(&rds_ca),
                &out.join(format!("{name}.zip")),
            )?);
        }
    }
    packages.sort_by(|a, b| a.function.cmp(&b.function));
    images::images(env, packages, ui)
}

/// The pipeline's Cargo workspace: this folder or the nearest one above it
/// with a `Cargo.toml` and the function crates.
fn workspace() -> Result<PathBuf, Error> {
    let start = std::env::current_dir().map_err(|source| Error::Read {
        path: ".".into(),
        source,
    })?;
    start
        .ancestors()
        .find(|d| d.join("Cargo.toml").is_file() && d.join("functions/ingest/Cargo.toml").is_file())
        .map(Path::to_path_buf)
        .ok_or_else(|| Error::Build {
            message: format!("{} is not in the pipeline's workspace", start.display()),
            help: Some("run the command in the folder with Cargo.toml and functions/, or pass prebuilt packages with --artifacts DIR".into()),
        })
}

/// The name the templates give a function's output or parameter:
/// `function_key(FunctionId::Ingest, "FunctionName")` is `IngestFunctionName`.
pub fn function_key(function: crate::spec::model::FunctionId, suffix: &str) -> String {
    format!(
        "{}{suffix}",
        crate::synth::context::pascal(function.as_str())
    )
}

/// One environment, rendered, with its AWS clients.
pub struct Session {
    pub env: Environment,
    pub synthesis: Synthesis,
    pub clients: Clients,
    pub cfn: AwsCloudFormation,
}

/// What the bootstrap stack provides.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Bootstrap {
    pub stack: String,
    pub assets_bucket: String,
    pub repository_uri: String,
    /// The role API Gateway may write access logs with.
    #[serde(skip)]
    pub api_logging_role: String,
}

impl Session {
    pub async fn open(env: Environment, synthesis: Synthesis, aws: &AwsArgs) -> Session {
        let clients = Clients::load(aws, &env.spec.region).await;
        let cfn = AwsCloudFormation {
            client: clients.cloudformation.clone(),
        };
        Session {
            env,
            synthesis,
            clients,
            cfn,
        }
    }

    /// Refuses to go on with credentials of another account than the spec's.
    pub async fn check_account(&self) -> Result<String, Error> {
        self.clients
            .check_account(self.env.spec.account.as_deref())
            .await
    }

    /// The bootstrap stack's outputs, or an error saying to bootstrap.
    pub async fn bootstrap(&self) -> Result<Bootstrap, Error> {
        let name = &self.synthesis.manifest.bootstrap.name;
        let stack = self.stack(name).await?;
        let not_bootstrapped = || Error::NotBootstrapped {
            env: self.env.name.clone(),
            stack: name.clone(),
        };
        let stack = stack.ok_or_else(not_bootstrapped)?;
        let bucket = stack
            .outputs
            .get("AssetsBucketName")
            .filter(|b| !b.is_empty())
            .ok_or_else(not_bootstrapped)?;
        Ok(Bootstrap {
            stack: name.clone(),
            assets_bucket: bucket.clone(),
            repository_uri: stack
                .outputs
                .get("RepositoryUri")
                .cloned()
                .unwrap_or_default(),
            api_logging_role: stack
                .outputs
                .get("ApiGatewayLogsRoleArn")
                .cloned()
                .unwrap_or_default(),
        })
    }

    /// Uploads `body` under `key` unless an object is already there (the
    /// keys are content addresses, so an object there is the same bytes);
    /// whether it was uploaded.
    pub async fn upload(
        &self,
        bucket: &str,
        key: &str,
        body: impl AsyncFnOnce() -> Result<aws_sdk_s3::primitives::ByteStream, Error>,
    ) -> Result<bool, Error> {
        let s3 = &self.clients.s3;
        match s3.head_object().bucket(bucket).key(key).send().await {
            Ok(_) => return Ok(false),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => {}
            Err(e) => return Err(aws_error(&format!("cannot look up s3://{bucket}/{key}"), e)),
        }
        s3.put_object()
            .bucket(bucket)
            .key(key)
            .body(body().await?)
            .send()
            .await
            .map_err(|e| aws_error(&format!("cannot upload s3://{bucket}/{key}"), e))?;
        Ok(true)
    }

    /// Uploads the packages that are not in the bucket yet; how many were.
    pub async fn upload_packages(
        &self,
        bucket: &str,
        packages: &[Package],
        ui: &Ui,
    ) -> Result<usize, Error> {
        let mut uploaded = 0;
        for p in packages.iter().filter(|p| p.image.is_none()) {
            let body = async || {
                aws_sdk_s3::primitives::ByteStream::from_path(&p.path)
                    .await
                    .map_err(|e| aws_error(&format!("cannot read {}", p.path.display()), e))
            };
            if self.upload(bucket, &p.key(), body).await? {
                ui.info(format_args!("uploaded {} as {}", p.function, p.key()));
                uploaded += 1;
            } else {
                ui.info(format_args!(
                    "{} is already uploaded ({})",
                    p.function,
                    p.key()
                ));
            }
        }
        Ok(uploaded)
    }

    /// The template of a stack as CloudFormation takes it: compact JSON,
    /// inline when small enough, else uploaded under its SHA-256.
    pub async fn template_source(
        &self,
        synthesis: &Synthesis,
        bucket: Option<&str>,
        file: &str,
    ) -> Result<TemplateSource, Error> {
        let compact = compact_template(synthesis, file)?;
        if compact.len() <= MAX_TEMPLATE_BODY {
            return Ok(TemplateSource::Body(compact));
        }
        let bucket = bucket.ok_or_else(|| Error::Deploy {
            message: format!("{file} is larger than CloudFormation takes inline"),
            help: Some(
                "bootstrap the environment first: large templates go through its bucket".into(),
            ),
        })?;
        let key = format!(
            "templates/{}.json",
            crate::synth::sha256_hex(compact.as_bytes())
        );
        self.upload(bucket, &key, async || Ok(compact.into_bytes().into()))
            .await?;
        Ok(TemplateSource::Url(format!(
            "https://{bucket}.s3.{}.amazonaws.com/{key}",
            self.clients.region()
        )))
    }

    /// A stack as it is now.
    pub async fn stack(&self, name: &str) -> Result<Option<Stack>, Error> {
        self.cfn
            .stack(name)
            .await
            .map_err(|e| aws_error(&format!("cannot read stack {name}"), e))
    }

    /// The current state of every stack of the environment, in deploy order.
    pub async fn stacks(&self) -> Result<Vec<(ManifestStack, Option<Stack>)>, Error> {
        let mut out = Vec::new();
        for s in &self.synthesis.manifest.stacks {
            out.push((s.clone(), self.stack(&s.name).await?));
        }
        Ok(out)
    }

    /// Everything needed to deploy one stack: its template and parameters,
    /// from the outputs of the stacks before it, the packages, and the
    /// bootstrap stack.
    pub async fn plan(
        &self,
        stack: &ManifestStack,
        outputs: &BTreeMap<String, BTreeMap<String, String>>,
        packages: &[Package],
        bootstrap: Option<&Bootstrap>,
        current: Option<&Stack>,
    ) -> Result<StackPlan, Error> {
        self.plan_of(
            &self.synthesis,
            stack,
            outputs,
            packages,
            bootstrap,
            current,
        )
        .await
    }

    /// [`Session::plan`] with the templates of another rendering of the
    /// environment (the first create's, see [`crate::synth::Options`]).
    pub async fn plan_of(
        &self,
        synthesis: &Synthesis,
        stack: &ManifestStack,
        outputs: &BTreeMap<String, BTreeMap<String, String>>,
        packages: &[Package],
        bootstrap: Option<&Bootstrap>,
        current: Option<&Stack>,
    ) -> Result<StackPlan, Error> {
        let bucket = bootstrap.map(|b| b.assets_bucket.as_str());
        let mut parameters = BTreeMap::new();
        for p in &stack.parameters {
            let value = match &p.source {
                Source::Output { stack: from, output } => outputs
                    .get(*from)
                    .and_then(|o| o.get(*output))
                    .cloned()
                    .ok_or_else(|| Error::Deploy {
                        message: format!(
                            "stack {} needs the output {output} of stack {from}, which has none",
                            stack.name
                        ),
                        help: Some(format!("deploy the {from} stack first (`pipeline deploy` deploys every stack in order)")),
                    })?,
                Source::Asset { asset } => {
                    let package = packages
                        .iter()
                        .find(|pk| pk.function == *asset)
                        .ok_or_else(|| Error::Build {
                            message: format!("there is no package of the {asset} function"),
                            help: None,
                        })?;
                    match &package.image {
                        Some(image) => images::image_uri(
                            bootstrap.map_or("", |b| b.repository_uri.as_str()),
                            &image.digest,
                        ),
                        None => package.key(),
                    }
                }
                Source::Deploy {
                    value: DeployValue::AssetsBucket,
                } => bucket.unwrap_or_default().to_string(),
                // Outside a rollout (a deploy refuses to start during one),
                // the gates watch every version; a rollout points them at
                // its new versions itself (`watch::GateVersions`).
                Source::Deploy {
                    value: DeployValue::GateVersion,
                } => crate::synth::context::ALL_VERSIONS.to_string(),
                // Which version serves is the rollout's business: a deploy
                // keeps the current one.
                Source::Deploy {
                    value: DeployValue::LiveVersion,
                } => current
                    .and_then(|s| s.parameters.get(p.name))
                    .cloned()
                    .or_else(|| p.default.map(str::to_string))
                    .unwrap_or_default(),
            };
            parameters.insert(p.name.to_string(), value);
        }
        Ok(StackPlan {
            name: stack.name.clone(),
            template: self
                .template_source(synthesis, bucket, &stack.template)
                .await?,
            parameters,
            tags: synthesis.manifest.tags.clone(),
            resources: resources(synthesis, &stack.template)?,
        })
    }

    /// The environment rendered as for a first create (databases without
    /// deletion protection, see [`crate::synth::Options`]), when `stack`'s
    /// template differs from the usual one; `None` when it is the same (no
    /// protection asked for, or not the data stack).
    pub fn unprotected(&self, stack: &ManifestStack) -> Result<Option<Synthesis>, Error> {
        let options = crate::synth::Options { first_create: true };
        let unprotected = crate::synth::synthesize_with(&self.env, options)?;
        fn template<'a>(s: &'a Synthesis, file: &str) -> Option<&'a str> {
            s.files
                .iter()
                .find(|(name, _)| name == file)
                .map(|(_, text)| text.as_str())
        }
        let differs =
            template(&unprotected, &stack.template) != template(&self.synthesis, &stack.template);
        Ok(differs.then_some(unprotected))
    }

    /// The current outputs of the environment's stacks, by stack id.
    pub async fn outputs(&self) -> Result<BTreeMap<String, BTreeMap<String, String>>, Error> {
        Ok(self
            .stacks()
            .await?
            .into_iter()
            .filter_map(|(m, s)| Some((m.id.to_string(), s?.outputs)))
            .collect())
    }

    /// Where command results of the environment are written: `out/<env>/`.
    pub fn out_dir(&self) -> PathBuf {
        PathBuf::from("out").join(&self.env.name)
    }
}

fn template_json(synthesis: &Synthesis, file: &str) -> Result<serde_json::Value, Error> {
    let text = synthesis
        .files
        .iter()
        .find(|(n, _)| n == file)
        .map(|(_, t)| t.as_str())
        .ok_or_else(|| Error::Render {
            what: file.to_string(),
            message: "no such template".into(),
        })?;
    serde_json::from_str(text).map_err(|e| Error::Render {
        what: file.to_string(),
        message: e.to_string(),
    })
}

fn compact_template(synthesis: &Synthesis, file: &str) -> Result<String, Error> {
    Ok(template_json(synthesis, file)?.to_string())
}

/// The template's resources: logical id and type.
pub fn resources(synthesis: &Synthesis, file: &str) -> Result<Vec<(String, String)>, Error> {
    Ok(template_json(synthesis, file)?["Resources"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(id, r)| (id.clone(), r["Type"].as_str().unwrap_or("").to_string()))
        .collect())
}

/// The resources that outlive their stack, with what happens to them:
/// `Retain` or `Snapshot`.
pub fn kept_resources(
    synthesis: &Synthesis,
    file: &str,
) -> Result<Vec<(String, String, String)>, Error> {
    Ok(template_json(synthesis, file)?["Resources"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(id, r)| {
            let policy = r["DeletionPolicy"].as_str()?;
            matches!(policy, "Retain" | "Snapshot" | "RetainExceptOnCreate").then(|| {
                (
                    id.clone(),
                    r["Type"].as_str().unwrap_or("").to_string(),
                    policy.to_string(),
                )
            })
        })
        .collect())
}

/// A line of a command's progress that is neither a stack nor a rollout
/// event.
#[derive(Debug, serde::Serialize)]
pub struct Note {
    pub event: &'static str,
    pub message: String,
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", self.message)
    }
}

/// Engine options of a command run.
pub fn options(yes: bool, allow_replacement: bool) -> Options {
    Options {
        yes,
        interactive: progress::interactive(),
        allow_replacement,
        poll: poll_interval(),
        change_set: format!("pipeline-{}", chrono::Utc::now().format("%Y%m%d%H%M%S")),
    }
}

/// How often the deploy polls what AWS does (stacks, new versions):
/// `PIPELINE_POLL_MS`, else every 2 s.
pub fn poll_interval() -> std::time::Duration {
    std::time::Duration::from_millis(
        std::env::var("PIPELINE_POLL_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2000),
    )
}

/// Writes a JSON file under `out/<env>/`.
pub fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<(), Error> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| Error::Write {
            path: dir.display().to_string(),
            source,
        })?;
    }
    let mut text = serde_json::to_string_pretty(value).map_err(|e| Error::Render {
        what: path.display().to_string(),
        message: e.to_string(),
    })?;
    text.push('\n');
    std::fs::write(path, text).map_err(|source| Error::Write {
        path: path.display().to_string(),
        source,
    })
}
