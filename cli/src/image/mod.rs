//! Container images of the functions, built without Docker: the base
//! image's layers pulled through the OCI distribution API (and cached by
//! digest), one reproducible layer with the function's files, and a config
//! whose entrypoint is the function's `bootstrap`. Images are written as OCI
//! image layouts (`out/<env>/<function>.image/`) and pushed blob by blob.

mod base;
mod credentials;
pub mod layer;
mod layout;
mod push;
pub mod registry;

pub use base::*;
pub use credentials::*;
pub use layout::*;
pub use push::*;

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
