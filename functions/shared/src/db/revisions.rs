//! Dataset revisions: each batch loads with the definition it was accepted
//! under, whatever version of the loader meets it.
//!
//! During a rollout two versions of each function serve side by side, and
//! each version ships its own `datasets.json`: a batch accepted by the new
//! ingest may be loaded by the old loader, and after a rollback every batch
//! the new version accepted is. So every migration records the definitions
//! it migrated to under their revision (a hash of the definition), ingest
//! records the revision it checked a batch against, and the loader decodes a
//! batch with that revision's definition, read from the database when it is
//! not its own. Migrations only expand a table while a rollout may still be
//! loading older revisions: a column removed from a dataset is kept (made
//! nullable) so that batches of the revisions that had it still load.

use std::borrow::Cow;

use super::*;

/// A definition's revision: the first 16 hex digits of the SHA-256 of its
/// JSON (which serialises fields in declaration order).
pub fn revision(dataset: &Dataset) -> String {
    use sha2::{Digest, Sha256};
    let json = serde_json::to_vec(dataset).unwrap_or_default();
    pipeline_contract::hex(&Sha256::digest(&json))[..16].to_string()
}

/// Records the definition under its revision (once).
pub(crate) async fn record_revision(
    tx: &Transaction<'_>,
    name: &str,
    dataset: &Dataset,
) -> Result<(), DbError> {
    let definition = serde_json::to_value(dataset).unwrap_or_default();
    tx.execute(
        "INSERT INTO pipeline.dataset_revisions (dataset, revision, definition) VALUES ($1, $2, $3)
         ON CONFLICT (dataset, revision) DO NOTHING",
        &[&name, &revision(dataset), &definition],
    )
    .await?;
    Ok(())
}

/// The definition `batch_id` loads with: the one it was accepted under, or
/// `own` (this version's, if it knows the dataset) when that is the same or
/// the batch predates revisions; `None` when there is neither (a dataset
/// this version does not know, in a batch without a revision). A revision
/// this version cannot read (written by a newer version of the pipeline,
/// with options it does not know) is an error to retry: a loader of that
/// version will take it.
pub async fn batch_definition<'d>(
    client: &impl GenericClient,
    batch_id: uuid::Uuid,
    own: Option<&'d Dataset>,
) -> Result<Option<Cow<'d, Dataset>>, DbError> {
    let row = client
        .query_opt(
            "SELECT b.dataset, b.dataset_revision, r.definition FROM pipeline.batches b
             LEFT JOIN pipeline.dataset_revisions r ON r.dataset = b.dataset AND r.revision = b.dataset_revision
             WHERE b.batch_id = $1",
            &[&batch_id],
        )
        .await?;
    let Some(row) = row else {
        return Err(DbError::NoBatch(batch_id));
    };
    let dataset: String = row.get(0);
    let Some(wanted) = row.get::<_, Option<String>>(1) else {
        return Ok(own.map(Cow::Borrowed));
    };
    if let Some(own) = own.filter(|own| revision(own) == wanted) {
        return Ok(Some(Cow::Borrowed(own)));
    }
    let unknown = |reason: String| DbError::Revision {
        dataset: dataset.clone(),
        revision: wanted.clone(),
        reason,
    };
    let definition: serde_json::Value = row
        .get::<_, Option<serde_json::Value>>(2)
        .ok_or_else(|| unknown("no migration recorded it".into()))?;
    serde_json::from_value(definition)
        .map(|d| Some(Cow::Owned(d)))
        .map_err(|e| unknown(format!("this version cannot read it ({e})")))
}

/// How long the datasets' current definitions are kept before being read
/// again: a deploy's migration reaches every version of ingest within it.
pub const DEFINITIONS_REFRESH: std::time::Duration = std::time::Duration::from_secs(5);

/// The datasets' current definitions as the last migration wrote them
/// (`pipeline.datasets`), read at most every [`DEFINITIONS_REFRESH`]: during
/// a rollout, or after a rollback, every version of ingest checks batches
/// against the definitions the tables have, not those its package shipped.
#[derive(Clone, Default)]
pub struct Definitions {
    cached: std::sync::Arc<tokio::sync::Mutex<Option<Read>>>,
}

/// Definitions, and when they were read.
type Read = (std::time::Instant, BTreeMap<String, Dataset>);

impl Definitions {
    /// The current definition of `name`, if the database has one this
    /// version can read.
    pub async fn current(
        &self,
        pool: &deadpool_postgres::Pool,
        name: &str,
    ) -> Result<Option<Dataset>, DbError> {
        let mut cached = self.cached.lock().await;
        let fresh = cached
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < DEFINITIONS_REFRESH);
        if !fresh {
            let client = pool.get().await.map_err(|e| DbError::Pool(e.to_string()))?;
            let read = read_definitions(&**client).await;
            let read = match read {
                Ok(read) => read,
                Err(e) => {
                    discard(client);
                    return Err(e);
                }
            };
            *cached = Some((std::time::Instant::now(), read));
        }
        Ok(cached
            .as_ref()
            .and_then(|(_, definitions)| definitions.get(name).cloned()))
    }
}

/// Every dataset's current definition that this version can read (one
/// written by a newer pipeline, with options it does not know, is left out:
/// its package's own then serves).
async fn read_definitions(
    client: &impl GenericClient,
) -> Result<BTreeMap<String, Dataset>, DbError> {
    let rows = client
        .query("SELECT name, definition FROM pipeline.datasets", &[])
        .await?;
    Ok(rows
        .iter()
        .filter_map(|row| {
            let definition: serde_json::Value = row.get(1);
            Some((row.get(0), serde_json::from_value(definition).ok()?))
        })
        .collect())
}
