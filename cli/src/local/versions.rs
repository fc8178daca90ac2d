//! The versions of the handlers that `pipeline local` runs, and the aliases
//! that route requests and queue messages to them, as Lambda's published
//! versions and `live` aliases do.
//!
//! A version is what the handlers read of the spec (its datasets and API
//! limits), published under a number when the spec changes. Each function's
//! alias names a version and, during a rollout, a second one with its share
//! of the traffic. Versions, aliases and the rollout's record are kept in
//! the environment's database, so that `pipeline rollout` in another
//! process reads and moves them, and a restart finds them.

use std::collections::BTreeMap;
use std::sync::{Mutex, RwLock};

use pipeline_shared::Dataset;
use sha2::Digest;

use super::*;
use crate::spec::model::{FunctionId, Spec};

pub(super) const VERSIONS: &str = r#"
CREATE TABLE IF NOT EXISTS pipeline.local_versions (
    version integer PRIMARY KEY,
    fingerprint text NOT NULL,
    spec text NOT NULL,
    published_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS pipeline.local_aliases (
    function text PRIMARY KEY,
    version integer NOT NULL,
    canary integer,
    weight double precision NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS pipeline.local_rollouts (
    environment text PRIMARY KEY,
    state text NOT NULL,
    tag bigint NOT NULL
);
"#;

/// What the handlers read of the spec: a change to it publishes a version.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Release<'a> {
    datasets: &'a BTreeMap<String, Dataset>,
    max_inline_batch_kib: u32,
    max_decoded_ratio: u32,
}

/// The fingerprint of what the handlers read of `spec`.
pub(super) fn fingerprint(spec: &Spec) -> String {
    let release = Release {
        datasets: &spec.datasets,
        max_inline_batch_kib: spec.api.max_inline_batch_kib,
        max_decoded_ratio: spec.api.max_decoded_ratio,
    };
    let json = serde_json::to_vec(&release).unwrap_or_default();
    hex(&sha2::Sha256::digest(json))[..16].to_string()
}

/// One published version: its spec and its handlers' contexts.
pub(super) struct Version {
    pub(super) number: i32,
    pub(super) fingerprint: String,
    /// The ingest and loader handlers' context.
    pub(super) ctx: Context,
    /// The query handler's: `ctx` with the pool for reads.
    pub(super) reads: Context,
    /// The OpenAPI document of this version's API.
    pub(super) openapi: Bytes,
}

/// An alias: the version it names, and the one taking a share of its
/// traffic during a rollout.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Alias {
    pub(super) version: i32,
    pub(super) canary: Option<(i32, f64)>,
}

/// What a version served, per function: as Lambda's `Invocations` and
/// `Errors` metrics by `ExecutedVersion`, by second.
#[derive(Default)]
struct Tally {
    invocations: BTreeMap<i64, u64>,
    errors: BTreeMap<i64, u64>,
}

/// The versions this process runs, and where each function's traffic goes.
pub(crate) struct Router {
    /// What every version's contexts share (the store, the pools, the
    /// queue); each version sets its datasets and limits over it.
    base: Context,
    reads_pool: deadpool_postgres::Pool,
    env: String,
    url: String,
    versions: RwLock<BTreeMap<i32, Arc<Version>>>,
    aliases: RwLock<BTreeMap<FunctionId, Alias>>,
    tallies: Mutex<BTreeMap<(FunctionId, i32), Tally>>,
}

impl Router {
    pub(super) fn new(base: Context, reads_pool: deadpool_postgres::Pool, url: String) -> Router {
        Router {
            env: base.env.clone(),
            base,
            reads_pool,
            url,
            versions: RwLock::default(),
            aliases: RwLock::default(),
            tallies: Mutex::default(),
        }
    }

    pub(super) fn env(&self) -> &str {
        &self.env
    }

    pub(super) fn pool(&self) -> &deadpool_postgres::Pool {
        &self.base.pool
    }

    /// A version's handlers, made from its spec.
    fn version(&self, number: i32, fingerprint: String, spec: Spec) -> Version {
        let ctx = Context {
            datasets: spec.datasets.clone(),
            max_inline_bytes: spec.api.max_inline_batch_kib as usize * 1024,
            max_decoded_ratio: u64::from(spec.api.max_decoded_ratio),
            definitions: Default::default(),
            ..self.base.clone()
        };
        let mut document = crate::synth::openapi::document(&self.env, &spec, false);
        document["servers"] = serde_json::json!([{ "url": self.url }]);
        Version {
            number,
            fingerprint,
            reads: Context {
                pool: self.reads_pool.clone(),
                ..ctx.clone()
            },
            ctx,
            openapi: Bytes::from(serde_json::to_vec_pretty(&document).unwrap_or_default()),
        }
    }

    /// The handlers of `spec` as a version not yet published (to migrate with).
    pub(super) fn unpublished(&self, spec: &Spec) -> Version {
        self.version(0, fingerprint(spec), spec.clone())
    }

    /// The version an invocation of `function` runs: the alias's, or its
    /// canary's with the canary's probability, as a weighted alias routes.
    pub(super) fn pick(&self, function: FunctionId) -> Option<Arc<Version>> {
        let alias = self.alias(function)?;
        let number = match alias.canary {
            Some((canary, weight)) if random() < weight => canary,
            _ => alias.version,
        };
        self.versions.read().ok()?.get(&number).cloned()
    }

    pub(super) fn alias(&self, function: FunctionId) -> Option<Alias> {
        self.aliases.read().ok()?.get(&function).copied()
    }

    /// The version with `number`, if this process has it.
    pub(super) fn get(&self, number: i32) -> Option<Arc<Version>> {
        self.versions.read().ok()?.get(&number).cloned()
    }

    /// Counts an invocation of `version` of `function`, and whether it failed.
    pub(super) fn record(&self, function: FunctionId, version: i32, failed: bool) {
        let second = chrono::Utc::now().timestamp();
        if let Ok(mut tallies) = self.tallies.lock() {
            let tally = tallies.entry((function, version)).or_default();
            *tally.invocations.entry(second).or_default() += 1;
            if failed {
                *tally.errors.entry(second).or_default() += 1;
            }
        }
    }

    /// Invocations (or, with `errors`, failed ones) of `version` of
    /// `function` (every version with `None`) since `since`.
    pub(super) fn served(
        &self,
        function: FunctionId,
        version: Option<i32>,
        since: chrono::DateTime<chrono::Utc>,
        errors: bool,
    ) -> u64 {
        let Ok(tallies) = self.tallies.lock() else {
            return 0;
        };
        tallies
            .iter()
            .filter(|((f, v), _)| *f == function && version.is_none_or(|n| n == *v))
            .map(|(_, t)| {
                let counts = if errors { &t.errors } else { &t.invocations };
                counts
                    .range(since.timestamp()..)
                    .map(|(_, n)| n)
                    .sum::<u64>()
            })
            .sum()
    }

    /// Reads the aliases (another process's `pipeline rollout` may have
    /// moved them) and the versions they name.
    pub(super) async fn refresh(&self) -> Result<(), String> {
        let client = self.pool().get().await.map_err(|e| chain(&e))?;
        let rows = client
            .query(
                "SELECT function, version, canary, weight FROM pipeline.local_aliases",
                &[],
            )
            .await
            .map_err(|e| chain(&e))?;
        let mut aliases = BTreeMap::new();
        for row in rows {
            let Ok(function) = row.get::<_, String>(0).parse::<FunctionId>() else {
                continue;
            };
            let canary: Option<i32> = row.get(2);
            aliases.insert(
                function,
                Alias {
                    version: row.get(1),
                    canary: canary.map(|c| (c, row.get::<_, f64>(3))),
                },
            );
        }
        let wanted: Vec<i32> = aliases
            .values()
            .flat_map(|a| std::iter::once(a.version).chain(a.canary.map(|c| c.0)))
            .filter(|n| self.get(*n).is_none())
            .collect();
        for number in wanted {
            let row = client
                .query_opt(
                    "SELECT fingerprint, spec FROM pipeline.local_versions WHERE version = $1",
                    &[&number],
                )
                .await
                .map_err(|e| chain(&e))?
                .ok_or_else(|| format!("version {number} is not published"))?;
            let spec: Spec = serde_json::from_str(row.get(1))
                .map_err(|e| format!("version {number} cannot be read: {e}"))?;
            let version = self.version(number, row.get(0), spec);
            if let Ok(mut versions) = self.versions.write() {
                versions.insert(number, Arc::new(version));
            }
        }
        if let Ok(mut current) = self.aliases.write() {
            *current = aliases;
        }
        Ok(())
    }

    /// Publishes `spec` as a new version (or finds the one published with
    /// the same fingerprint): its number.
    pub(super) async fn publish(&self, spec: &Spec) -> Result<i32, String> {
        let fingerprint = fingerprint(spec);
        let json = serde_json::to_string(spec).map_err(|e| chain(&e))?;
        let client = self.pool().get().await.map_err(|e| chain(&e))?;
        let found = client
            .query_opt(
                "SELECT version FROM pipeline.local_versions WHERE fingerprint = $1",
                &[&fingerprint],
            )
            .await
            .map_err(|e| chain(&e))?;
        let number: i32 = match found {
            Some(row) => row.get(0),
            None => client
                .query_one(
                    "INSERT INTO pipeline.local_versions (version, fingerprint, spec)
                     SELECT coalesce(max(version), 0) + 1, $1, $2 FROM pipeline.local_versions
                     RETURNING version",
                    &[&fingerprint, &json],
                )
                .await
                .map_err(|e| chain(&e))?
                .get(0),
        };
        let version = self.version(number, fingerprint, spec.clone());
        if let Ok(mut versions) = self.versions.write() {
            versions.insert(number, Arc::new(version));
        }
        Ok(number)
    }

    /// Points `function`'s alias at `version`, with `canary` taking its
    /// share, in the database and in this process.
    pub(super) async fn route(&self, function: FunctionId, alias: Alias) -> Result<(), String> {
        write_alias(self.pool(), function, alias).await?;
        if let Ok(mut aliases) = self.aliases.write() {
            aliases.insert(function, alias);
        }
        Ok(())
    }
}

/// Writes an alias to the database.
pub(super) async fn write_alias(
    pool: &deadpool_postgres::Pool,
    function: FunctionId,
    alias: Alias,
) -> Result<(), String> {
    let client = pool.get().await.map_err(|e| chain(&e))?;
    let (canary, weight) = match alias.canary {
        Some((c, w)) => (Some(c), w),
        None => (None, 0.0),
    };
    client
        .execute(
            "INSERT INTO pipeline.local_aliases (function, version, canary, weight) VALUES ($1, $2, $3, $4)
             ON CONFLICT (function) DO UPDATE SET version = $2, canary = $3, weight = $4",
            &[&function.as_str(), &alias.version, &canary, &weight],
        )
        .await
        .map_err(|e| chain(&e))?;
    Ok(())
}

/// An error with its causes (a database error's own words).
fn chain(error: &dyn std::error::Error) -> String {
    crate::chain::message_chain(error)
}

/// A number in [0, 1), from the system's random source.
fn random() -> f64 {
    (uuid::Uuid::new_v4().as_u128() >> 75) as f64 / (1u64 << 53) as f64
}

/// The rollout's record in the environment's database: saved only if the
/// stored one is still the one read (its tag), as the deploy's S3 record
/// is with `If-Match`.
pub(crate) struct PgStore {
    pub(crate) pool: deadpool_postgres::Pool,
}

impl crate::rollout::Store for PgStore {
    async fn load(
        &self,
        environment: &str,
    ) -> Result<Option<crate::rollout::State>, crate::rollout::CallError> {
        let failed = |e: &dyn std::fmt::Display| crate::rollout::CallError(e.to_string());
        let client = self.pool.get().await.map_err(|e| failed(&e))?;
        let Some(row) = client
            .query_opt(
                "SELECT state, tag FROM pipeline.local_rollouts WHERE environment = $1",
                &[&environment],
            )
            .await
            .map_err(|e| failed(&e))?
        else {
            return Ok(None);
        };
        let mut state: crate::rollout::State =
            serde_json::from_str(row.get(0)).map_err(|e| failed(&e))?;
        state.tag = Some(row.get::<_, i64>(1).to_string());
        Ok(Some(state))
    }

    async fn save(
        &self,
        state: &mut crate::rollout::State,
    ) -> Result<bool, crate::rollout::CallError> {
        let failed = |e: &dyn std::fmt::Display| crate::rollout::CallError(e.to_string());
        let json = serde_json::to_string(state).map_err(|e| failed(&e))?;
        let client = self.pool.get().await.map_err(|e| failed(&e))?;
        let saved = match &state.tag {
            None => client
                .query_opt(
                    "INSERT INTO pipeline.local_rollouts (environment, state, tag) VALUES ($1, $2, 1)
                     ON CONFLICT (environment) DO NOTHING RETURNING tag",
                    &[&state.environment, &json],
                )
                .await
                .map_err(|e| failed(&e))?,
            Some(tag) => {
                let tag: i64 = tag.parse().map_err(|e| failed(&e))?;
                client
                    .query_opt(
                        "UPDATE pipeline.local_rollouts SET state = $2, tag = tag + 1
                         WHERE environment = $1 AND tag = $3 RETURNING tag",
                        &[&state.environment, &json, &tag],
                    )
                    .await
                    .map_err(|e| failed(&e))?
            }
        };
        let Some(row) = saved else {
            return Ok(false);
        };
        state.tag = Some(row.get::<_, i64>(0).to_string());
        Ok(true)
    }
}

/// A version number as the rollout's record writes it.
pub(super) fn parse_version(text: &str) -> Result<i32, crate::rollout::CallError> {
    text.parse()
        .map_err(|_| crate::rollout::CallError(format!("`{text}` is not a local version")))
}
