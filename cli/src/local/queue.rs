//! The queue kept in Postgres in place of S3 notifications and SQS: what
//! storing an object puts on it, and the workers that hand it to the
//! loader as SQS events, with retries, dead letters and recovery.

use super::*;
use crate::spec::model::FunctionId;

pub(super) const QUEUE: &str = r#"
CREATE TABLE IF NOT EXISTS pipeline.local_queue (
    id bigserial PRIMARY KEY,
    body text NOT NULL,
    object_key text NOT NULL,
    receives integer NOT NULL DEFAULT 0,
    visible_at timestamptz NOT NULL DEFAULT now(),
    dead boolean NOT NULL DEFAULT false,
    sent_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS local_queue_visible_idx ON pipeline.local_queue (visible_at) WHERE NOT dead;
-- The chunk a message carries (none for an S3 notification), and the run of
-- `pipeline local` that received it last (see `RUN_LOCK`).
ALTER TABLE pipeline.local_queue ADD COLUMN IF NOT EXISTS chunk integer;
ALTER TABLE pipeline.local_queue ADD COLUMN IF NOT EXISTS leased_by integer;
"#;

/// Each run of `pipeline local` holds the advisory lock (this, its run
/// number) for as long as it lives, so that another run can tell the leases
/// of a dead run (its lock is free) from those of a live one.
pub(super) const RUN_LOCK: &str = "hashtext('pipeline.local_queue')";

/// The S3 notification S3 would send for a stored object, field for field.
pub(super) fn s3_event(key: &str, size: u64) -> String {
    let now = chrono::Utc::now();
    serde_json::json!({
        "Records": [{
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": "local",
            "eventTime": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "eventName": "ObjectCreated:Put",
            "userIdentity": {"principalId": "local"},
            "requestParameters": {"sourceIPAddress": "127.0.0.1"},
            "responseElements": {"x-amz-request-id": "local", "x-amz-id-2": "local"},
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": "raw-batches",
                "bucket": {"name": "local", "ownerIdentity": {"principalId": "local"}, "arn": "arn:aws:s3:::local"},
                "object": {"key": key, "size": size, "eTag": "", "sequencer": format!("{:016X}", now.timestamp_micros())},
            },
        }]
    })
    .to_string()
}

/// Puts a notification on the local queue when an object is stored.
pub(super) struct QueueNotify {
    pub(super) pool: deadpool_postgres::Pool,
    pub(super) wake: Arc<tokio::sync::Notify>,
}

impl Notify for QueueNotify {
    fn stored(&self, key: &str, size: u64) -> BoxFuture<'_, Result<(), String>> {
        let key = key.to_string();
        Box::pin(async move {
            // The raw bucket notifies the queue of objects under `raw/` only
            // (the data stack's filter); the loader's decoded copies are not.
            if !key.starts_with("raw/") {
                return Ok(());
            }
            let client = self.pool.get().await.map_err(|e| e.to_string())?;
            client
                .execute(
                    "INSERT INTO pipeline.local_queue (body, object_key) VALUES ($1, $2)",
                    &[&s3_event(&key, size), &key],
                )
                .await
                .map_err(|e| e.to_string())?;
            self.wake.notify_waiters();
            Ok(())
        })
    }
}

impl ChunkQueue for QueueNotify {
    /// Queues the messages at once, leaving out those of chunks that have a
    /// message waiting on the queue already (a batch's notification
    /// delivered again asks for the chunks still pending, often still
    /// queued). A message being handled does not count: one handed on by
    /// its own invocation is queued. A merge's hand-off is always queued.
    fn send(&self, messages: Vec<ChunkMessage>) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let mut client = self.pool.get().await.map_err(|e| e.to_string())?;
            let tx = client.transaction().await.map_err(|e| e.to_string())?;
            for message in messages {
                let body = serde_json::to_string(&ChunkBody {
                    chunk: message.clone(),
                })
                .map_err(|e| e.to_string())?;
                let chunk = (!message.is_merge()).then_some(message.chunk as i32);
                tx.execute(
                    "INSERT INTO pipeline.local_queue (body, object_key, chunk) SELECT $1, $2, $3
                     WHERE NOT EXISTS (SELECT 1 FROM pipeline.local_queue WHERE object_key = $2 AND chunk = $3 AND NOT dead AND visible_at <= now())",
                    &[&body, &message.key, &chunk],
                )
                .await
                .map_err(|e| e.to_string())?;
            }
            tx.commit().await.map_err(|e| e.to_string())?;
            self.wake.notify_waiters();
            Ok(())
        })
    }
}

/// After a crash: batches accepted but neither loaded nor with their
/// notification on the queue get it again. The chunks of a batch may be
/// queued, but not all of them (a chunk's message can be dead) nor its merge
/// (due after the last chunk's load): the notification makes the loader send
/// the messages of the chunks still pending, or merge the batch.
pub(super) async fn recover(ctx: &Context) -> Result<usize, Error> {
    let client = ctx
        .pool
        .get()
        .await
        .map_err(|e| local_error("database", e))?;
    let batches = pipeline_shared::db::unfinished(&**client)
        .await
        .map_err(|e| local_error("cannot read unfinished batches", e))?;
    let mut requeued = 0;
    for batch in batches {
        // A batch in chunks has a message per chunk: one row or more.
        let queued: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pipeline.local_queue WHERE object_key = $1 AND chunk IS NULL AND NOT dead)",
                &[&batch.object_key],
            )
            .await
            .map_err(|e| local_error("cannot read the queue", e))?
            .get(0);
        if queued {
            continue;
        }
        let Ok(Some(info)) = ctx.store.head(&batch.object_key).await else {
            continue;
        };
        client
            .execute(
                "INSERT INTO pipeline.local_queue (body, object_key) VALUES ($1, $2)",
                &[&s3_event(&batch.object_key, info.size), &batch.object_key],
            )
            .await
            .map_err(|e| local_error("cannot write the queue", e))?;
        requeued += 1;
    }
    Ok(requeued)
}

/// After a crash: the messages that a dead run had received (a worker's
/// lease) are visible again at once rather than when their lease ends. A
/// message of a live run is left alone; one delivered twice would be a no-op.
pub(super) async fn reclaim(ctx: &Context, run: i32) -> Result<u64, Error> {
    let client = ctx
        .pool
        .get()
        .await
        .map_err(|e| local_error("database", e))?;
    client
        .execute(
            &format!(
                "UPDATE pipeline.local_queue SET visible_at = now()
                 WHERE NOT dead AND visible_at > now() AND leased_by IS DISTINCT FROM $1
                   AND (leased_by IS NULL OR pg_try_advisory_xact_lock({RUN_LOCK}, leased_by))"
            ),
            &[&run],
        )
        .await
        .map_err(|e| local_error("cannot reclaim the queue's leases", e))
}

/// Queue settings from the spec.
#[derive(Debug, Clone, Copy)]
pub(super) struct QueueSettings {
    /// This run's number (see [`RUN_LOCK`]).
    pub(super) run: i32,
    pub(super) batch_size: i64,
    pub(super) max_receives: i32,
    pub(super) retry_after: Duration,
    /// How long an invocation of the loader may run.
    pub(super) function_timeout: Duration,
    /// The test hook [`PAUSE_AFTER_CHUNKS`].
    pub(super) pause_after_chunks: Option<usize>,
}

/// One worker: receives messages as SQS would and hands them to the loader.
pub(super) async fn worker(
    router: Arc<versions::Router>,
    settings: QueueSettings,
    wake: Arc<tokio::sync::Notify>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        let handled = match receive_and_load(&router, settings).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "local queue");
                0
            }
        };
        if handled == 0 {
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

/// Receives messages as SQS does and hands them to the loader version its
/// alias picks for this invocation.
pub(super) async fn receive_and_load(
    router: &versions::Router,
    settings: QueueSettings,
) -> Result<usize, String> {
    let version = router
        .pick(FunctionId::Loader)
        .ok_or("no version of the loader is published")?;
    let ctx = &version.ctx;
    let client = ctx.pool.get().await.map_err(|e| e.to_string())?;
    // As SQS does, a message whose deliveries are spent goes to the
    // dead-letter queue when it would be received once more (its last
    // delivery was abandoned: the process died, say); its batch fails.
    let spent = client
        .query(
            "UPDATE pipeline.local_queue SET dead = true
             WHERE id IN (SELECT id FROM pipeline.local_queue WHERE NOT dead AND visible_at <= now() AND receives >= $1
                          FOR UPDATE SKIP LOCKED)
             RETURNING id, body, receives",
            &[&settings.max_receives],
        )
        .await
        .map_err(|e| e.to_string())?;
    // Leased for as long as an invocation may run (SQS asks the visibility
    // timeout to cover the function's timeout), so that no message is
    // delivered again while its load runs; a failed one comes back after
    // `retry_after`.
    let lease = settings
        .retry_after
        .max(settings.function_timeout)
        .as_secs_f64();
    let rows = client
        .query(
            "UPDATE pipeline.local_queue SET receives = receives + 1, visible_at = now() + make_interval(secs => $2), leased_by = $3
             WHERE id IN (SELECT id FROM pipeline.local_queue WHERE NOT dead AND visible_at <= now() AND receives < $4
                          ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
             RETURNING id, body, receives",
            &[&settings.batch_size, &lease, &settings.run, &settings.max_receives],
        )
        .await
        .map_err(|e| e.to_string())?;
    drop(client);
    for row in &spent {
        let message = sqs_message(row);
        tracing::error!(
            message_id = row.get::<_, i64>(0),
            receives = row.get::<_, i32>(2),
            "message moved to the dead-letter queue"
        );
        loader::dead_lettered(ctx, &message).await;
    }
    if rows.is_empty() {
        return Ok(spent.len());
    }
    let mut event = SqsEvent::default();
    event.records = rows.iter().map(sqs_message).collect();
    let response = match settings.pause_after_chunks {
        None => invoke(ctx, event, settings.function_timeout).await,
        Some(limit) => Some(handle_until_paused(ctx, event, limit).await),
    };
    router.record(FunctionId::Loader, version.number, response.is_none());
    // Stopped at its timeout, as Lambda stops a function: nothing answered,
    // so every message comes back after its lease.
    let Some(response) = response else {
        return Ok(rows.len());
    };
    let failed: Vec<i64> = response
        .batch_item_failures
        .iter()
        .filter_map(|f| f.item_identifier.parse().ok())
        .collect();
    let client = ctx.pool.get().await.map_err(|e| e.to_string())?;
    for row in &rows {
        let id: i64 = row.get(0);
        let receives: i32 = row.get(2);
        if !failed.contains(&id) {
            client
                .execute("DELETE FROM pipeline.local_queue WHERE id = $1", &[&id])
                .await
                .map_err(|e| e.to_string())?;
        } else if receives >= settings.max_receives {
            tracing::error!(
                message_id = id,
                receives,
                "message moved to the dead-letter queue"
            );
            client
                .execute(
                    "UPDATE pipeline.local_queue SET dead = true WHERE id = $1",
                    &[&id],
                )
                .await
                .map_err(|e| e.to_string())?;
        } else {
            client
                .execute(
                    "UPDATE pipeline.local_queue SET visible_at = now() + make_interval(secs => $2) WHERE id = $1",
                    &[&id, &settings.retry_after.as_secs_f64()],
                )
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(rows.len())
}

/// One invocation of the loader, as Lambda runs it: stopped at `timeout`
/// (`None`), the loader stopping its own work a little before.
async fn invoke(ctx: &Context, event: SqsEvent, timeout: Duration) -> Option<SqsBatchResponse> {
    let started = tokio::time::Instant::now();
    let margin = loader::deadline_margin(timeout);
    let soft = Some((started + timeout.saturating_sub(margin), margin));
    let messages = event.records.len();
    let invocation = loader::handle_until(ctx, event, soft);
    match tokio::time::timeout_at(started + timeout, invocation).await {
        Ok(response) => {
            // As Lambda's REPORT line: what the benchmarks read.
            let duration_ms = started.elapsed().as_millis() as u64;
            tracing::debug!(messages, duration_ms, "loader invocation");
            Some(response)
        }
        Err(_) => {
            tracing::error!(
                ?timeout,
                "the loader's invocation reached its timeout and was stopped"
            );
            None
        }
    }
}

/// A queue row (id, body, receives) as SQS hands a message to Lambda.
fn sqs_message(row: &tokio_postgres::Row) -> SqsMessage {
    let mut message = SqsMessage::default();
    message.message_id = Some(row.get::<_, i64>(0).to_string());
    message.body = Some(row.get(1));
    message.attributes.insert(
        "ApproximateReceiveCount".into(),
        row.get::<_, i32>(2).to_string(),
    );
    message
}

/// The test hook [`PAUSE_AFTER_CHUNKS`]: hands the messages to the loader one
/// by one, and waits forever instead of handing over one chunk too many.
pub(super) async fn handle_until_paused(
    ctx: &Context,
    event: SqsEvent,
    limit: usize,
) -> SqsBatchResponse {
    use std::sync::atomic::Ordering;
    let mut response = SqsBatchResponse::default();
    for message in event.records {
        let chunk = message
            .body
            .as_deref()
            .is_some_and(|b| serde_json::from_str::<ChunkBody>(b).is_ok());
        if chunk && CHUNKS_HANDED.fetch_add(1, Ordering::SeqCst) >= limit {
            tracing::warn!("{PAUSE_AFTER_CHUNKS}: {limit} chunks handed over, pausing");
            std::future::pending::<()>().await;
        }
        let mut single = SqsEvent::default();
        single.records.push(message);
        let handled = loader::handle(ctx, single).await;
        response
            .batch_item_failures
            .extend(handled.batch_item_failures);
    }
    response
}
