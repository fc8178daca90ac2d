//! A batch loaded in chunks merges into its table in slices, each its own
//! transaction, handed on from one invocation to the next; readers see
//! none of the batch until it is loaded, then all of it, and the rows it
//! replaces stay readable meanwhile.

use crate::common::{self, Scratch, Sent};

use pipeline_testkit::{Service, require};

use bytes::Bytes;
use pipeline_shared::Dataset;
use pipeline_shared::api::Context;
use pipeline_shared::chunks::{ChunkMessage, Finished};
use pipeline_shared::db::{self, LoadOutcome, Merged};
use std::sync::Arc;

/// dev's `readings`: CSV with a header, `on_conflict: update`.
fn readings() -> Dataset {
    common::dev_dataset("readings")
}

fn line(sensor: u32, value: f64) -> String {
    format!("s{sensor:05},2024-01-01T00:00:00Z,{value},1,true,2024-01-01\n")
}

/// Stores a batch through ingest: its id and object key.
async fn post(ctx: &Context, rows: impl Iterator<Item = String>) -> (uuid::Uuid, String) {
    let mut body = String::from("sensor_id,read_at,value,quality,valid,day\n");
    body.extend(rows);
    common::post_batch(ctx, "readings", "text/csv", Bytes::from(body)).await
}

/// Every record a reader sees: sensor and value, in key order.
async fn visible(ctx: &Context) -> Vec<(String, f64)> {
    let client = ctx.pool.get().await.expect("client");
    let page = db::records(
        &**client,
        "readings",
        &ctx.datasets["readings"],
        &[],
        None,
        10_000,
    )
    .await
    .expect("read");
    assert!(page.next.is_none(), "one page");
    page.records
        .iter()
        .map(|r| {
            (
                r["sensor_id"].as_str().expect("sensor").to_string(),
                r["value"].as_f64().expect("value"),
            )
        })
        .collect()
}

async fn count(ctx: &Context, sql: &str) -> i64 {
    let client = ctx.pool.get().await.expect("client");
    client.query_one(sql, &[]).await.expect(sql).get(0)
}

#[tokio::test]
async fn a_chunked_batch_merges_in_slices_across_invocations_and_shows_all_at_once() {
    require!(Service::Postgres);
    let db = Scratch::new("slices").await;
    let objects = tempfile::tempdir().expect("temp dir");
    let datasets = [("readings".to_string(), readings())].into();
    let mut ctx = common::handlers_context(&db, "", 4, datasets, objects.path());
    loader::migrate(&ctx).await.expect("migration");

    // Sensors 1 to 100 are there, read 1.0, loaded in one stream.
    let first = post(&ctx, (1..=100).map(|n| line(n, 1.0))).await;
    match loader::load_key(&ctx, &first.1, None).await.expect("load") {
        loader::Handled::Loaded { outcome, .. } => assert_eq!(
            outcome,
            LoadOutcome::Loaded {
                records: 100,
                inserted: 100,
                duplicates: 0
            }
        ),
        other => panic!("{other:?}"),
    }

    // A batch of 1,001 records in chunks of about 2 kB, merged 50 rows a
    // slice: sensors 51 to 1050 read 2.0, then sensor 60 again, read 3.0.
    let sent = Arc::new(Sent::default());
    ctx.chunk_bytes = 2000;
    ctx.merge_slice_rows = 50;
    ctx.chunk_queue = Some(sent.clone());
    let rows = (51..=1050).map(|n| line(n, 2.0)).chain([line(60, 3.0)]);
    let (batch_id, key) = post(&ctx, rows).await;
    let chunked = loader::load_key(&ctx, &key, None).await.expect("plan");
    assert!(
        matches!(chunked, loader::Handled::Chunked { chunks, .. } if chunks > 10),
        "{chunked:?}"
    );
    let mut chunks = sent.take();
    let last = chunks.pop().expect("chunks");
    for chunk in &chunks {
        let handled = loader::load_chunk(&ctx, chunk, None).await.expect("chunk");
        assert!(
            matches!(
                &handled,
                loader::Handled::Chunk {
                    finished: Finished::Pending,
                    ..
                }
            ),
            "{handled:?}"
        );
    }

    // The last chunk's invocation is at its deadline once its chunk is in:
    // it hands the merge on.
    let handled = loader::load_chunk(&ctx, &last, Some(std::time::Instant::now()))
        .await
        .expect("last chunk");
    let more = |slices| Finished::Slices(Merged::More { slices });
    assert!(
        matches!(&handled, loader::Handled::Chunk { finished, .. } if *finished == more(0)),
        "{handled:?}"
    );
    let handed = sent.take();
    assert_eq!(handed, [ChunkMessage::merge(batch_id, "readings", &key)]);

    // The hand-off's invocation is at its deadline too: it merges one slice,
    // since it did nothing else, and hands the rest on.
    let handled = loader::load_chunk(&ctx, &handed[0], Some(std::time::Instant::now()))
        .await
        .expect("hand-off");
    assert!(
        matches!(&handled, loader::Handled::Chunk { finished, .. } if *finished == more(1)),
        "{handled:?}"
    );
    assert_eq!(sent.take(), handed);

    // Merged so far: 50 rows, hidden, and the 50 they replaced kept.
    let table = count(
        &ctx,
        "SELECT count(*) FROM public.readings WHERE pipeline_load IS NOT NULL",
    )
    .await;
    assert_eq!(table, 50);
    let kept = count(&ctx, "SELECT count(*) FROM pipeline.shadows").await;
    assert_eq!(kept, 50);
    let before: Vec<(String, f64)> = (1..=100).map(|n| (format!("s{n:05}"), 1.0)).collect();
    assert_eq!(visible(&ctx).await, before);

    // The hand-off's last delivery fails (the table is locked past the
    // invocation's deadline): the merge is handed on again, not failed.
    let blocker = ctx.pool.get().await.expect("client");
    blocker
        .batch_execute("BEGIN; LOCK TABLE public.readings IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let mut message = aws_lambda_events::event::sqs::SqsMessage::default();
    message.message_id = Some("last".into());
    message.body = Some(serde_json::json!({"chunk": handed[0]}).to_string());
    message
        .attributes
        .insert("ApproximateReceiveCount".into(), "5".into());
    // A second message in the same invocation, for which no time is left
    // after the first: handed on as a new message, not counted a failure.
    let mut second = message.clone();
    second.message_id = Some("second".into());
    let mut event = aws_lambda_events::event::sqs::SqsEvent::default();
    event.records = vec![message, second];
    let margin = std::time::Duration::from_millis(100);
    let at = tokio::time::Instant::now() + std::time::Duration::from_millis(500);
    let response = loader::handle_until(&ctx, event, Some((at, margin))).await;
    blocker.batch_execute("ROLLBACK").await.expect("unlock");
    assert!(
        response.batch_item_failures.is_empty(),
        "done with: handed on"
    );
    assert_eq!(sent.take(), [handed.clone(), handed.clone()].concat());
    let handoffs = count(&ctx, "SELECT handoffs::bigint FROM pipeline.hidden_loads").await;
    assert_eq!(handoffs, 1);
    let status = count(
        &ctx,
        "SELECT count(*) FROM pipeline.batches WHERE status = 'loading'",
    )
    .await;
    assert_eq!(status, 1);
    assert_eq!(visible(&ctx).await, before);

    // The next invocation merges the rest, and the batch shows at once.
    let handled = loader::load_chunk(&ctx, &handed[0], None)
        .await
        .expect("merge");
    let loaded = LoadOutcome::Loaded {
        records: 1001,
        inserted: 950,
        duplicates: 51,
    };
    assert!(
        matches!(
            &handled,
            loader::Handled::Chunk { finished: Finished::Slices(Merged::Loaded(outcome)), .. }
                if *outcome == loaded
        ),
        "{handled:?}"
    );
    let after: Vec<(String, f64)> = (1..=1050)
        .map(|n| {
            let value = match n {
                ..=50 => 1.0,
                60 => 3.0,
                _ => 2.0,
            };
            (format!("s{n:05}"), value)
        })
        .collect();
    assert_eq!(visible(&ctx).await, after);
    assert!(sent.take().is_empty(), "nothing more to hand on");
    let hidden = count(&ctx, "SELECT count(*) FROM pipeline.hidden_loads").await;
    assert_eq!(hidden, 0);

    // A redelivery of the hand-off changes nothing.
    let again = loader::load_chunk(&ctx, &handed[0], None)
        .await
        .expect("again");
    assert!(
        matches!(
            &again,
            loader::Handled::Chunk {
                finished: Finished::Slices(Merged::Done),
                ..
            }
        ),
        "{again:?}"
    );
    assert_eq!(visible(&ctx).await, after);
    let stage = count(
        &ctx,
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'pipeline' AND tablename LIKE 'stage_%'",
    )
    .await;
    assert_eq!(stage, 0);
}

/// A batch failed in the middle of its merge, its merged slices to undo.
struct FailedMidMerge {
    _db: Scratch,
    _objects: tempfile::TempDir,
    ctx: Context,
    sent: Arc<Sent>,
    /// The message that undoes it.
    merge: ChunkMessage,
    /// What readers saw before it.
    before: Vec<(String, f64)>,
}

/// Rows of the first batch, as it loaded them.
const FIRST_ROWS: &str =
    "SELECT count(*) FROM public.readings WHERE value = 1.0 AND pipeline_load IS NULL";
/// Rows of the failed batch's merged slices.
const MERGED_ROWS: &str = "SELECT count(*) FROM public.readings WHERE pipeline_load IS NOT NULL";

/// Runs the undo message without a deadline: it undoes every slice left.
async fn undo_to_the_end(ctx: &Context, merge: &ChunkMessage) {
    let handled = loader::load_chunk(ctx, merge, None).await.expect("undo");
    assert!(
        matches!(
            &handled,
            loader::Handled::Chunk {
                finished: Finished::Slices(Merged::Done),
                ..
            }
        ),
        "{handled:?}"
    );
}

/// Sensors 101 to 150 (merged by the failed batch, then undone) load in
/// one stream as new rows.
async fn keys_are_free(ctx: &mut Context) {
    ctx.chunk_bytes = 0;
    let next = post(ctx, (101..=150).map(|n| line(n, 5.0))).await;
    match loader::load_key(ctx, &next.1, None).await.expect("load") {
        loader::Handled::Loaded { outcome, .. } => assert_eq!(
            outcome,
            LoadOutcome::Loaded {
                records: 50,
                inserted: 50,
                duplicates: 0
            }
        ),
        other => panic!("{other:?}"),
    }
}

/// Sensors 1 to 100 read 1.0; then sensors 51 to 400 read 2.0 in a batch
/// whose merge fails after two slices of 50 (50 rows replaced, 50 new).
async fn failed_mid_merge() -> FailedMidMerge {
    let db = Scratch::new("undo").await;
    let objects = tempfile::tempdir().expect("temp dir");
    let datasets = [("readings".to_string(), readings())].into();
    let mut ctx = common::handlers_context(&db, "", 4, datasets, objects.path());
    loader::migrate(&ctx).await.expect("migration");
    let first = post(&ctx, (1..=100).map(|n| line(n, 1.0))).await;
    loader::load_key(&ctx, &first.1, None).await.expect("load");
    let before: Vec<(String, f64)> = (1..=100).map(|n| (format!("s{n:05}"), 1.0)).collect();
    let table = FIRST_ROWS;
    assert_eq!(count(&ctx, table).await, 100);

    // Sensors 51 to 400 read 2.0: two slices of 50 merged (50 rows
    // replaced, 50 new), then the batch fails.
    let sent = Arc::new(Sent::default());
    ctx.chunk_bytes = 2000;
    ctx.merge_slice_rows = 50;
    ctx.chunk_queue = Some(sent.clone());
    let (batch_id, key) = post(&ctx, (51..=400).map(|n| line(n, 2.0))).await;
    loader::load_key(&ctx, &key, None).await.expect("plan");
    let mut chunks = sent.take();
    let last = chunks.pop().expect("chunks");
    for chunk in &chunks {
        loader::load_chunk(&ctx, chunk, None).await.expect("chunk");
    }
    let now = || Some(std::time::Instant::now());
    loader::load_chunk(&ctx, &last, now()).await.expect("last");
    let merge = ChunkMessage::merge(batch_id, "readings", &key);
    for _ in 0..2 {
        loader::load_chunk(&ctx, &merge, now())
            .await
            .expect("slice");
    }
    assert_eq!(sent.take().len(), 3, "hand-offs");
    let merged = MERGED_ROWS;
    assert_eq!(count(&ctx, merged).await, 100);
    assert_eq!(
        count(&ctx, "SELECT count(*) FROM pipeline.shadows").await,
        50
    );
    let client = ctx.pool.get().await.expect("client");
    client
        .execute("UPDATE pipeline.hidden_loads SET handoffs = 10", &[])
        .await
        .expect("hand-offs spent");
    drop(client);
    let mut message = aws_lambda_events::event::sqs::SqsMessage::default();
    message.body = Some(serde_json::json!({"chunk": merge}).to_string());
    assert!(loader::dead_lettered(&ctx, &message).await, "failed");
    let failed = "SELECT count(*) FROM pipeline.batches WHERE status = 'failed'";
    assert_eq!(count(&ctx, failed).await, 1);
    FailedMidMerge {
        _db: db,
        _objects: objects,
        ctx,
        sent,
        merge,
        before,
    }
}

/// A batch that fails in the middle of its merge (its deliveries and
/// hand-offs spent) does not keep the keys of the rows it merged: a message
/// undoes its slices, one transaction each, readers seeing the table as it
/// was throughout; then its keys load as any.
#[tokio::test]
async fn a_batch_failed_mid_merge_is_undone_slice_by_slice_and_frees_its_keys() {
    require!(Service::Postgres);
    // The database and the objects live to the end of the test.
    let FailedMidMerge {
        _db: _database,
        _objects,
        mut ctx,
        sent,
        merge,
        before,
    } = failed_mid_merge().await;
    let (table, merged) = (FIRST_ROWS, MERGED_ROWS);
    let now = || Some(std::time::Instant::now());
    assert_eq!(
        sent.take(),
        std::slice::from_ref(&merge),
        "the message that undoes it"
    );
    assert_eq!(visible(&ctx).await, before);

    // Undone a slice per invocation at its deadline, then to the end.
    let handled = loader::load_chunk(&ctx, &merge, now()).await.expect("undo");
    let more = Finished::Slices(Merged::More { slices: 1 });
    assert!(
        matches!(&handled, loader::Handled::Chunk { finished, .. } if *finished == more),
        "{handled:?}"
    );
    assert_eq!(sent.take(), std::slice::from_ref(&merge));
    assert_eq!(count(&ctx, merged).await, 50);
    assert_eq!(visible(&ctx).await, before);
    undo_to_the_end(&ctx, &merge).await;
    assert!(sent.take().is_empty());
    assert_eq!(count(&ctx, table).await, 100);
    assert_eq!(
        count(&ctx, "SELECT count(*) FROM public.readings").await,
        100
    );
    for leftover in [
        "SELECT count(*) FROM pipeline.shadows",
        "SELECT count(*) FROM pipeline.hidden_loads",
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'pipeline' AND tablename LIKE 'stage_%'",
    ] {
        assert_eq!(count(&ctx, leftover).await, 0, "{leftover}");
    }
    assert_eq!(visible(&ctx).await, before);

    // Its keys are free: the next batch's rows go in as new.
    keys_are_free(&mut ctx).await;
}

/// The message that undoes a failed batch's slices, taken by a loader of
/// the previous version (which does not undo: it drops the message as
/// done), is sent again by the next merge that loads a batch; the slices
/// are then undone.
#[tokio::test]
async fn an_undo_dropped_by_a_previous_loader_is_sent_again_by_the_next_merge() {
    require!(Service::Postgres);
    // The database and the objects live to the end of the test.
    let FailedMidMerge {
        _db: _database,
        _objects,
        ctx,
        sent,
        merge,
        before,
    } = failed_mid_merge().await;
    assert_eq!(sent.take(), std::slice::from_ref(&merge), "dropped");

    // Another batch, in chunks (sensors 1001 to 1100), loads to the end.
    let (_, key) = post(&ctx, (1001..=1100).map(|n| line(n, 4.0))).await;
    loader::load_key(&ctx, &key, None).await.expect("plan");
    let mut undos = Vec::new();
    let mut queued = sent.take();
    while let Some(message) = queued.pop() {
        if message == merge {
            undos.push(message);
            continue;
        }
        loader::load_chunk(&ctx, &message, None)
            .await
            .expect("chunk");
        queued.extend(sent.take());
    }
    assert_eq!(undos, std::slice::from_ref(&merge), "sent again");
    undo_to_the_end(&ctx, &merge).await;
    assert_eq!(count(&ctx, FIRST_ROWS).await, 100);
    let failed_rows = "SELECT count(*) FROM public.readings WHERE value = 2.0";
    assert_eq!(count(&ctx, failed_rows).await, 0);
    assert_eq!(
        count(&ctx, "SELECT count(*) FROM pipeline.hidden_loads").await,
        0
    );
    let mut expected = before;
    expected.extend((1001..=1100).map(|n| (format!("s{n:05}"), 4.0)));
    assert_eq!(visible(&ctx).await, expected);
}

/// A failed batch whose staging table is gone (the previous version's
/// give-up dropped it) is undone all the same, a bounded step per
/// invocation: the rows it replaced come back from its shadows, then its
/// own rows are swept from the table's pages; readers see the table as it
/// was throughout, and its keys are free.
#[tokio::test]
async fn a_failed_batch_without_its_staging_table_is_undone_by_a_sweep() {
    require!(Service::Postgres);
    // The database and the objects live to the end of the test.
    let FailedMidMerge {
        _db: _database,
        _objects,
        mut ctx,
        sent,
        merge,
        before,
    } = failed_mid_merge().await;
    assert_eq!(sent.take(), std::slice::from_ref(&merge));
    let client = ctx.pool.get().await.expect("client");
    client
        .batch_execute(
            "DO $$ DECLARE t text; BEGIN
                 FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = 'pipeline' AND tablename LIKE 'stage_%' LOOP
                     EXECUTE format('DROP TABLE pipeline.%I', t);
                 END LOOP;
             END $$",
        )
        .await
        .expect("staging dropped");
    drop(client);
    assert_eq!(visible(&ctx).await, before);

    // One step per invocation at its deadline: the 50 replaced rows back...
    let now = || Some(std::time::Instant::now());
    let more = Finished::Slices(Merged::More { slices: 1 });
    let handled = loader::load_chunk(&ctx, &merge, now()).await.expect("undo");
    assert!(
        matches!(&handled, loader::Handled::Chunk { finished, .. } if *finished == more),
        "{handled:?}"
    );
    assert_eq!(count(&ctx, MERGED_ROWS).await, 50);
    assert_eq!(
        count(&ctx, "SELECT count(*) FROM pipeline.shadows").await,
        0
    );
    assert_eq!(visible(&ctx).await, before);
    // ...then the sweep of the table's pages, then the end.
    let handled = loader::load_chunk(&ctx, &merge, now()).await.expect("undo");
    assert!(
        matches!(&handled, loader::Handled::Chunk { finished, .. } if *finished == more),
        "{handled:?}"
    );
    assert_eq!(count(&ctx, MERGED_ROWS).await, 0);
    assert_eq!(visible(&ctx).await, before);
    undo_to_the_end(&ctx, &merge).await;
    assert_eq!(count(&ctx, FIRST_ROWS).await, 100);
    assert_eq!(
        count(&ctx, "SELECT count(*) FROM pipeline.hidden_loads").await,
        0
    );
    assert_eq!(visible(&ctx).await, before);

    // Its keys are free: sensors 101 to 150, merged by it, load as new.
    keys_are_free(&mut ctx).await;
}
