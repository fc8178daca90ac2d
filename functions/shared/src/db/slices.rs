//! Merging a batch staged in chunks into its table in slices, each a
//! transaction of bounded size, shown to readers all at once.
//!
//! The merge of a large batch is cut into slices of at most
//! [`DEFAULT_SLICE_ROWS`] staged rows, taken in the order of the object
//! (chunk, then line) through the staging table's index. Each slice commits
//! on its own with the position it reached, under the batch's row lock: a
//! redelivery, or the next invocation, goes on from there; a loader killed
//! mid-slice leaves the slice undone. An invocation merges slices until its
//! deadline comes near, then hands the rest on in a message.
//!
//! Visibility: the batch gets a load number, listed in
//! `pipeline.hidden_loads` while it merges. Every row a slice writes carries
//! it (`pipeline_load`), and reads skip rows of a listed load; a row of
//! another load that a slice replaces (`on_conflict: update`) is first kept
//! in `pipeline.shadows`, where reads find it instead. The batch's last step
//! marks it `loaded`, and a trigger takes its load off the list in that
//! same transaction: readers see none of the batch, then all of it.
//!
//! Between two versions: a loader of the previous version that meets a
//! batch in this phase runs its one-statement merge of the whole staging
//! table, which gives the same rows (keys already merged conflict with
//! themselves), and marks the batch `loaded`, which shows the load through
//! the trigger.

use super::*;

/// Staged rows one slice merges at most: about half a second of a merge
/// into a table with four read indexes on 2 cores.
pub const DEFAULT_SLICE_ROWS: u64 = 50_000;

/// Shadow rows of finished loads deleted per statement.
const GARBAGE_ROWS: i64 = 10_000;

/// Times a batch's merge is handed on in a new message when its message's
/// deliveries are spent, before the batch fails.
pub const MAX_MERGE_HANDOFFS: i32 = 10;

/// The column of a dataset's table that holds the load of a row merged in
/// slices (none for rows loaded in one transaction).
pub(crate) const LOAD_COLUMN: &str = "pipeline_load";

/// The staging table's index, by which slices are taken in order.
pub(crate) fn slice_index(batch_id: uuid::Uuid) -> String {
    ident(&format!("stage_{}_order", batch_id.simple()))
}

/// What one merging invocation came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Merged {
    /// The batch is loaded: its last slice is in, and its rows show.
    Loaded(LoadOutcome),
    /// Slices are still to merge: the deadline is near, hand them on.
    More { slices: u32 },
    /// Another delivery holds the batch (and will finish it or be
    /// delivered again).
    Busy,
    /// The batch was loaded or failed already.
    Done,
}

/// What one slice did.
enum Slice {
    Merged,
    Last(LoadOutcome),
    Busy,
    Done,
}

/// Time a slice is thought to take before one has been timed.
pub(super) const FIRST_SLICE: std::time::Duration = std::time::Duration::from_millis(500);

/// Merges the staged batch slice after slice until it is loaded, or until
/// `until` is too near to merge another one (room for twice the last
/// slice's time). `at_least_one`: merge one slice whatever the time left
/// (an invocation that did nothing else), so that every invocation makes
/// progress.
pub async fn merge_slices(
    client: &mut Client,
    name: &str,
    dataset: &Dataset,
    batch_id: uuid::Uuid,
    slice_rows: u64,
    until: Option<std::time::Instant>,
    at_least_one: bool,
) -> Result<Merged, DbError> {
    let mut slices = 0;
    let mut need = FIRST_SLICE;
    let mut plain = true;
    loop {
        let late = until.is_some_and(|until| std::time::Instant::now() + need > until);
        if late && (slices > 0 || !at_least_one) {
            return Ok(Merged::More { slices });
        }
        let started = std::time::Instant::now();
        match slice(
            client, name, dataset, batch_id, slice_rows, until, &mut plain,
        )
        .await?
        {
            Slice::Merged => slices += 1,
            Slice::Last(outcome) => return Ok(Merged::Loaded(outcome)),
            Slice::Busy => return Ok(Merged::Busy),
            Slice::Done => return Ok(Merged::Done),
        }
        need = started.elapsed() * 2;
    }
}

/// Merges the next slice, or, when none is left, shows the batch.
async fn slice(
    client: &mut Client,
    name: &str,
    dataset: &Dataset,
    batch_id: uuid::Uuid,
    slice_rows: u64,
    until: Option<std::time::Instant>,
    plain: &mut bool,
) -> Result<Slice, DbError> {
    let tx = client.transaction().await?;
    match lock_batch_nowait(&tx, batch_id).await? {
        Locked::Open => {}
        Locked::Busy => return Ok(Slice::Busy),
        Locked::Final => return Ok(Slice::Done),
    }
    bound_by(&tx, until).await?;
    collect_garbage(&tx).await?;
    let at = tx
        .query_one(
            "INSERT INTO pipeline.hidden_loads (batch_id) VALUES ($1)
             ON CONFLICT (batch_id) DO UPDATE SET batch_id = EXCLUDED.batch_id
             RETURNING load, merged_chunk, merged_line, inserted",
            &[&batch_id],
        )
        .await?;
    let (load, chunk, line, inserted): (i64, i32, i64, i64) =
        (at.get(0), at.get(1), at.get(2), at.get(3));
    let stmt = |rule| slice_sql(name, dataset, batch_id, slice_rows, rule);
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&load, &chunk, &line];
    let row = if *plain {
        // Usually no key of the slice is there already nor repeated: a
        // plain insert, under a savepoint; on a conflict, the dataset's
        // rule, for this slice and the invocation's next ones.
        tx.batch_execute("SAVEPOINT plain").await?;
        match tx.query_one(&stmt(Rule::Plain), &params).await {
            Ok(row) => Some(row),
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                tx.batch_execute("ROLLBACK TO SAVEPOINT plain").await?;
                *plain = false;
                None
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        None
    };
    let row = match row {
        Some(row) => row,
        None => tx.query_one(&stmt(Rule::Dataset), &params).await?,
    };
    let (rows, new): (i64, i64) = (row.get(0), row.get(1));
    if rows == 0 {
        let outcome = show(&tx, batch_id, inserted).await?;
        tx.commit().await?;
        return Ok(Slice::Last(outcome));
    }
    let (chunk, line): (i32, i64) = (row.get(2), row.get(3));
    tx.execute(
        "UPDATE pipeline.hidden_loads SET merged_chunk = $2, merged_line = $3, inserted = inserted + $4 WHERE load = $1",
        &[&load, &chunk, &line, &new],
    )
    .await?;
    tx.commit().await?;
    tracing::debug!(%batch_id, load, chunk, line, rows, inserted = new, "merged a slice");
    Ok(Slice::Merged)
}

/// Bounds the transaction's statements by the time left until `until`:
/// the server stops a slice, too, before the function is stopped.
pub(super) async fn bound_by(
    tx: &Transaction<'_>,
    until: Option<std::time::Instant>,
) -> Result<(), DbError> {
    if let Some(until) = until {
        let left = until.saturating_duration_since(std::time::Instant::now());
        tx.batch_execute(&format!(
            "SET LOCAL statement_timeout = {}",
            left.as_millis().max(100)
        ))
        .await?;
    }
    Ok(())
}

/// The statement that merges the staged rows after (`$2` chunk, `$3`
/// line) into the table under load `$1`, at most `limit` of them, and
/// answers (rows taken, rows inserted, last chunk, last line). Among rows
/// of one key, the first in the object wins for `ignore` (a row of this
/// load already there came before) and the last for `update`; a row of
/// another load that `update` replaces is kept in the shadows first.
/// How a slice's rows go in.
#[derive(Clone, Copy)]
enum Rule {
    /// All new and distinct: inserted as they are.
    Plain,
    /// With the dataset's conflict rule.
    Dataset,
}

fn slice_sql(
    name: &str,
    dataset: &Dataset,
    batch_id: uuid::Uuid,
    limit: u64,
    rule: Rule,
) -> String {
    let cols = column_list(dataset);
    let key: Vec<String> = dataset.primary_key.iter().map(|k| ident(k)).collect();
    let key = key.join(", ");
    let (t, stage) = (table(name), staging(batch_id));
    let slice = format!(
        "slice AS MATERIALIZED (SELECT * FROM {stage} WHERE (pipeline_chunk, pipeline_line) > ($2::integer, $3::bigint)
         ORDER BY pipeline_chunk, pipeline_line LIMIT {limit})"
    );
    let merge = match (rule, dataset.on_conflict) {
        (Rule::Plain, _) => format!(
            "ins AS (INSERT INTO {t} ({cols}, {LOAD_COLUMN}) SELECT {cols}, $1::bigint FROM slice
             RETURNING true AS new)"
        ),
        (Rule::Dataset, OnConflict::Ignore) => format!(
            "ins AS (INSERT INTO {t} ({cols}, {LOAD_COLUMN})
             SELECT DISTINCT ON ({key}) {cols}, $1::bigint FROM slice ORDER BY {key}, pipeline_chunk, pipeline_line
             ON CONFLICT ({key}) DO NOTHING RETURNING true AS new)"
        ),
        (Rule::Dataset, OnConflict::Update) => {
            let mut set: Vec<String> = dataset
                .columns
                .iter()
                .filter(|c| !dataset.primary_key.contains(&c.name))
                .map(|c| format!("{0} = EXCLUDED.{0}", ident(&c.name)))
                .collect();
            set.push(format!("{LOAD_COLUMN} = EXCLUDED.{LOAD_COLUMN}"));
            let key_json: Vec<String> = dataset
                .primary_key
                .iter()
                .map(|k| format!("t.{}", ident(k)))
                .collect();
            format!(
                "src AS MATERIALIZED (SELECT DISTINCT ON ({key}) {cols} FROM slice
                 ORDER BY {key}, pipeline_chunk DESC, pipeline_line DESC),
                 kept AS (INSERT INTO pipeline.shadows (load, dataset, key, row)
                 SELECT $1::bigint, {dataset_name}, jsonb_build_array({key_json}), to_jsonb(t)
                 FROM {t} t JOIN src USING ({key}) WHERE t.{LOAD_COLUMN} IS DISTINCT FROM $1::bigint
                 ON CONFLICT DO NOTHING),
                 ins AS (INSERT INTO {t} ({cols}, {LOAD_COLUMN}) SELECT {cols}, $1::bigint FROM src
                 ON CONFLICT ({key}) DO UPDATE SET {set} RETURNING (xmax = 0) AS new)",
                dataset_name = literal(name),
                key_json = key_json.join(", "),
                set = set.join(", "),
            )
        }
    };
    format!(
        "WITH {slice}, {merge}
         SELECT (SELECT count(*) FROM slice), (SELECT count(*) FROM ins WHERE new),
                last.pipeline_chunk, last.pipeline_line
         FROM (SELECT 1) one LEFT JOIN LATERAL (SELECT pipeline_chunk, pipeline_line FROM slice
               ORDER BY pipeline_chunk DESC, pipeline_line DESC LIMIT 1) last ON true"
    )
}

/// The batch's last step: marked `loaded` (which shows its load), its
/// staging table dropped.
async fn show(
    tx: &Transaction<'_>,
    batch_id: uuid::Uuid,
    inserted: i64,
) -> Result<LoadOutcome, DbError> {
    let records = staged_records(tx, batch_id).await?;
    mark_loaded(tx, batch_id, records, inserted).await?;
    tx.batch_execute(&format!("DROP TABLE IF EXISTS {}", staging(batch_id)))
        .await?;
    Ok(LoadOutcome::Loaded {
        records: records as u64,
        inserted: inserted as u64,
        duplicates: (records - inserted).max(0) as u64,
    })
}

/// When the batch's merge in slices has begun and was handed on fewer than
/// [`MAX_MERGE_HANDOFFS`] times, counts one more and answers the batch's
/// dataset and object key, for the message that goes on with it.
pub async fn hand_merge_on(
    client: &impl GenericClient,
    batch_id: uuid::Uuid,
) -> Result<Option<(String, String)>, DbError> {
    let row = client
        .query_opt(
            "UPDATE pipeline.hidden_loads h SET handoffs = handoffs + 1 FROM pipeline.batches b
             WHERE h.batch_id = $1 AND b.batch_id = h.batch_id AND b.status = 'loading'
             AND NOT h.abandoned AND h.handoffs < $2
             RETURNING b.dataset, b.object_key",
            &[&batch_id, &MAX_MERGE_HANDOFFS],
        )
        .await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// Deletes some of the shadow rows that no read needs any more (their
/// load is shown): a bounded amount per slice.
async fn collect_garbage(tx: &Transaction<'_>) -> Result<(), DbError> {
    tx.execute(
        "DELETE FROM pipeline.shadows WHERE (load, dataset, key) IN (
             SELECT s.load, s.dataset, s.key FROM pipeline.shadows s
             WHERE NOT EXISTS (SELECT 1 FROM pipeline.hidden_loads h WHERE h.load = s.load) LIMIT $1)",
        &[&GARBAGE_ROWS],
    )
    .await?;
    Ok(())
}

/// Whether a batch's staging table has the index slices are taken by (the
/// previous version made its tables without one; those merge in one).
pub(crate) async fn sliceable(tx: &Transaction<'_>, batch_id: uuid::Uuid) -> Result<bool, DbError> {
    Ok(tx
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&format!("pipeline.{}", slice_index(batch_id))],
        )
        .await?
        .get(0))
}

/// The row lock of a batch, if free now.
enum Locked {
    Open,
    Busy,
    Final,
}

async fn lock_batch_nowait(tx: &Transaction<'_>, batch_id: uuid::Uuid) -> Result<Locked, DbError> {
    let row = tx
        .query_opt(
            "SELECT status FROM pipeline.batches WHERE batch_id = $1 FOR UPDATE NOWAIT",
            &[&batch_id],
        )
        .await;
    let status: Option<String> = match row {
        Ok(row) => row.map(|r| r.get(0)),
        Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => return Ok(Locked::Busy),
        Err(e) => return Err(e.into()),
    };
    match status.as_deref().map(status_of).transpose()? {
        None => Err(DbError::NoBatch(batch_id)),
        Some(s) if s.is_final() => Ok(Locked::Final),
        Some(_) => Ok(Locked::Open),
    }
}

/// `'text'`, for names that are validated identifiers.
pub(super) fn literal(name: &str) -> String {
    format!("'{name}'")
}

/// The hidden loads, read once per statement (an init plan).
const HIDDEN: &str =
    "((SELECT coalesce(array_agg(load), '{}') FROM pipeline.hidden_loads)::bigint[])";

/// What reads select from instead of the dataset's table, aliased
/// `visible`: its rows, and the rows that hidden loads replaced. Reads add
/// [`shown`] to their conditions, which skips rows of hidden loads: as a
/// condition of the whole, it reaches the table's own scan, which stays one
/// index range scan (the same condition inside the union's branch would
/// keep the planner from merging the branches in index order).
pub(crate) fn visible(name: &str) -> String {
    let t = table(name);
    format!(
        "(SELECT * FROM {t} UNION ALL
          SELECT r.* FROM pipeline.shadows s CROSS JOIN LATERAL jsonb_populate_record(NULL::{t}, s.row) r
          WHERE s.dataset = {dataset} AND s.load = ANY {HIDDEN}) visible",
        dataset = literal(name),
    )
}

/// The condition reads add, over [`visible`]: no row of a hidden load.
pub(crate) fn shown() -> String {
    format!("(visible.{LOAD_COLUMN} IS NULL OR visible.{LOAD_COLUMN} <> ALL {HIDDEN})")
}
