//! Functions packaged as container images: each image is assembled from the
//! files of the function's zip on its base image, and pushed to the
//! environment's ECR repository before the stacks are deployed.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::Session;
use super::assets::Package;
use crate::Error;
use crate::aws::aws_error;
use crate::image::{self, Cache, Credentials, Registry, layer};
use crate::output::Ui;
use crate::spec::Environment;
use crate::spec::model::Packaging;

/// Pushes images to this registry (`host[:port]`) instead of the ECR
/// repository's, under the same repository name: a local registry in tests,
/// or a mirror.
pub const REGISTRY_OVERRIDE: &str = "PIPELINE_IMAGE_REGISTRY";

/// Turns the zips of `package: image` functions into images, assembled
/// on their base images and written to `out/<env>/<function>.image/`
/// (prebuilt images, from `--artifacts`, are only checked).
pub fn images(env: &Environment, packages: Vec<Package>, ui: &Ui) -> Result<Vec<Package>, Error> {
    let base_of = |p: &Package| {
        env.spec
            .functions
            .named(&p.function)
            .filter(|f| f.package == Packaging::Image)
            .map(|f| {
                f.base_image
                    .clone()
                    .unwrap_or_else(|| image::DEFAULT_BASE.to_string())
            })
    };
    let to_assemble = |p: &Package| p.image.is_none() && base_of(p).is_some();
    if !packages.iter().any(to_assemble) {
        return packages.into_iter().map(|p| checked(p, env)).collect();
    }
    let http = http_client()?;
    let cache = Cache::default_dir();
    let out = Path::new("out").join(&env.name);
    let runtime = crate::aws::runtime()?;
    let mut planned: Vec<(Package, Planned)> = Vec::new();
    let mut jobs: Vec<Job> = Vec::new();
    let mut bases: std::collections::HashMap<(String, String), image::Base> =
        std::collections::HashMap::new();
    for p in packages {
        let Some(base) = base_of(&p).filter(|_| p.image.is_none()) else {
            planned.push((p, Planned::AsIs));
            continue;
        };
        // Functions on the same base and architecture share one pull.
        let key = (base.clone(), p.architecture.clone());
        let pulled = match bases.get(&key) {
            Some(pulled) => pulled.clone(),
            None => {
                let pulled =
                    runtime.block_on(image::pull_base(&http, &base, &p.architecture, &cache))?;
                bases.insert(key, pulled.clone());
                pulled
            }
        };
        let dir = out.join(format!("{}.image", p.function));
        let source = format!("sha256:{} on {}", p.sha256, pulled.reference);
        if let Some(ready) = image::reusable(&dir, &source) {
            ui.info(format_args!("the {} image is up to date", p.function));
            planned.push((p, Planned::Ready(dir, ready)));
            continue;
        }
        ui.info(format_args!(
            "assembling the {} image on {base}",
            p.function
        ));
        jobs.push(Job {
            zip: p.path.clone(),
            architecture: p.architecture.clone(),
            base: pulled,
            source,
            dir,
        });
        planned.push((p, Planned::Job(jobs.len() - 1)));
    }
    // Compressing a function's layer keeps a core busy: one thread each.
    let built: Vec<image::Image> = std::thread::scope(|scope| {
        let running: Vec<_> = jobs
            .iter()
            .map(|job| scope.spawn(|| job.run(&cache)))
            .collect();
        running
            .into_iter()
            .map(|t| {
                t.join().unwrap_or_else(|_| {
                    Err(Error::Build {
                        message: "assembling an image failed unexpectedly".into(),
                        help: None,
                    })
                })
            })
            .collect::<Result<_, Error>>()
    })?;
    planned
        .into_iter()
        .map(|(p, plan)| {
            let p = match plan {
                Planned::AsIs => p,
                Planned::Ready(dir, ready) => p.imaged(dir, ready),
                Planned::Job(i) => p.imaged(jobs[i].dir.clone(), built[i].clone()),
            };
            checked(p, env)
        })
        .collect()
}

/// What becomes of a package.
enum Planned {
    /// A zip, or an image already: kept.
    AsIs,
    /// An image assembled before from the same zip and base.
    Ready(PathBuf, image::Image),
    /// The image the job of this index assembles.
    Job(usize),
}

/// A package whose image is not for the function's platform is refused.
fn checked(p: Package, env: &Environment) -> Result<Package, Error> {
    let Some(built) = &p.image else { return Ok(p) };
    let platform = format!("linux/{}", image::platform(&p.architecture));
    if built.platform == platform {
        return Ok(p);
    }
    Err(Error::Build {
        message: format!(
            "the image {} is for {}, but the {} function runs on {platform}",
            p.path.display(),
            built.platform,
            p.function
        ),
        help: Some(format!(
            "build the image for {} (`pipeline build --env {}`), or change the function's `architecture`",
            p.architecture, env.name
        )),
    })
}

/// An image to assemble from a function's zip.
struct Job {
    zip: PathBuf,
    architecture: String,
    base: image::Base,
    /// What it is made from: the zip's and the base's digests.
    source: String,
    dir: PathBuf,
}

impl Job {
    fn run(&self, cache: &Cache) -> Result<image::Image, Error> {
        let files = zip_files(&self.zip)?;
        let entries: Vec<layer::File<'_>> = files
            .iter()
            .map(|(path, bytes, mode)| layer::File {
                path,
                bytes,
                mode: *mode,
            })
            .collect();
        image::assemble(
            &self.base,
            cache,
            &entries,
            &self.architecture,
            &self.source,
            &self.dir,
        )
        .map_err(Error::from)
    }
}

/// The files of a zip package, as they go into the image's task root.
fn zip_files(zip: &Path) -> Result<Vec<(String, Vec<u8>, u32)>, Error> {
    let bad = |e: &dyn std::fmt::Display| Error::Build {
        message: format!("cannot read the package {}: {e}", zip.display()),
        help: Some("build it again with `pipeline build`".into()),
    };
    let file = std::fs::File::open(zip).map_err(|e| bad(&e))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| bad(&e))?;
    let mut files = Vec::new();
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(|e| bad(&e))?;
        if entry.is_dir() {
            continue;
        }
        let name = entry
            .enclosed_name()
            .ok_or_else(|| bad(&format!("an entry outside the package: {}", entry.name())))?;
        let mode = entry.unix_mode().map_or(0o644, |m| m & 0o777);
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).map_err(|e| bad(&e))?;
        files.push((
            format!("{}/{}", image::TASK_ROOT, name.display()),
            bytes,
            mode,
        ));
    }
    Ok(files)
}

fn http_client() -> Result<reqwest::Client, Error> {
    crate::http::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| Error::Build {
            message: format!("cannot make an HTTP client: {e}"),
            help: None,
        })
}

/// `host[/repository]` of the images: the ECR repository, or the same
/// repository name on the registry `PIPELINE_IMAGE_REGISTRY` names.
pub fn repository(repository_uri: &str) -> (String, String) {
    let (host, name) = repository_uri
        .split_once('/')
        .unwrap_or((repository_uri, ""));
    match std::env::var(REGISTRY_OVERRIDE) {
        Ok(r) if !r.is_empty() => (r, name.to_string()),
        _ => (host.to_string(), name.to_string()),
    }
}

/// The URI a function's `ImageUri` names: the repository and the digest.
pub fn image_uri(repository_uri: &str, digest: &str) -> String {
    let (host, name) = repository(repository_uri);
    format!("{host}/{name}@{digest}")
}

impl Session {
    /// Pushes the images the registry does not have yet; how many images
    /// were new to it, and how many blobs were uploaded.
    pub async fn push_images(
        &self,
        repository_uri: &str,
        packages: &[Package],
        ui: &Ui,
    ) -> Result<(usize, usize), Error> {
        let images: Vec<(&Package, &image::Image)> = packages
            .iter()
            .filter_map(|p| Some((p, p.image.as_ref()?)))
            .collect();
        if images.is_empty() {
            return Ok((0, 0));
        }
        if repository_uri.is_empty() {
            return Err(Error::Deploy {
                message: "the bootstrap stack has no ECR repository for the images".into(),
                help: Some(format!(
                    "run `pipeline bootstrap --env {}` again to add it",
                    self.env.name
                )),
            });
        }
        let (host, name) = repository(repository_uri);
        let credentials = match image::keychain(&host) {
            Some(c) => c,
            None => self.ecr_credentials().await?,
        };
        let http = http_client()?;
        let registry = Registry::new(http, &host, &name, Some(credentials), true);
        let (mut pushed_images, mut blobs) = (0, 0);
        for (p, built) in images {
            let tag = format!(
                "{}-{}",
                p.function,
                &built.digest.trim_start_matches("sha256:")[..12]
            );
            let pushed = image::push(&registry, &p.path, &tag).await?;
            if pushed.manifest {
                pushed_images += 1;
                ui.info(format_args!(
                    "pushed the {} image {host}/{name}:{tag} ({} blobs uploaded, {} already there)",
                    p.function,
                    pushed.uploaded.len(),
                    pushed.skipped
                ));
            } else {
                ui.info(format_args!(
                    "the {} image is already in {host}/{name} ({})",
                    p.function, built.digest
                ));
            }
            blobs += pushed.uploaded.len();
        }
        Ok((pushed_images, blobs))
    }

    /// Registry credentials from ECR's GetAuthorizationToken.
    async fn ecr_credentials(&self) -> Result<Credentials, Error> {
        use base64::Engine;
        let answer = self
            .clients
            .ecr
            .get_authorization_token()
            .send()
            .await
            .map_err(|e| aws_error("cannot get an ECR authorization token", e))?;
        let token = answer
            .authorization_data()
            .first()
            .and_then(|d| d.authorization_token())
            .unwrap_or_default();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(token)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default();
        let (username, password) = decoded.split_once(':').ok_or_else(|| Error::Aws {
            message: "ECR answered an authorization token that is not `user:password`".into(),
        })?;
        Ok(Credentials {
            username: username.to_string(),
            password: password.to_string(),
        })
    }
}
