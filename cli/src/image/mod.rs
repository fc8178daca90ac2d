//! Container images of the functions, built without Docker: the base
//! image's layers pulled through the OCI distribution API (and cached by
//! digest), one reproducible layer with the function's files, and a config
//! whose entrypoint is the function's `bootstrap`. Images are written as OCI
//! image layouts (`out/<env>/<function>.image/`) and pushed blob by blob.

pub mod layer;
pub mod registry;

use std::path::{Path, PathBuf};

use futures_util::{StreamExt, TryStreamExt};
use miette::Diagnostic;
use serde::Serialize;
use serde_json::{Value, json};
use thiserror::Error;

pub use crate::spec::reference::{self, Reference};
pub use registry::Registry;

/// The base image of functions that name none: Lambda's OS-only runtime
/// image, published for both architectures.
pub const DEFAULT_BASE: &str = "public.ecr.aws/lambda/provided:al2023";

/// Where the function's files go in the image (Lambda's task root).
pub const TASK_ROOT: &str = "/var/task";

/// Timestamp of the added layer's history entry and of the config.
const CREATED: &str = "1980-01-01T00:00:00Z";

pub mod media {
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    /// The manifest types this client reads.
    pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";
}

impl From<reference::ReferenceError> for ImageError {
    fn from(e: reference::ReferenceError) -> ImageError {
        ImageError::BadReference {
            reference: e.reference,
            reason: e.reason,
        }
    }
}

#[derive(Debug, Error, Diagnostic)]
pub enum ImageError {
    #[error("`{reference}` is not an image reference: {reason}")]
    #[diagnostic(help(
        "write it as `registry/repository:tag` or `registry/repository@sha256:<digest>`, e.g. `public.ecr.aws/lambda/provided:al2023`"
    ))]
    BadReference { reference: String, reason: String },

    #[error("cannot reach the registry {registry}: {reason}")]
    #[diagnostic(help(
        "check the registry's address and your network (proxy, VPN); loopback registries are spoken to over plain HTTP, every other over HTTPS"
    ))]
    Unreachable { registry: String, reason: String },

    #[error("the registry {registry} refused to let us {action} {repository}: {detail}")]
    #[diagnostic(help("{}", denied_help(*with_credentials, action, registry)))]
    Denied {
        registry: String,
        repository: String,
        action: &'static str,
        detail: String,
        with_credentials: bool,
    },

    #[error("the base image {reference} does not exist")]
    #[diagnostic(help(
        "check `base_image` in the spec (name and tag); `skopeo inspect docker://{reference}` shows what the registry has"
    ))]
    BaseMissing { reference: String },

    #[error("the base image {reference} has no linux/{platform} image (it has: {available})")]
    #[diagnostic(help(
        "choose a base image published for linux/{platform}, or set the function's `architecture` to one it has"
    ))]
    NoPlatform {
        reference: String,
        platform: &'static str,
        available: String,
    },

    #[error("the registry {registry} answered something unexpected: {message}")]
    #[diagnostic(help("the registry may not speak the OCI distribution API; check its address"))]
    Protocol { registry: String, message: String },

    #[error("the image at {path} is not usable: {message}")]
    #[diagnostic(help("build it again with `pipeline build`"))]
    Layout { path: String, message: String },

    #[error("cannot build the image layer: {message}")]
    Layer { message: String },

    #[error("cannot read or write {path}: {message}")]
    Io { path: String, message: String },
}

fn denied_help(with_credentials: bool, action: &str, registry: &str) -> String {
    match (action, registry.contains(".dkr.ecr.")) {
        ("push", true) => "the AWS credentials need ecr:GetAuthorizationToken, and on the repository ecr:BatchCheckLayerAvailability, ecr:InitiateLayerUpload, ecr:UploadLayerPart, ecr:CompleteLayerUpload and ecr:PutImage".into(),
        _ if with_credentials => format!("the credentials for {registry} (in the Docker config file, ~/.docker/config.json or $DOCKER_CONFIG) are wrong or lack the right to {action}"),
        _ => format!("log in to {registry}: put credentials for it in the Docker config file (`docker login`, `skopeo login` or `crane auth login` write them)"),
    }
}

/// A user name and password for a registry.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ****)", self.username)
    }
}

/// The credentials the Docker config file (`$DOCKER_CONFIG/config.json`,
/// else `~/.docker/config.json`) gives for a registry, as Docker reads it:
/// the registry's credential helper (`credHelpers`), else the default one
/// (`credsStore`), else the file's own `auths`.
pub fn keychain(registry: &str) -> Option<Credentials> {
    use base64::Engine;
    let dir = std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))?;
    let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
    let config: Value = serde_json::from_str(&text).ok()?;
    // Docker Hub's credentials are filed under its old index address.
    let matches = |key: &str| {
        let host = key
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default();
        host == registry || (registry == "registry-1.docker.io" && host == "index.docker.io")
    };
    let helper = config["credHelpers"]
        .as_object()
        .and_then(|helpers| helpers.iter().find(|(key, _)| matches(key)))
        .and_then(|(_, h)| h.as_str())
        .or(config["credsStore"].as_str());
    if let Some(helper) = helper
        && let Some(credentials) = credential_helper(helper, registry)
    {
        return Some(credentials);
    }
    let entry = config["auths"]
        .as_object()?
        .iter()
        .find_map(|(key, v)| matches(key).then_some(v))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(entry["auth"].as_str()?)
        .ok()?;
    let (username, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some(Credentials {
        username: username.to_string(),
        password: password.to_string(),
    })
}

/// Asks `docker-credential-<helper> get` for a registry's credentials (the
/// protocol of Docker's credential helpers: the server on stdin, JSON out).
fn credential_helper(helper: &str, registry: &str) -> Option<Credentials> {
    use std::io::Write;
    let server = if registry == "registry-1.docker.io" {
        "https://index.docker.io/v1/"
    } else {
        registry
    };
    let mut child = std::process::Command::new(format!("docker-credential-{helper}"))
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(server.as_bytes()).ok()?;
    let out = child.wait_with_output().ok()?;
    if !out.status.success() {
        return None;
    }
    let answer: Value = serde_json::from_slice(&out.stdout).ok()?;
    let username = answer["Username"].as_str()?;
    // `<token>` marks an identity token, which only Docker's own login flow uses.
    if username == "<token>" {
        return None;
    }
    Some(Credentials {
        username: username.to_string(),
        password: answer["Secret"].as_str()?.to_string(),
    })
}

/// `sha256:<hex>` of some bytes.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", crate::synth::sha256_hex(bytes))
}

/// A blob held in memory: a config, a manifest or the added layer.
pub struct Blob {
    pub media_type: String,
    pub digest: String,
    pub bytes: Vec<u8>,
}

impl Blob {
    pub fn new(media_type: &str, bytes: Vec<u8>) -> Blob {
        Blob {
            media_type: media_type.to_string(),
            digest: digest_of(&bytes),
            bytes,
        }
    }

    fn descriptor(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.bytes.len()})
    }
}

/// The OCI platform name of a Lambda architecture.
pub fn platform(architecture: &str) -> &'static str {
    match architecture {
        "x86_64" => "amd64",
        _ => "arm64",
    }
}

/// Blobs of base images, kept by digest so that a base is downloaded once.
pub struct Cache {
    pub dir: PathBuf,
}

impl Cache {
    /// `$PIPELINE_CACHE_DIR`, else `$XDG_CACHE_HOME/pipeline`, else `~/.cache/pipeline`.
    pub fn default_dir() -> Cache {
        let dir = std::env::var_os("PIPELINE_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("pipeline"))
            })
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("pipeline"))
            })
            .unwrap_or_else(|| PathBuf::from(".pipeline-cache"));
        Cache { dir }
    }

    pub fn path(&self, digest: &str) -> PathBuf {
        blob_path(&self.dir, digest)
    }

    fn read(&self, digest: &str) -> Option<Vec<u8>> {
        let bytes = std::fs::read(self.path(digest)).ok()?;
        (digest_of(&bytes) == digest).then_some(bytes)
    }

    fn write(&self, digest: &str, bytes: &[u8]) -> Result<(), ImageError> {
        write_file(&self.path(digest), bytes)
    }

    /// Whether a blob is cached (downloads are renamed into place only
    /// once their digest was checked).
    fn has(&self, digest: &str) -> bool {
        self.path(digest).is_file()
    }

    fn prepare(&self) -> Result<(), ImageError> {
        let dir = self.dir.join("blobs").join("sha256");
        std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, &e))
    }
}

fn blob_path(root: &Path, digest: &str) -> PathBuf {
    root.join("blobs")
        .join("sha256")
        .join(digest.trim_start_matches("sha256:"))
}

fn io_error(path: &Path, e: &dyn std::fmt::Display) -> ImageError {
    ImageError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, &e))?;
    }
    std::fs::write(path, bytes).map_err(|e| io_error(path, &e))
}

/// A base image resolved for one platform, its blobs in the cache.
#[derive(Clone)]
pub struct Base {
    /// `registry/repository@digest`: the base as resolved when pulled.
    pub reference: String,
    /// Digest of the manifest (or index) the reference named.
    pub digest: String,
    pub config: Vec<u8>,
    /// The layers' descriptors, with OCI media types.
    pub layers: Vec<Value>,
}

/// Resolves a base image for an architecture and brings its config and
/// layers into the cache. A reference by digest whose manifest is cached
/// needs no registry at all.
pub async fn pull_base(
    http: &reqwest::Client,
    text: &str,
    architecture: &str,
    cache: &Cache,
) -> Result<Base, ImageError> {
    let reference = Reference::parse(text)?;
    let wanted = platform(architecture);
    cache.prepare()?;
    let registry = Registry::new(
        http.clone(),
        &reference.registry,
        &reference.repository,
        keychain(&reference.registry),
        false,
    );
    let missing = || ImageError::BaseMissing {
        reference: text.to_string(),
    };
    let top = fetch_manifest(&registry, cache, reference.manifest_reference())
        .await?
        .ok_or_else(missing)?;
    let digest = top.digest.clone();
    let top_json: Value = parse_json(&registry, &top.bytes)?;
    let manifest = if is_index(&top.media_type, &top_json) {
        let entries = top_json["manifests"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let names: Vec<String> = entries
            .iter()
            .filter(|m| m["platform"]["os"] == "linux")
            .map(|m| {
                format!(
                    "linux/{}",
                    m["platform"]["architecture"].as_str().unwrap_or("?")
                )
            })
            .collect();
        let chosen = entries
            .iter()
            .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == wanted)
            .ok_or_else(|| ImageError::NoPlatform {
                reference: text.to_string(),
                platform: wanted,
                available: if names.is_empty() {
                    "none".into()
                } else {
                    names.join(", ")
                },
            })?;
        let child = chosen["digest"].as_str().unwrap_or_default();
        fetch_manifest(&registry, cache, child)
            .await?
            .ok_or_else(missing)?
    } else {
        top
    };
    let manifest_json: Value = parse_json(&registry, &manifest.bytes)?;
    let config_digest = manifest_json["config"]["digest"]
        .as_str()
        .ok_or_else(|| registry_protocol(&registry, "a manifest without a config"))?;
    let config = fetch_blob(&registry, cache, config_digest).await?;
    let config_json: Value = parse_json(&registry, &config)?;
    let arch = config_json["architecture"].as_str().unwrap_or("?");
    if arch != wanted || config_json["os"] != "linux" {
        return Err(ImageError::NoPlatform {
            reference: text.to_string(),
            platform: wanted,
            available: format!("{}/{arch}", config_json["os"].as_str().unwrap_or("?")),
        });
    }
    let mut layers = Vec::new();
    for layer in manifest_json["layers"].as_array().into_iter().flatten() {
        let digest = layer["digest"]
            .as_str()
            .ok_or_else(|| registry_protocol(&registry, "a layer without a digest"))?;
        if !cache.has(digest) {
            registry.download_blob(digest, &cache.path(digest)).await?;
        }
        let media_type = match layer["mediaType"].as_str().unwrap_or_default() {
            media::DOCKER_LAYER_GZIP => media::OCI_LAYER_GZIP,
            t if t.starts_with("application/vnd.oci.image.layer.") => t,
            other => {
                return Err(registry_protocol(
                    &registry,
                    &format!("a layer of type `{other}`, which images of functions cannot hold"),
                ));
            }
        };
        layers.push(json!({"mediaType": media_type, "digest": digest, "size": layer["size"]}));
    }
    let named = format!("{}/{}", reference.registry, reference.repository);
    Ok(Base {
        reference: format!("{named}@{digest}"),
        digest,
        config,
        layers,
    })
}

fn is_index(media_type: &str, json: &Value) -> bool {
    media_type == media::OCI_INDEX
        || media_type == media::DOCKER_LIST
        || json["manifests"].is_array()
}

fn parse_json(registry: &Registry, bytes: &[u8]) -> Result<Value, ImageError> {
    serde_json::from_slice(bytes)
        .map_err(|e| registry_protocol(registry, &format!("a document that is not JSON: {e}")))
}

fn registry_protocol(registry: &Registry, message: &str) -> ImageError {
    ImageError::Protocol {
        registry: registry.registry.clone(),
        message: message.to_string(),
    }
}

/// A manifest by digest from the cache, else from the registry (cached);
/// by tag always from the registry.
async fn fetch_manifest(
    registry: &Registry,
    cache: &Cache,
    reference: &str,
) -> Result<Option<registry::Manifest>, ImageError> {
    if reference.starts_with("sha256:")
        && let Some(bytes) = cache.read(reference)
    {
        let media_type = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v["mediaType"].as_str().map(str::to_string))
            .unwrap_or_default();
        return Ok(Some(registry::Manifest {
            digest: reference.to_string(),
            bytes,
            media_type,
        }));
    }
    let manifest = registry.manifest(reference).await?;
    if let Some(m) = &manifest {
        cache.write(&m.digest, &m.bytes)?;
    }
    Ok(manifest)
}

async fn fetch_blob(
    registry: &Registry,
    cache: &Cache,
    digest: &str,
) -> Result<Vec<u8>, ImageError> {
    if let Some(bytes) = cache.read(digest) {
        return Ok(bytes);
    }
    registry.download_blob(digest, &cache.path(digest)).await?;
    std::fs::read(cache.path(digest)).map_err(|e| io_error(&cache.path(digest), &e))
}

/// What an image is made of: written in `pipeline build`'s results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Image {
    /// Digest of the image's manifest: what the function's `ImageUri` names.
    pub digest: String,
    /// The base image, by digest (as the manifest's annotations name it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    pub config: String,
    pub layers: Vec<String>,
    /// Bytes of the config and layers together (compressed).
    pub bytes: u64,
    /// `os/architecture` of the image's config, such as `linux/arm64`.
    pub platform: String,
}

/// Assembles the image of a function: the base's layers, one layer with
/// `files`, and the base's config with the function's entrypoint. Writes it
/// as an OCI image layout in `out` (replacing what was there).
pub fn assemble(
    base: &Base,
    cache: &Cache,
    files: &[layer::File<'_>],
    architecture: &str,
    source: &str,
    out: &Path,
) -> Result<Image, ImageError> {
    let added = layer::build(files)?;
    let mut config: Value =
        serde_json::from_slice(&base.config).map_err(|e| ImageError::Layout {
            path: base.reference.clone(),
            message: format!("the base's config is not JSON: {e}"),
        })?;
    let entrypoint = format!("{TASK_ROOT}/bootstrap");
    let object = config.as_object_mut().ok_or_else(|| ImageError::Layout {
        path: base.reference.clone(),
        message: "the base's config is not an object".into(),
    })?;
    object.insert("created".into(), json!(CREATED));
    object.insert("architecture".into(), json!(platform(architecture)));
    object.insert("os".into(), json!("linux"));
    let run = object.entry("config").or_insert_with(|| json!({}));
    run["Entrypoint"] = json!([entrypoint]);
    run["Cmd"] = Value::Null;
    run["WorkingDir"] = json!(TASK_ROOT);
    if let Some(run) = run.as_object_mut() {
        run.retain(|_, v| !v.is_null());
    }
    let rootfs = object
        .entry("rootfs")
        .or_insert_with(|| json!({"type": "layers", "diff_ids": []}));
    match rootfs["diff_ids"].as_array_mut() {
        Some(ids) => ids.push(json!(added.diff_id)),
        None => rootfs["diff_ids"] = json!([added.diff_id]),
    }
    let history = object.entry("history").or_insert_with(|| json!([]));
    if let Some(entries) = history.as_array_mut() {
        entries.push(json!({"created": CREATED, "created_by": "pipeline build: the function's bootstrap and data files"}));
    }
    let config = Blob::new(
        media::OCI_CONFIG,
        serde_json::to_vec(&config).map_err(|e| ImageError::Layer {
            message: e.to_string(),
        })?,
    );
    let mut layers = base.layers.clone();
    layers.push(added.blob.descriptor());
    let manifest = Blob::new(
        media::OCI_MANIFEST,
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": config.descriptor(),
            "layers": layers,
            "annotations": {
                "org.opencontainers.image.base.name": base.reference.split('@').next().unwrap_or_default(),
                "org.opencontainers.image.base.digest": base.digest,
            }
        }))
        .map_err(|e| ImageError::Layer {
            message: e.to_string(),
        })?,
    );

    if out.exists() {
        std::fs::remove_dir_all(out).map_err(|e| io_error(out, &e))?;
    }
    for layer in &base.layers {
        let digest = layer["digest"].as_str().unwrap_or_default();
        let target = blob_path(out, digest);
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io_error(dir, &e))?;
        }
        // A hard link costs no space; across file systems, a copy.
        if std::fs::hard_link(cache.path(digest), &target).is_err() {
            std::fs::copy(cache.path(digest), &target).map_err(|e| io_error(&target, &e))?;
        }
    }
    for blob in [&added.blob, &config, &manifest] {
        write_file(&blob_path(out, &blob.digest), &blob.bytes)?;
    }
    write_file(
        &out.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": [{
            "mediaType": media::OCI_MANIFEST,
            "digest": manifest.digest,
            "size": manifest.bytes.len(),
            "platform": {"architecture": platform(architecture), "os": "linux"},
            "annotations": {SOURCE_ANNOTATION: source},
        }]
    });
    write_file(&out.join("index.json"), index.to_string().as_bytes())?;
    read_layout(out)
}

/// The annotation of an image layout's index that names what the image was
/// assembled from, so that an unchanged source is not assembled again.
const SOURCE_ANNOTATION: &str = "pipeline.source";

/// The image in a layout, if it was assembled from `source` (`assemble`'s)
/// and its blobs are all there: then it need not be assembled again.
pub fn reusable(dir: &Path, source: &str) -> Option<Image> {
    let index: Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).ok()?).ok()?;
    if index["manifests"][0]["annotations"][SOURCE_ANNOTATION] != source {
        return None;
    }
    read_layout(dir).ok()
}

/// The image an OCI image layout holds (its first manifest).
pub fn read_layout(dir: &Path) -> Result<Image, ImageError> {
    let manifest = layout_manifest(dir)?;
    let layout_error = |message: String| ImageError::Layout {
        path: dir.display().to_string(),
        message,
    };
    let digest_at = |v: &Value| v["digest"].as_str().unwrap_or_default().to_string();
    let layers: Vec<String> = manifest.json["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(digest_at)
        .collect();
    let config = digest_at(&manifest.json["config"]);
    let mut bytes = 0;
    for d in layers.iter().chain([&config]) {
        let len = std::fs::metadata(blob_path(dir, d))
            .map_err(|_| layout_error(format!("blob {d} is missing")))?
            .len();
        bytes += len;
    }
    let config_json: Value = std::fs::read(blob_path(dir, &config))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| layout_error(format!("config {config} is not JSON")))?;
    let platform = format!(
        "{}/{}",
        config_json["os"].as_str().unwrap_or("?"),
        config_json["architecture"].as_str().unwrap_or("?")
    );
    let annotations = &manifest.json["annotations"];
    Ok(Image {
        platform,
        digest: manifest.digest,
        base: match (
            annotations["org.opencontainers.image.base.name"].as_str(),
            annotations["org.opencontainers.image.base.digest"].as_str(),
        ) {
            (Some(name), Some(digest)) => Some(format!("{name}@{digest}")),
            _ => None,
        },
        config,
        layers,
        bytes,
    })
}

/// The manifest an image layout's index names first.
struct LayoutManifest {
    digest: String,
    media_type: String,
    bytes: Vec<u8>,
    json: Value,
}

fn layout_manifest(dir: &Path) -> Result<LayoutManifest, ImageError> {
    let layout_error = |message: String| ImageError::Layout {
        path: dir.display().to_string(),
        message,
    };
    let index = std::fs::read(dir.join("index.json"))
        .map_err(|e| layout_error(format!("index.json: {e}")))?;
    let index: Value =
        serde_json::from_slice(&index).map_err(|e| layout_error(format!("index.json: {e}")))?;
    let entry = &index["manifests"][0];
    let digest = entry["digest"]
        .as_str()
        .ok_or_else(|| layout_error("index.json names no manifest".into()))?
        .to_string();
    let media_type = entry["mediaType"]
        .as_str()
        .unwrap_or(media::OCI_MANIFEST)
        .to_string();
    let bytes = std::fs::read(blob_path(dir, &digest))
        .map_err(|e| layout_error(format!("manifest {digest}: {e}")))?;
    if digest_of(&bytes) != digest {
        return Err(layout_error(format!(
            "manifest {digest} does not match its digest"
        )));
    }
    let json = serde_json::from_slice(&bytes)
        .map_err(|e| layout_error(format!("manifest {digest}: {e}")))?;
    Ok(LayoutManifest {
        digest,
        media_type,
        bytes,
        json,
    })
}

/// Blobs uploaded at once by a push.
const PARALLEL_UPLOADS: usize = 4;

/// What a push did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Pushed {
    pub digest: String,
    /// Blobs uploaded; the registry had the others.
    pub uploaded: Vec<String>,
    pub skipped: usize,
    /// Whether the manifest was new to the registry.
    pub manifest: bool,
}

/// Pushes the image of an OCI image layout: each blob the registry lacks,
/// then the manifest under `tag`. An image the registry has already costs
/// one request.
pub async fn push(registry: &Registry, dir: &Path, tag: &str) -> Result<Pushed, ImageError> {
    let manifest = layout_manifest(dir)?;
    let descriptors: Vec<&Value> = manifest.json["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain([&manifest.json["config"]])
        .collect();
    if registry.has_manifest(&manifest.digest).await? {
        return Ok(Pushed {
            digest: manifest.digest,
            uploaded: Vec::new(),
            skipped: descriptors.len(),
            manifest: false,
        });
    }
    // Blobs go up a few at a time; the manifest only after all of them.
    let results: Vec<Option<String>> =
        futures_util::stream::iter(descriptors.iter().map(|d| async move {
            let digest = d["digest"].as_str().unwrap_or_default();
            if registry.has_blob(digest).await? {
                return Ok(None);
            }
            let path = blob_path(dir, digest);
            let size = std::fs::metadata(&path)
                .map_err(|e| io_error(&path, &e))?
                .len();
            registry.upload_blob(digest, &path, size).await?;
            Ok::<_, ImageError>(Some(digest.to_string()))
        }))
        .buffered(PARALLEL_UPLOADS)
        .try_collect()
        .await?;
    let skipped = results.iter().filter(|r| r.is_none()).count();
    let uploaded: Vec<String> = results.into_iter().flatten().collect();
    registry
        .put_manifest(tag, &manifest.media_type, &manifest.bytes)
        .await?;
    Ok(Pushed {
        digest: manifest.digest,
        uploaded,
        skipped,
        manifest: true,
    })
}
