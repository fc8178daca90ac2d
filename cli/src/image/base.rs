//! Pulling a base image: its index, the manifest of the architecture, and its blobs into the cache.

use super::*;

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
