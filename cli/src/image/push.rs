//! Pushing an image layout to a registry: only the blobs it lacks, a few at a time.

use super::*;

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
