//! A large object is cut into chunks a bounded step at a time: each cut
//! reads at most a chunk, the pieces load while the rest is still being
//! cut, an invocation out of time hands the rest on, and no version of the
//! loader merges the batch before the whole object is cut.

use crate::common::{self, Scratch, Sent};

use pipeline_testkit::{Service, require};

use bytes::Bytes;
use pipeline_shared::api::Context;
use pipeline_shared::chunks::{self, ChunkMessage, ChunkOutcome, Finished};
use pipeline_shared::db::{LoadOutcome, Merged};
use std::sync::Arc;

/// A readings CSV of `n` records, every seventh with a line break in its
/// quoted sensor id; `bad`: the record whose value is not a number (of the
/// same length as a good one).
fn csv(n: u32, bad: Option<u32>) -> String {
    let mut body = String::from("sensor_id,read_at,value,quality,valid,day\n");
    for i in 1..=n {
        let sensor = match i % 7 {
            0 => format!("\"s{i:05}\nwrapped\""),
            _ => format!("s{i:05}"),
        };
        // Of one length, so that the bad record can replace the good one.
        let value = if bad == Some(i) { "x.5" } else { "1.5" };
        body.push_str(&format!(
            "{sensor},2024-01-01T00:00:00Z,{value},1,true,2024-01-01\n"
        ));
    }
    body
}

struct Setup {
    ctx: Context,
    sent: Arc<Sent>,
    _db: Scratch,
    objects: tempfile::TempDir,
}

/// The handlers over a scratch database, chunks of about 2 kB.
async fn setup(name: &str) -> Setup {
    let db = Scratch::new(name).await;
    let objects = tempfile::tempdir().expect("temp dir");
    let datasets = [("readings".to_string(), common::dev_dataset("readings"))].into();
    let mut ctx = common::handlers_context(&db, "", 4, datasets, objects.path());
    loader::migrate(&ctx).await.expect("migration");
    let sent = Arc::new(Sent::default());
    ctx.chunk_bytes = 2000;
    ctx.chunk_queue = Some(sent.clone());
    Setup {
        ctx,
        sent,
        _db: db,
        objects,
    }
}

async fn count(ctx: &Context, sql: &str) -> i64 {
    let client = ctx.pool.get().await.expect("client");
    client.query_one(sql, &[]).await.expect(sql).get(0)
}

/// A batch's status.
async fn status(ctx: &Context, batch_id: uuid::Uuid) -> String {
    let client = ctx.pool.get().await.expect("client");
    client
        .query_one(
            "SELECT status FROM pipeline.batches WHERE batch_id = $1",
            &[&batch_id],
        )
        .await
        .expect("batch")
        .get(0)
}

/// The notification's invocation, at its deadline: its first chunk and the
/// rest of the object, handed on uncut.
async fn begin_at_deadline(s: &Setup, body: &str) -> (uuid::Uuid, String, ChunkMessage) {
    let (batch_id, key) = common::post_batch(
        &s.ctx,
        "readings",
        "text/csv",
        Bytes::from(body.to_string()),
    )
    .await;
    let now = Some(std::time::Instant::now());
    let handled = loader::load_key(&s.ctx, &key, now).await.expect("begin");
    assert!(
        matches!(handled, loader::Handled::Chunked { chunks: 2, .. }),
        "{handled:?}"
    );
    let [first, rest]: [ChunkMessage; 2] = s.sent.take().try_into().expect("two messages");
    assert_eq!(
        (first.chunk, first.start, first.header.as_deref()),
        (0, 0, None)
    );
    assert_eq!(
        (rest.chunk, rest.start, rest.end),
        (1, first.end, body.len() as u64)
    );
    assert!(first.end >= 2000 && first.end < 3000, "{first:?}");
    // The first chunk loads, and waits for the rest to be cut.
    let handled = loader::load_chunk(&s.ctx, &first, None)
        .await
        .expect("chunk 0");
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
    (batch_id, key, rest)
}

#[tokio::test]
async fn a_large_csv_is_cut_a_chunk_at_a_time_and_its_rest_handed_on() {
    require!(Service::Postgres);
    let s = setup("cuts").await;
    let body = csv(2000, None);
    let (batch_id, _key, rest) = begin_at_deadline(&s, &body).await;

    // The rest's invocation, out of time too, hands it on again, uncut.
    let now = Some(std::time::Instant::now());
    let handled = loader::load_chunk(&s.ctx, &rest, now).await.expect("rest");
    assert!(
        matches!(handled, loader::Handled::Chunked { chunks: 1, .. }),
        "{handled:?}"
    );
    assert_eq!(s.sent.take(), std::slice::from_ref(&rest));

    // The next one cuts it to the end: pieces of about a chunk that follow
    // each other, start on a record (not inside a quoted line break) and
    // carry the header.
    let handled = loader::load_chunk(&s.ctx, &rest, None).await.expect("rest");
    let pieces = s.sent.take();
    assert!(
        matches!(handled, loader::Handled::Chunked { chunks, .. } if chunks == pieces.len()),
        "{handled:?}"
    );
    assert!(pieces.len() > 20, "{} pieces", pieces.len());
    let mut at = rest.start;
    for piece in &pieces {
        assert_eq!(piece.start, at, "{piece:?}");
        assert!(piece.end - piece.start < 3000, "{piece:?}");
        let before = &body.as_bytes()[..piece.start as usize];
        assert_eq!(before.last(), Some(&b'\n'));
        assert!(
            before.iter().filter(|b| **b == b'"').count() % 2 == 0,
            "{piece:?} starts inside quotes"
        );
        assert_eq!(
            piece.header.as_deref(),
            Some("sensor_id,read_at,value,quality,valid,day")
        );
        at = piece.end;
    }
    assert_eq!(at, body.len() as u64);
    let split = count(
        &s.ctx,
        "SELECT count(*) FROM pipeline.batch_chunks WHERE status = 'split'",
    )
    .await;
    assert_eq!(split as usize, pieces.len() - 1);

    // A stale copy of the rest's message does nothing.
    let handled = loader::load_chunk(&s.ctx, &rest, None)
        .await
        .expect("stale");
    assert!(
        matches!(
            handled,
            loader::Handled::Chunk {
                outcome: ChunkOutcome::Nothing,
                ..
            }
        ),
        "{handled:?}"
    );
    assert!(s.sent.take().is_empty());

    // The pieces load; the last one's merges the batch, once.
    let (last, others) = pieces.split_last().expect("pieces");
    for piece in others {
        loader::load_chunk(&s.ctx, piece, None)
            .await
            .expect("piece");
    }
    let handled = loader::load_chunk(&s.ctx, last, None).await.expect("last");
    let loaded = LoadOutcome::Loaded {
        records: 2000,
        inserted: 2000,
        duplicates: 0,
    };
    assert!(
        matches!(
            &handled,
            loader::Handled::Chunk { finished: Finished::Slices(Merged::Loaded(outcome)), .. }
                if *outcome == loaded
        ),
        "{handled:?}"
    );
    let rows = count(
        &s.ctx,
        "SELECT count(DISTINCT sensor_id) FROM public.readings WHERE sensor_id LIKE '%wrapped'",
    )
    .await;
    assert_eq!(rows, 2000 / 7);
    assert_eq!(status(&s.ctx, batch_id).await, "loaded");
}

/// The previous version of the loader takes the rest's message for a chunk
/// like any other and loads it whole: the batch loads once, and the new
/// version's copy of that message then does nothing.
#[tokio::test]
async fn the_rest_loaded_whole_as_the_previous_loader_does_loads_once() {
    require!(Service::Postgres);
    let s = setup("cuts_previous").await;
    let body = csv(600, None);
    let (batch_id, _key, rest) = begin_at_deadline(&s, &body).await;
    let dataset = common::dev_dataset("readings");

    // What the previous loader does with any chunk message: load its range.
    let mut client = s.ctx.pool.get().await.expect("client");
    let outcome = chunks::load_chunk(&mut client, &dataset, &rest, || {
        s.ctx.store.get_range(&rest.key, rest.start, Some(rest.end))
    })
    .await
    .expect("the rest, whole");
    assert!(
        matches!(outcome, ChunkOutcome::Loaded { records } if records > 500),
        "{outcome:?}"
    );
    drop(client);
    let handled = loader::load_chunk(&s.ctx, &rest, None)
        .await
        .expect("again");
    let loaded = LoadOutcome::Loaded {
        records: 600,
        inserted: 600,
        duplicates: 0,
    };
    assert!(
        matches!(
            &handled,
            loader::Handled::Chunk {
                outcome: ChunkOutcome::Nothing,
                finished: Finished::Slices(Merged::Loaded(outcome)),
                ..
            } if *outcome == loaded
        ),
        "{handled:?}"
    );
    assert!(s.sent.take().is_empty());
    let rows = count(&s.ctx, "SELECT count(*) FROM public.readings").await;
    assert_eq!(rows, 600);
    assert_eq!(status(&s.ctx, batch_id).await, "loaded");
}

/// A late chunk's invalid record fails the batch with its line in the whole
/// object, counted from the line breaks the chunks before it recorded: the
/// object is not read again.
#[tokio::test]
async fn a_late_invalid_record_gets_its_line_without_reading_the_object_again() {
    require!(Service::Postgres);
    let s = setup("cuts_line").await;
    // Ingest refuses an invalid body: the stored object is made so after
    // (as an upload would be, which ingest does not read).
    let body = csv(1000, Some(900));
    let (batch_id, key, rest) = begin_at_deadline(&s, &csv(1000, None)).await;
    std::fs::write(s.objects.path().join(&key), &body).expect("the stored object");
    loader::load_chunk(&s.ctx, &rest, None).await.expect("cut");
    for piece in s.sent.take() {
        let mut client = s.ctx.pool.get().await.expect("client");
        let dataset = common::dev_dataset("readings");
        chunks::load_chunk(&mut client, &dataset, &piece, || {
            s.ctx
                .store
                .get_range(&piece.key, piece.start, Some(piece.end))
        })
        .await
        .expect("piece");
    }
    let mut client = s.ctx.pool.get().await.expect("client");
    let budget = chunks::Budget {
        slice_rows: 1000,
        until: None,
        at_least_one: true,
    };
    let unread = |_end| async {
        Err::<pipeline_shared::store::ByteStream, _>(pipeline_shared::store::StoreError::NotFound(
            "not to be read".into(),
        ))
    };
    let dataset = common::dev_dataset("readings");
    let finished = chunks::finish(&mut client, "readings", &dataset, batch_id, unread, budget)
        .await
        .expect("finish");
    let at = body.find("s00900,").expect("record 900");
    let line = body[..at].matches('\n').count() as u64 + 1;
    let Finished::Outcome(LoadOutcome::Invalid { error }) = finished else {
        panic!("{finished:?}");
    };
    assert_eq!((error.line, error.column.as_deref()), (line, Some("value")));
    let rows = count(&s.ctx, "SELECT count(*) FROM public.readings").await;
    assert_eq!(rows, 0);
}

/// A compressed object whose decoded copy cannot be made before the
/// invocation's deadline fails its batch within that delivery, with the
/// reason (every delivery would stop at the same point), and leaves no
/// copy behind.
#[tokio::test]
async fn a_decoded_copy_that_cannot_be_made_in_time_fails_its_batch_at_once() {
    require!(Service::Postgres);
    let s = setup("copy_deadline").await;
    let body = csv(2000, None);
    let (batch_id, key) =
        common::post_batch(&s.ctx, "readings", "text/csv", Bytes::from(body.clone())).await;
    // Stored as an upload in gzip would be.
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut e, body.as_bytes()).expect("gzip");
    let gz = e.finish().expect("gzip");
    let gz_key = format!("{key}.gz");
    std::fs::write(s.objects.path().join(&gz_key), &gz).expect("the stored object");
    let client = s.ctx.pool.get().await.expect("client");
    client
        .execute(
            "UPDATE pipeline.batches SET size_bytes = $2, object_key = $3 WHERE batch_id = $1",
            &[&batch_id, &(gz.len() as i64), &gz_key],
        )
        .await
        .expect("the upload's size");
    drop(client);

    // The invocation's deadline is now: the copy is stopped at once.
    let handled = loader::load_key(&s.ctx, &gz_key, Some(std::time::Instant::now()))
        .await
        .expect("load");
    let loader::Handled::Refused { reason, .. } = handled else {
        panic!("{handled:?}");
    };
    assert!(
        reason.starts_with(
            "decoding the gzip object into a copy to load in chunks takes longer than one loader invocation may run: "
        ),
        "{reason}"
    );
    assert_eq!(status(&s.ctx, batch_id).await, "failed");
    assert!(s.sent.take().is_empty());
    fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let entries = std::fs::read_dir(dir).map(|d| d.flatten().map(|e| e.path()).collect());
        let entries: Vec<std::path::PathBuf> = entries.unwrap_or_default();
        entries
            .into_iter()
            .flat_map(|p| if p.is_dir() { files(&p) } else { vec![p] })
            .collect()
    }
    let left = files(&s.objects.path().join("decoded"));
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(
        count(&s.ctx, "SELECT count(*) FROM public.readings").await,
        0
    );
}
