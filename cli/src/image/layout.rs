//! Assembling an image as an OCI image layout from a base and a function's files, and reading one back.

use super::*;

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
pub(super) struct LayoutManifest {
    pub(super) digest: String,
    pub(super) media_type: String,
    pub(super) bytes: Vec<u8>,
    pub(super) json: Value,
}

pub(super) fn layout_manifest(dir: &Path) -> Result<LayoutManifest, ImageError> {
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
