//! Undoing the merged slices of a batch that failed while merging.
//!
//! A batch fails in the middle of its merge only when its deliveries and
//! hand-offs are spent (see [`MAX_MERGE_HANDOFFS`]). Its load stays hidden,
//! but its rows would still hold their keys: a later batch's row with such
//! a key would be taken for a duplicate of a row no reader sees. So its
//! staging table is kept, and its slices are undone in order, a bounded
//! number of staged rows per transaction, as they were merged: the rows of
//! its load with the slice's keys are deleted, and the rows they replaced
//! come back from the shadows. Readers see no change at any step: the load
//! is hidden and its shadows are shown until the last step takes it off
//! the list and drops the staging table. A later load that replaced one of
//! its rows meanwhile keeps its own row.
//!
//! A load whose staging table is gone (the previous version's give-up
//! dropped it) is undone without knowing its keys: first the rows it
//! replaced come back from its shadows, a bounded number per step, then its
//! own rows are deleted by a sweep of the table's pages, a bounded range
//! per step, the next page recorded with the load.

use super::*;

/// What one undo step did.
enum Step {
    Undone,
    /// Nothing was left to undo: the load is gone.
    Finished,
    /// Another delivery holds the load.
    Busy,
}

/// The dataset and object key of a batch that failed with merged slices
/// still to undo, for the message that undoes them; `None`: nothing to undo.
pub async fn to_undo(
    client: &impl GenericClient,
    batch_id: uuid::Uuid,
) -> Result<Option<(String, String)>, DbError> {
    let row = client
        .query_opt(
            "SELECT b.dataset, b.object_key FROM pipeline.batches b JOIN pipeline.hidden_loads h USING (batch_id)
             WHERE b.batch_id = $1 AND h.abandoned",
            &[&batch_id],
        )
        .await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// Failed batches whose merged slices are still to be undone (dataset and
/// object key each, at most `limit`): a loader of
/// the previous version, given the message that undoes them, drops it as
/// done, so the next merge to load a batch sends it again. A message sent
/// twice is harmless: an undo step another delivery holds is skipped.
pub async fn undos_left(
    client: &impl GenericClient,
    limit: i64,
) -> Result<Vec<(uuid::Uuid, String, String)>, DbError> {
    let rows = client
        .query(
            "SELECT b.batch_id, b.dataset, b.object_key
             FROM pipeline.hidden_loads h JOIN pipeline.batches b USING (batch_id)
             WHERE h.abandoned AND b.status = 'failed'
             ORDER BY h.load LIMIT $1",
            &[&limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// Undoes the failed batch's slices until none is left, or until `until`
/// is too near for another (room for twice the last one's time):
/// [`Merged::More`] then, to hand on; [`Merged::Done`] once undone.
pub async fn undo_slices(
    client: &mut Client,
    name: &str,
    dataset: &Dataset,
    batch_id: uuid::Uuid,
    slice_rows: u64,
    until: Option<std::time::Instant>,
) -> Result<Merged, DbError> {
    let mut slices = 0;
    let mut need = super::slices::FIRST_SLICE;
    loop {
        let late = until.is_some_and(|until| std::time::Instant::now() + need > until);
        if late && slices > 0 {
            return Ok(Merged::More { slices });
        }
        let started = std::time::Instant::now();
        match undo_slice(client, name, dataset, batch_id, slice_rows, until).await? {
            Step::Undone => slices += 1,
            Step::Finished => return Ok(Merged::Done),
            Step::Busy => return Ok(Merged::Busy),
        }
        need = started.elapsed() * 2;
    }
}

async fn undo_slice(
    client: &mut Client,
    name: &str,
    dataset: &Dataset,
    batch_id: uuid::Uuid,
    slice_rows: u64,
    until: Option<std::time::Instant>,
) -> Result<Step, DbError> {
    let tx = client.transaction().await?;
    super::slices::bound_by(&tx, until).await?;
    let row = tx
        .query_opt(
            "SELECT load, merged_chunk, merged_line, undone_chunk, undone_line, undone_page FROM pipeline.hidden_loads
             WHERE batch_id = $1 AND abandoned FOR UPDATE NOWAIT",
            &[&batch_id],
        )
        .await;
    let row = match row {
        Ok(Some(row)) => row,
        Ok(None) => return Ok(Step::Finished),
        Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => return Ok(Step::Busy),
        Err(e) => return Err(e.into()),
    };
    let (load, merged_chunk, merged_line, chunk, line): (i64, i32, i64, i32, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    let staged: bool = tx
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&staging(batch_id)])
        .await?
        .get(0);
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
        [&load, &chunk, &line, &merged_chunk, &merged_line];
    if !staged {
        // Dropped by the previous version's give-up: the load's keys are
        // not known, its table is swept.
        let page: i64 = row.get(5);
        return sweep(tx, name, dataset, batch_id, load, page).await;
    }
    let sql = UndoSql::new(name, dataset, batch_id, slice_rows);
    let undone = tx.query_one(&sql.delete, &params).await?;
    let rows: i64 = undone.get(0);
    if rows == 0 {
        return finished(tx, batch_id, load).await;
    }
    tx.execute(&sql.restore, &params).await?;
    let (last_chunk, last_line): (i32, i64) = (undone.get(1), undone.get(2));
    tx.execute(
        "UPDATE pipeline.hidden_loads SET undone_chunk = $2, undone_line = $3 WHERE load = $1",
        &[&load, &last_chunk, &last_line],
    )
    .await?;
    tx.commit().await?;
    Ok(Step::Undone)
}

/// The load is undone: off the list of hidden loads, its staging table
/// dropped.
async fn finished(tx: Transaction<'_>, batch_id: uuid::Uuid, load: i64) -> Result<Step, DbError> {
    tx.execute(
        "DELETE FROM pipeline.hidden_loads WHERE load = $1",
        &[&load],
    )
    .await?;
    tx.batch_execute(&format!("DROP TABLE IF EXISTS {}", staging(batch_id)))
        .await?;
    tx.commit().await?;
    tracing::info!(%batch_id, load, "the failed batch's merge is undone");
    Ok(Step::Finished)
}

/// Shadow rows put back per step of an undo without a staging table.
const SHADOW_ROWS: i64 = 10_000;

/// Table pages (8 KiB each) swept per step of an undo without a staging
/// table: 32 MiB.
const SWEEP_PAGES: i64 = 4096;

/// One step of the undo of a load whose staging table is gone: shadows put
/// back while some are left, then the pages from `page` on swept of the
/// load's rows, until the table's end.
async fn sweep(
    tx: Transaction<'_>,
    name: &str,
    dataset: &Dataset,
    batch_id: uuid::Uuid,
    load: i64,
    page: i64,
) -> Result<Step, DbError> {
    let sql = SweepSql::new(name, dataset);
    tx.execute(&sql.delete_replaced, &[&load, &SHADOW_ROWS])
        .await?;
    let back: i64 = tx
        .query_one(&sql.restore, &[&load, &SHADOW_ROWS])
        .await?
        .get(0);
    if back > 0 {
        tx.commit().await?;
        return Ok(Step::Undone);
    }
    let pages: i64 = tx
        .query_one(
            "SELECT pg_relation_size($1::text::regclass) / current_setting('block_size')::bigint",
            &[&table(name)],
        )
        .await?
        .get(0);
    if page >= pages {
        return finished(tx, batch_id, load).await;
    }
    let next = page + SWEEP_PAGES;
    let gone = tx.execute(&sql.sweep, &[&load, &page, &next]).await?;
    tx.execute(
        "UPDATE pipeline.hidden_loads SET undone_page = $2 WHERE load = $1",
        &[&load, &next],
    )
    .await?;
    tx.commit().await?;
    tracing::debug!(%batch_id, load, page, gone, "swept a failed load's rows");
    Ok(Step::Undone)
}

/// The statements of an undo without a staging table, for load `$1`.
struct SweepSql {
    /// Deletes the load's rows that replaced the first `$2` of its shadows.
    delete_replaced: String,
    /// Moves those shadows back into the table; answers how many.
    restore: String,
    /// Deletes the load's rows on the pages from `$2` up to `$3`.
    sweep: String,
}

impl SweepSql {
    fn new(name: &str, dataset: &Dataset) -> SweepSql {
        let t = table(name);
        let first = format!(
            "SELECT load, dataset, key, row FROM pipeline.shadows
             WHERE load = $1::bigint AND dataset = {} ORDER BY key LIMIT $2",
            super::slices::literal(name)
        );
        let same = dataset
            .primary_key
            .iter()
            .map(|k| format!("t.{0} = r.{0}", ident(k)))
            .collect::<Vec<_>>()
            .join(" AND ");
        SweepSql {
            delete_replaced: format!(
                "DELETE FROM {t} t USING ({first}) s CROSS JOIN LATERAL jsonb_populate_record(NULL::{t}, s.row) r
                 WHERE {same} AND t.{LOAD_COLUMN} = $1::bigint"
            ),
            restore: format!(
                "WITH back AS (DELETE FROM pipeline.shadows sh USING ({first}) f
                               WHERE (sh.load, sh.dataset, sh.key) = (f.load, f.dataset, f.key) RETURNING sh.row),
                 ins AS (INSERT INTO {t} SELECT r.* FROM back CROSS JOIN LATERAL jsonb_populate_record(NULL::{t}, back.row) r
                         ON CONFLICT DO NOTHING)
                 SELECT count(*) FROM back"
            ),
            sweep: format!(
                "DELETE FROM {t} WHERE ctid >= ('(' || $2::bigint || ',0)')::tid
                 AND ctid < ('(' || $3::bigint || ',0)')::tid AND {LOAD_COLUMN} = $1::bigint"
            ),
        }
    }
}

/// The statements of an undo step, over the slice of staged rows after
/// (`$2` chunk, `$3` line) up to where the merge reached (`$4`, `$5`), at
/// most `limit` of them, for load `$1`.
struct UndoSql {
    /// Deletes the load's rows with the slice's keys; answers (rows in the
    /// slice, last chunk, last line).
    delete: String,
    /// Puts back the rows the load replaced, from its shadows.
    restore: String,
}

impl UndoSql {
    fn new(name: &str, dataset: &Dataset, batch_id: uuid::Uuid, limit: u64) -> UndoSql {
        let (t, stage) = (table(name), staging(batch_id));
        let keys: Vec<String> = dataset.primary_key.iter().map(|k| ident(k)).collect();
        let key = keys.join(", ");
        let slice = format!(
            "slice AS MATERIALIZED (SELECT {key}, pipeline_chunk, pipeline_line FROM {stage}
             WHERE (pipeline_chunk, pipeline_line) > ($2::integer, $3::bigint)
               AND (pipeline_chunk, pipeline_line) <= ($4::integer, $5::bigint)
             ORDER BY pipeline_chunk, pipeline_line LIMIT {limit})"
        );
        let same = keys
            .iter()
            .map(|k| format!("t.{k} = s.{k}"))
            .collect::<Vec<_>>()
            .join(" AND ");
        let key_json = keys
            .iter()
            .map(|k| format!("s.{k}"))
            .collect::<Vec<_>>()
            .join(", ");
        let delete = format!(
            "WITH {slice},
             gone AS (DELETE FROM {t} t USING (SELECT DISTINCT {key} FROM slice) s
                      WHERE {same} AND t.{LOAD_COLUMN} = $1::bigint RETURNING 1)
             SELECT (SELECT count(*) FROM slice), last.pipeline_chunk, last.pipeline_line
             FROM (SELECT (SELECT count(*) FROM gone)) one LEFT JOIN LATERAL (
                 SELECT pipeline_chunk, pipeline_line FROM slice
                 ORDER BY pipeline_chunk DESC, pipeline_line DESC LIMIT 1) last ON true"
        );
        let restore = format!(
            "WITH {slice},
             back AS (DELETE FROM pipeline.shadows sh
                      USING (SELECT DISTINCT jsonb_build_array({key_json}) AS key FROM slice s) s
                      WHERE sh.load = $1::bigint AND sh.dataset = {dataset} AND sh.key = s.key
                      RETURNING sh.row)
             INSERT INTO {t} SELECT r.* FROM back CROSS JOIN LATERAL jsonb_populate_record(NULL::{t}, back.row) r
             ON CONFLICT DO NOTHING",
            dataset = super::slices::literal(name),
        );
        UndoSql { delete, restore }
    }
}
