//! The loader function: SQS messages carrying S3 notifications of stored
//! batches; each batch is loaded into its dataset's table exactly once.
//!
//! Messages are handled one by one and reported with partial batch
//! responses: a message whose batch could not be loaded for a passing reason
//! (the database restarting) is retried by SQS, the others are done. A batch
//! with invalid records is not an error of the loader: it is marked failed.

use aws_lambda_events::event::s3::S3Event;
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use pipeline_shared::api::{self, Context};
use pipeline_shared::chunks::{
    self, Begin, Budget, ChunkBody, ChunkOutcome, Cut, Finished, Layout, Recorded, Span,
};
use pipeline_shared::compression;
use pipeline_shared::db::{self, DbError, LoadOutcome, Merged};

/// The function's name as the spec and the templates know it.
pub const NAME: &str = "loader";

/// Why a message could not be handled.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("the message is not an S3 notification: {0}")]
    NotS3(String),
    #[error("the database pool: {0}")]
    Pool(String),
    /// The invocation reached its deadline first (the load was stopped, its
    /// connection closed, its transaction rolled back).
    #[error(
        "the invocation reached its deadline ({0:?} before the function's timeout) before the message was handled"
    )]
    Deadline(std::time::Duration),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// What happened to one object.
#[derive(Debug, Clone, PartialEq)]
pub enum Handled {
    Loaded {
        key: String,
        outcome: LoadOutcome,
    },
    /// A large object, cut into chunks whose messages were sent.
    Chunked {
        key: String,
        chunks: usize,
    },
    /// One chunk of a large object.
    Chunk {
        key: String,
        chunk: u32,
        outcome: ChunkOutcome,
        finished: Finished,
    },
    /// An object refused before loading (not the size declared): its
    /// batch is marked failed with the reason.
    Refused {
        key: String,
        reason: String,
    },
    /// Not an object of a batch (a test event, a foreign key).
    Skipped {
        key: String,
        reason: String,
    },
}

/// Handles an SQS event; the response lists the messages to retry.
pub async fn handle(ctx: &Context, event: SqsEvent) -> SqsBatchResponse {
    handle_until(ctx, event, None).await
}

/// The time an invocation keeps for itself before its timeout, to record
/// what it stopped and answer: a tenth of it, from 1.5 s (the server ends
/// the stopped load's session within `db::CLIENT_CHECK_MS`, releasing the
/// batch, and the batch is then marked) to 5 s, and at most half of it.
pub fn deadline_margin(remaining: std::time::Duration) -> std::time::Duration {
    use std::time::Duration;
    (remaining / 10)
        .clamp(Duration::from_millis(1500), Duration::from_secs(5))
        .min(remaining / 2)
}

/// [`handle`], stopping work at `deadline` (the function's timeout less
/// [`deadline_margin`]): a message not handled by then is retried, or, on
/// its last delivery, fails its batch, before the function is stopped.
pub async fn handle_until(
    ctx: &Context,
    event: SqsEvent,
    deadline: Option<(tokio::time::Instant, std::time::Duration)>,
) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    // The longest message so far: one is not started unless that much time
    // is left (the first always is).
    let mut need: Option<std::time::Duration> = None;
    for message in event.records {
        let id = message.message_id.clone().unwrap_or_default();
        if let (Some(need), Some((at, _))) = (need, deadline)
            && tokio::time::Instant::now() + need > at
            && hand_on(ctx, &message).await
        {
            continue;
        }
        let began = std::time::Instant::now();
        let handled = match deadline {
            Some((at, margin)) => {
                tokio::time::timeout_at(at, handle_message(ctx, &message, Some(at.into_std())))
                    .await
                    .unwrap_or(Err(MessageError::Deadline(margin)))
            }
            None => handle_message(ctx, &message, None).await,
        };
        need = need.max(Some(began.elapsed()));
        match handled {
            Ok(handled) => {
                for h in handled {
                    tracing::info!(message_id = %id, result = ?h, "handled");
                }
            }
            Err(e) => {
                let receives = receive_count(&message);
                if ctx.max_receives.is_some_and(|max| receives >= max)
                    && give_up(ctx, &message, receives, &e).await
                {
                    continue;
                }
                tracing::warn!(message_id = %id, receives, error = %e, "message will be retried");
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                response.batch_item_failures.push(failure);
            }
        }
    }
    response
}

/// Sends a chunk message this invocation has no time for to the queue
/// again, as a new message: reported failed instead, it would count a
/// delivery that never ran, and an invocation handed more chunks than it
/// can load in time would spend the last ones' deliveries. Whether it was
/// sent (then the delivered one is done).
async fn hand_on(ctx: &Context, message: &SqsMessage) -> bool {
    let body = message.body.as_deref().unwrap_or("");
    let (Some(queue), Ok(ChunkBody { chunk })) =
        (&ctx.chunk_queue, serde_json::from_str::<ChunkBody>(body))
    else {
        return false;
    };
    let batch_id = chunk.batch_id;
    match queue.send(vec![chunk]).await {
        Ok(()) => {
            tracing::info!(%batch_id, "no time left for a chunk message: handed on");
            true
        }
        Err(e) => {
            tracing::warn!(%batch_id, error = %e, "could not hand a chunk message on");
            false
        }
    }
}

/// How many times SQS has delivered the message, this time included
/// (`ApproximateReceiveCount`; 1 when the event does not say).
pub fn receive_count(message: &SqsMessage) -> u32 {
    message
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
}

/// The last delivery of a message failed: rather than leave its batches
/// `loading` while SQS moves the message to the dead-letter queue, they are
/// marked `failed` with the error, and the message is done. `false` when
/// that could not be recorded (the database is down): the message is then
/// reported failed and dead-lettered.
async fn give_up(ctx: &Context, message: &SqsMessage, receives: u32, error: &MessageError) -> bool {
    let reason = format!("gave up after {receives} deliveries: {error}");
    fail_batches(ctx, message, &reason).await
}

/// A message its queue dead-lettered without its last delivery finishing
/// (the process running it died): its batches fail, saying so.
pub async fn dead_lettered(ctx: &Context, message: &SqsMessage) -> bool {
    let receives = receive_count(message);
    let reason = format!(
        "its message was dead-lettered after {receives} deliveries; the last one did not finish"
    );
    fail_batches(ctx, message, &reason).await
}

/// Marks the unfinished batches of a message `failed` for `reason`; whether
/// that was recorded for every one of them. A batch whose merge in slices
/// has begun is handed on in a new message instead, up to
/// [`db::MAX_MERGE_HANDOFFS`] times: its slices are small; after that it
/// fails, and a message goes out to undo the slices it merged.
async fn fail_batches(ctx: &Context, message: &SqsMessage, reason: &str) -> bool {
    let batches = message_batches(message);
    if batches.is_empty() {
        return false;
    }
    let Ok(mut client) = connection(ctx).await else {
        return false;
    };
    let mut handed = Vec::new();
    for batch_id in batches {
        if ctx.chunk_queue.is_some() {
            match db::hand_merge_on(&*client, batch_id).await {
                Ok(Some((dataset, key))) => {
                    tracing::warn!(%batch_id, reason, "the batch's merge is handed on");
                    handed.push(chunks::ChunkMessage::merge(batch_id, &dataset, &key));
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(%batch_id, error = %e, "could not hand a merge on");
                    return false;
                }
            }
        }
        match db::give_up(&mut client, batch_id, reason).await {
            Ok(changed) => tracing::error!(%batch_id, changed, reason, "batch failed"),
            Err(e) => {
                tracing::error!(%batch_id, error = %e, "could not mark a batch failed");
                return false;
            }
        }
        // Its merge had begun: the slices merged are undone, in messages.
        match db::to_undo(&*client, batch_id).await {
            Ok(Some((dataset, key))) if ctx.chunk_queue.is_some() => {
                handed.push(chunks::ChunkMessage::merge(batch_id, &dataset, &key));
            }
            Ok(_) => {}
            Err(e) => tracing::error!(%batch_id, error = %e, "could not find what to undo"),
        }
    }
    client.release(&Ok::<(), ()>(()));
    match (&ctx.chunk_queue, handed.is_empty()) {
        (Some(queue), false) => queue.send(handed).await.is_ok(),
        _ => true,
    }
}

/// The batches a message is about: a chunk's, or those of the objects an
/// S3 notification announces.
fn message_batches(message: &SqsMessage) -> Vec<uuid::Uuid> {
    let body = message.body.as_deref().unwrap_or("");
    if let Ok(ChunkBody { chunk }) = serde_json::from_str::<ChunkBody>(body) {
        return vec![chunk.batch_id];
    }
    let Ok(event) = serde_json::from_str::<S3Event>(body) else {
        return Vec::new();
    };
    event
        .records
        .iter()
        .filter_map(|r| r.s3.object.key.as_deref())
        .filter_map(|raw| {
            let key = decode_key(raw);
            api::parse_object_key(&key).map(|(_, id)| id)
        })
        .collect()
}

/// An S3 notification's key as stored: they come URL-encoded, with `+` for
/// spaces.
fn decode_key(raw: &str) -> String {
    form_urlencoded::parse(format!("k={raw}").as_bytes())
        .next()
        .map_or_else(|| raw.to_string(), |(_, v)| v.into_owned())
}

/// A connection of the loader's pool.
async fn connection(ctx: &Context) -> Result<db::Held, MessageError> {
    ctx.pool
        .get()
        .await
        .map(db::Held::new)
        .map_err(|e| MessageError::Pool(e.to_string()))
}

/// Loads the objects an SQS message announces; work that would go on past
/// `until` is handed on in a message.
pub async fn handle_message(
    ctx: &Context,
    message: &SqsMessage,
    until: Option<std::time::Instant>,
) -> Result<Vec<Handled>, MessageError> {
    let body = message.body.as_deref().unwrap_or("");
    // S3 sends a test event when notifications are set up; nothing to load.
    if body.contains("\"s3:TestEvent\"") {
        return Ok(Vec::new());
    }
    if let Ok(ChunkBody { chunk }) = serde_json::from_str::<ChunkBody>(body) {
        return Ok(vec![load_chunk(ctx, &chunk, until).await?]);
    }
    let event: S3Event =
        serde_json::from_str(body).map_err(|e| MessageError::NotS3(e.to_string()))?;
    let mut out = Vec::new();
    for record in event.records {
        let Some(raw_key) = record.s3.object.key.clone() else {
            continue;
        };
        out.push(load_key(ctx, &decode_key(&raw_key), until).await?);
    }
    Ok(out)
}

/// Loads the batch stored under `key`.
///
/// The connection is held for the database's work only: it is closed rather
/// than pooled after an error, and returned before chunk messages are sent
/// (locally the queue is in the same pool) or a decoded copy is made.
pub async fn load_key(
    ctx: &Context,
    key: &str,
    until: Option<std::time::Instant>,
) -> Result<Handled, MessageError> {
    let skipped = |reason: &str| Handled::Skipped {
        key: key.to_string(),
        reason: reason.to_string(),
    };
    let Some((name, batch_id)) = api::parse_object_key(key) else {
        return Ok(skipped("not a batch object key"));
    };
    // A dataset this version does not know may still be loaded, with the
    // definition its batch was accepted under (added by a newer version).
    let own = ctx.datasets.get(name);
    // An object that is not the size declared is refused before a byte of
    // it is read (an upload that sent more than it said, say).
    let (size, unfinished) = match declared(ctx, key, batch_id).await? {
        Declared::Size { size, unfinished } => (size, unfinished),
        Declared::Refused(reason) => {
            return Ok(Handled::Refused {
                key: key.to_string(),
                reason,
            });
        }
    };
    let decoded_limit = compression::DecodedLimit {
        size,
        ratio: ctx.max_decoded_ratio,
    };
    // A compressed object cannot be cut at byte offsets: when chunks are in
    // use, a large one is loaded from its decoded copy, in chunks; else it
    // loads as one stream, decoded on the way.
    let copy = match unfinished {
        true => match decoded_copy(ctx, key, size, until).await? {
            Copy::Made(decoded) => Some(decoded),
            Copy::None => None,
            Copy::TooSlow(reason) => {
                return Ok(Handled::Refused {
                    key: key.to_string(),
                    reason: refuse(ctx, key, batch_id, reason).await?,
                });
            }
        },
        // Its batch done or gone: only a copy made before is of use.
        false => earlier_copy(ctx, key).await?,
    };
    let (object, encoding) = match copy {
        Some(decoded) => (decoded, None),
        None => (key.to_string(), api::object_encoding(key)),
    };
    let mut client = connection(ctx).await?;
    let step = match db::batch_definition(&*client, batch_id, own).await {
        Ok(None) => Ok(Step::Done(skipped("no such dataset"))),
        Ok(Some(dataset)) => {
            let target = Target {
                name,
                dataset: &dataset,
                batch_id,
                key: &object,
                encoding,
                decoded_limit,
                until,
            };
            load_object(ctx, &mut client, &target).await
        }
        Err(e) => Err(e.into()),
    };
    client.release(&step);
    let key = object.clone();
    match step {
        Ok(Step::Done(handled)) => Ok(handled),
        Ok(Step::Send(messages)) => {
            let chunks = messages.len();
            if let Some(queue) = &ctx.chunk_queue {
                queue.send(messages).await.map_err(MessageError::Pool)?;
            }
            Ok(Handled::Chunked { key, chunks })
        }
        Err(MessageError::Db(DbError::NoBatch(_))) => Ok(Handled::Skipped {
            key,
            reason: "no batch was recorded for this object".into(),
        }),
        Err(e) => Err(e),
    }
}

/// Fails the batch of the object under `key` for `reason`, which loading
/// again would not change; answers the reason once recorded.
async fn refuse(
    ctx: &Context,
    key: &str,
    batch_id: uuid::Uuid,
    reason: String,
) -> Result<String, MessageError> {
    let mut client = connection(ctx).await?;
    let failed = db::give_up(&mut client, batch_id, &reason).await;
    client.release(&failed);
    failed?;
    tracing::error!(%batch_id, key, reason, "batch failed");
    Ok(reason)
}

/// What the check of an object against its batch found.
enum Declared {
    /// The object's size, as declared, and whether its batch is unfinished.
    Size { size: u64, unfinished: bool },
    /// Not as declared: the batch was failed with this reason.
    Refused(String),
}

/// Checks the object's size against the one its batch declared; one of
/// another size fails the batch at once (nothing of it is read), within the
/// delivery that finds it. A batch already done is not checked again.
async fn declared(
    ctx: &Context,
    key: &str,
    batch_id: uuid::Uuid,
) -> Result<Declared, MessageError> {
    let client = connection(ctx).await?;
    let found = db::declared_size(&*client, batch_id).await;
    client.release(&found);
    let (declared, unfinished) = match found? {
        Some((status, size)) => (size, !status.is_final()),
        None => (None, false),
    };
    // A batch done (or none) is the load's to report, whatever is stored.
    let stored = match ctx.store.head(key).await.map_err(DbError::from)? {
        Some(stored) => stored,
        None if !unfinished => {
            return Ok(Declared::Size {
                size: 0,
                unfinished,
            });
        }
        None => {
            let missing = pipeline_shared::store::StoreError::NotFound(key.to_string());
            return Err(DbError::Store(missing).into());
        }
    };
    let as_stored = Declared::Size {
        size: stored.size,
        unfinished,
    };
    let Some(declared) = declared.filter(|_| unfinished) else {
        return Ok(as_stored);
    };
    if u64::try_from(declared).is_ok_and(|d| d == stored.size) {
        return Ok(as_stored);
    }
    let reason = format!(
        "the object is {} bytes, but its batch declared {declared}: nothing of it was loaded",
        stored.size
    );
    Ok(Declared::Refused(refuse(ctx, key, batch_id, reason).await?))
}

/// The object a message's batch loads from.
struct Target<'a> {
    name: &'a str,
    dataset: &'a pipeline_shared::dataset::Dataset,
    batch_id: uuid::Uuid,
    /// The object's key (its decoded copy's, when there is one).
    key: &'a str,
    encoding: Option<pipeline_contract::ContentEncoding>,
    /// The most a compressed object may decode to.
    decoded_limit: compression::DecodedLimit,
    /// When the invocation stops starting work.
    until: Option<std::time::Instant>,
}

/// What loading an object on a connection came to.
enum Step {
    Done(Handled),
    /// Chunk messages to send, once the connection is released.
    Send(Vec<chunks::ChunkMessage>),
}

/// Loads an object as one stream, or begins (or merges) its load in chunks.
async fn load_object(
    ctx: &Context,
    client: &mut tokio_postgres::Client,
    target: &Target<'_>,
) -> Result<Step, MessageError> {
    if ctx.chunk_queue.is_some()
        && target.encoding.is_none()
        && let Some(step) = load_in_chunks(ctx, client, target).await?
    {
        return Ok(step);
    }
    let store = ctx.store.clone();
    let object = target.key.to_string();
    let encoding = target.encoding;
    let limit = target.decoded_limit;
    let outcome = db::load(client, target.name, target.dataset, target.batch_id, || {
        let store = store.clone();
        let object = object.clone();
        async move {
            let stream = store.get(&object).await?;
            Ok(match encoding {
                Some(encoding) => compression::decompress(encoding, stream, limit),
                None => stream,
            })
        }
    })
    .await?;
    Ok(Step::Done(Handled::Loaded {
        key: object,
        outcome,
    }))
}

/// A batch begun in chunks goes on in chunks, whatever the chunk size is now
/// (a restart with another `--chunk-size`, say); an object above the chunk
/// size begins in chunks. `None`: it loads as one stream.
async fn load_in_chunks(
    ctx: &Context,
    client: &mut tokio_postgres::Client,
    target: &Target<'_>,
) -> Result<Option<Step>, MessageError> {
    let key = target.key;
    let planned = chunks::planned(client, target.batch_id).await?;
    if !planned && ctx.chunk_bytes == 0 {
        return Ok(None);
    }
    let size = ctx
        .store
        .head(key)
        .await
        .map_err(DbError::from)?
        .map_or(0, |i| i.size);
    if !planned && size <= ctx.chunk_bytes {
        return Ok(None);
    }
    let layout = Layout::of(target.dataset);
    let first = match planned {
        // The chunks recorded are kept: only the CSV header is read again.
        true => Cut {
            end: None,
            header: chunks::header(&ctx.store, key, &layout)
                .await
                .map_err(DbError::from)?,
        },
        false => {
            let span = span(ctx, key, 0, size);
            chunks::next_cut(&ctx.store, span, &layout)
                .await
                .map_err(DbError::from)?
        }
    };
    let object = chunks::Object {
        key,
        size,
        first: &first,
    };
    let begun = chunks::begin(client, target.name, target.batch_id, object).await?;
    Ok(Some(match begun {
        Begin::Done { status } => Step::Done(Handled::Loaded {
            key: key.to_string(),
            outcome: LoadOutcome::AlreadyDone { status },
        }),
        // Every chunk is in, but the batch was not merged (the loader of its
        // last chunk died, say): merge it now.
        Begin::Pending { chunks, rest: None } if chunks.is_empty() => {
            merge_now(ctx, client, target).await?
        }
        Begin::Pending { mut chunks, rest } => {
            if let Some(rest) = rest {
                chunks.extend(cut_on(ctx, client, &layout, rest, target.until).await?);
            }
            Step::Send(chunks)
        }
    }))
}

/// The part of `key` from `start` to `size` that a cut looks at.
fn span<'a>(ctx: &Context, key: &'a str, start: u64, size: u64) -> Span<'a> {
    Span {
        key,
        start,
        size,
        // Chunks turned off since the batch began: the rest is one chunk.
        chunk_bytes: match ctx.chunk_bytes {
            0 => u64::MAX,
            n => n,
        },
    }
}

/// Most cuts one invocation makes (without a deadline, in tests).
const MAX_CUTS: usize = 64;

/// Cuts the rest of an object into chunks while time is left: the messages
/// of the pieces cut, and the rest's when some is left (handed on).
async fn cut_on(
    ctx: &Context,
    client: &mut tokio_postgres::Client,
    layout: &Layout,
    mut rest: chunks::ChunkMessage,
    until: Option<std::time::Instant>,
) -> Result<Vec<chunks::ChunkMessage>, MessageError> {
    let mut messages = Vec::new();
    // A cut reads at most a chunk; the first is taken to need half a second.
    let mut need = std::time::Duration::from_millis(500);
    for _ in 0..MAX_CUTS {
        if until.is_some_and(|until| std::time::Instant::now() + 2 * need > until) {
            break;
        }
        let began = std::time::Instant::now();
        let span = span(ctx, &rest.key, rest.start, rest.end);
        let cut = chunks::next_cut(&ctx.store, span, layout)
            .await
            .map_err(DbError::from)?;
        let Some(Recorded { piece, rest: next }) =
            chunks::record_cut(client, &rest, cut.end).await?
        else {
            return Ok(messages);
        };
        messages.push(piece);
        match next {
            Some(next) => rest = next,
            None => return Ok(messages),
        }
        need = began.elapsed();
    }
    tracing::info!(batch_id = %rest.batch_id, cut = messages.len(), "the rest of the object is handed on");
    messages.push(rest);
    Ok(messages)
}

/// Merges a batch whose chunks are all in.
async fn merge_now(
    ctx: &Context,
    client: &mut tokio_postgres::Client,
    target: &Target<'_>,
) -> Result<Step, MessageError> {
    let (key, store) = (target.key, &ctx.store);
    let finished = chunks::finish(
        client,
        target.name,
        target.dataset,
        target.batch_id,
        |end| store.get_range(key, 0, Some(end)),
        budget(ctx, target.until, true),
    )
    .await?;
    Ok(match finished {
        Finished::Outcome(outcome) | Finished::Slices(Merged::Loaded(outcome)) => {
            resend_undos(ctx, client).await;
            Step::Done(Handled::Loaded {
                key: key.to_string(),
                outcome,
            })
        }
        Finished::Slices(Merged::More { .. }) => Step::Send(vec![chunks::ChunkMessage::merge(
            target.batch_id,
            target.name,
            key,
        )]),
        Finished::Pending | Finished::Slices(Merged::Busy | Merged::Done) => {
            Step::Done(Handled::Chunked {
                key: key.to_string(),
                chunks: 0,
            })
        }
    })
}

/// Sends again the messages that undo failed batches' merged slices, where
/// some are left (see [`db::undos_left`]): a few at a time, at the end of a
/// merge. Best effort: a failure here is the next merge's to repair.
async fn resend_undos(ctx: &Context, client: &tokio_postgres::Client) {
    let Some(queue) = &ctx.chunk_queue else {
        return;
    };
    let left = match db::undos_left(client, 4).await {
        Ok(left) => left,
        Err(e) => return tracing::warn!(error = %e, "could not look for undos left"),
    };
    if left.is_empty() {
        return;
    }
    let messages: Vec<_> = left
        .iter()
        .map(|(batch_id, dataset, key)| chunks::ChunkMessage::merge(*batch_id, dataset, key))
        .collect();
    tracing::info!(batches = messages.len(), "undos left are sent again");
    if let Err(e) = queue.send(messages).await {
        tracing::warn!(error = %e, "could not send the undos left");
    }
}

/// What became of the decoded copy of a compressed object.
enum Copy {
    /// Its key: made now, or before.
    Made(String),
    /// None: the object loads as one stream (see [`decoded_copy`]).
    None,
    /// Not made: decoding took longer than the invocation may run, and
    /// would again; the reason, for the batch's failure.
    TooSlow(String),
}

/// The decoded copy of a compressed object: the one made before, or one
/// made now when chunks are in use and the object is above an eighth of
/// the chunk size (it likely decodes to more than a chunk). [`Copy::None`]
/// when it should load as one stream: chunks are off, the object is small,
/// its batch is done, or its data is corrupt (the stream's load then fails
/// the batch with the offset, as for any compressed object). A copy is
/// stored whole or not at all, so a loader that dies meanwhile leaves none.
/// It is made in one invocation: one that would not finish before `until`
/// is stopped a little before it (the copy abandoned, its upload aborted),
/// and its batch fails with the reason within that delivery, since every
/// delivery would stop at the same point.
async fn decoded_copy(
    ctx: &Context,
    key: &str,
    size: u64,
    until: Option<std::time::Instant>,
) -> Result<Copy, MessageError> {
    let (Some(encoding), Some(decoded)) = (api::object_encoding(key), api::decoded_object_key(key))
    else {
        return Ok(Copy::None);
    };
    if let Some(earlier) = earlier_copy(ctx, key).await? {
        return Ok(Copy::Made(earlier));
    }
    if ctx.chunk_queue.is_none() || ctx.chunk_bytes == 0 || size <= ctx.chunk_bytes / 8 {
        return Ok(Copy::None);
    }
    let started = std::time::Instant::now();
    let stream = compression::decompress(
        encoding,
        ctx.store.get(key).await.map_err(DbError::from)?,
        compression::DecodedLimit {
            size,
            ratio: ctx.max_decoded_ratio,
        },
    );
    let cut = until.map(copy_deadline);
    let (stream, progress) = pipeline_shared::store::stop_at(stream, cut);
    let metadata =
        std::collections::BTreeMap::from([("decoded-from".to_string(), key.to_string())]);
    match ctx.store.put_stream(&decoded, stream, &metadata).await {
        Ok(bytes) => {
            let decoded_copy_ms = started.elapsed().as_millis() as u64;
            tracing::info!(
                key,
                decoded,
                bytes,
                decoded_copy_ms,
                "stored the decoded copy"
            );
            Ok(Copy::Made(decoded))
        }
        Err(_) if progress.cut() => Ok(Copy::TooSlow(format!(
            "decoding the {} object into a copy to load in chunks takes longer than one loader invocation may run: \
             {} bytes were decoded in {:.1} s; upload it uncompressed (it then loads in chunks as it is read), \
             or raise the loader's timeout",
            encoding.name(),
            progress.bytes(),
            started.elapsed().as_secs_f64(),
        ))),
        Err(pipeline_shared::store::StoreError::Corrupt(_)) => Ok(Copy::None),
        Err(e) => Err(DbError::from(e).into()),
    }
}

/// When a decoded copy still being made is given up: early enough before
/// the invocation's own deadline to abort its upload and fail its batch (a
/// quarter of the time left, at most 2 s).
fn copy_deadline(until: std::time::Instant) -> std::time::Instant {
    let left = until.saturating_duration_since(std::time::Instant::now());
    until - (left / 4).min(std::time::Duration::from_secs(2))
}

/// The decoded copy of a compressed object made before, if any: it is used
/// whatever the settings are now (its batch may have begun in chunks of it).
async fn earlier_copy(ctx: &Context, key: &str) -> Result<Option<String>, MessageError> {
    let Some(decoded) = api::object_encoding(key).and(api::decoded_object_key(key)) else {
        return Ok(None);
    };
    let stored = ctx.store.head(&decoded).await.map_err(DbError::from)?;
    Ok(stored.map(|_| decoded))
}

/// How far an invocation that ends at `until` merges; `fresh`: it has
/// done nothing else, so it merges one slice at least.
fn budget(ctx: &Context, until: Option<std::time::Instant>, fresh: bool) -> Budget {
    Budget {
        slice_rows: ctx.merge_slice_rows,
        until,
        at_least_one: fresh,
    }
}

/// Loads one chunk of a large object, then merges the batch if it was the
/// last (or the message hands a merge on), handing on what is left at
/// `until`.
pub async fn load_chunk(
    ctx: &Context,
    message: &chunks::ChunkMessage,
    until: Option<std::time::Instant>,
) -> Result<Handled, MessageError> {
    let own = ctx.datasets.get(&message.dataset);
    let mut client = connection(ctx).await?;
    let step = chunk_on(ctx, &mut client, own, message, until).await;
    client.release(&step);
    let (handled, messages) = match step? {
        Step::Send(messages) => {
            let handled = Handled::Chunked {
                key: message.key.clone(),
                chunks: messages.len(),
            };
            (handled, messages)
        }
        Step::Done(
            handled @ Handled::Chunk {
                finished: Finished::Slices(Merged::More { .. }),
                ..
            },
        ) => {
            let next =
                chunks::ChunkMessage::merge(message.batch_id, &message.dataset, &message.key);
            (handled, vec![next])
        }
        Step::Done(handled) => (handled, Vec::new()),
    };
    if let (Some(queue), false) = (&ctx.chunk_queue, messages.is_empty()) {
        queue.send(messages).await.map_err(MessageError::Pool)?;
    }
    Ok(handled)
}

/// Loads a chunk and merges its batch when it was the last one, or, given
/// the rest of an object, cuts it on.
async fn chunk_on(
    ctx: &Context,
    client: &mut tokio_postgres::Client,
    own: Option<&pipeline_shared::dataset::Dataset>,
    message: &chunks::ChunkMessage,
    until: Option<std::time::Instant>,
) -> Result<Step, MessageError> {
    // The definition the batch was accepted under, for its chunks and its merge.
    let skipped = |reason: &str| {
        Step::Done(Handled::Skipped {
            key: message.key.clone(),
            reason: reason.into(),
        })
    };
    let dataset = match db::batch_definition(&*client, message.batch_id, own).await {
        Ok(Some(dataset)) => dataset,
        Ok(None) => return Ok(skipped("no such dataset")),
        // The batch is gone (its object could not be stored): nothing to load.
        Err(DbError::NoBatch(_)) => return Ok(skipped("no batch was recorded for this object")),
        Err(e) => return Err(e.into()),
    };
    let dataset = &*dataset;
    if chunks::is_rest(client, message).await? {
        let layout = Layout::of(dataset);
        let messages = cut_on(ctx, client, &layout, message.clone(), until).await?;
        return Ok(Step::Send(messages));
    }
    let store = &ctx.store;
    let outcome = chunks::load_chunk(client, dataset, message, || {
        store.get_range(&message.key, message.start, Some(message.end))
    })
    .await?;
    let prefix = |end| store.get_range(&message.key, 0, Some(end));
    // A chunk loaded now took this invocation's time; a hand-off (its
    // chunk loaded before) merges one slice at least.
    let budget = budget(ctx, until, outcome == ChunkOutcome::Nothing);
    let finished = match chunks::finish(
        client,
        &message.dataset,
        dataset,
        message.batch_id,
        prefix,
        budget,
    )
    .await
    {
        Ok(finished) => finished,
        // The batch is gone (its object could not be stored): nothing to merge.
        Err(DbError::NoBatch(_)) => Finished::Slices(Merged::Done),
        Err(e) => return Err(e.into()),
    };
    if matches!(
        finished,
        Finished::Outcome(_) | Finished::Slices(Merged::Loaded(_))
    ) {
        resend_undos(ctx, client).await;
    }
    Ok(Step::Done(Handled::Chunk {
        key: message.key.clone(),
        chunk: message.chunk,
        outcome,
        finished,
    }))
}

/// The `migrate` action: brings the tables in line with the datasets.
pub async fn migrate(ctx: &Context) -> Result<db::MigrationReport, MessageError> {
    let mut client = connection(ctx).await?;
    Ok(db::migrate(&mut client, &ctx.datasets).await?)
}

/// What a direct invocation of the loader may ask.
#[derive(Debug, serde::Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
enum Action {
    /// Run the migrations; answers with the statements run.
    Migrate,
    /// Connect to the database as the loader does and ping it; answers
    /// `{"status": "ok"}` (the deploy's check of a new version).
    Health,
}

/// Whether a payload is an action (from the deploy) rather than an SQS event.
pub fn is_action(payload: &serde_json::Value) -> bool {
    payload.get("action").is_some()
}

/// Whether a payload asks for the migrations, which run as the database's
/// administrator.
pub fn is_migration(payload: &serde_json::Value) -> bool {
    payload.get("action").and_then(|a| a.as_str()) == Some("migrate")
}

/// The health action: a connection of the loader's pool answers.
pub async fn health(ctx: &Context) -> Result<serde_json::Value, MessageError> {
    let client = connection(ctx).await?;
    let pinged = db::ping(&*client).await;
    client.release(&pinged);
    pinged?;
    Ok(serde_json::json!({"status": "ok"}))
}

impl MessageError {
    /// The error's kind as Lambda reports it (`errorType`): the deploy tells
    /// a migration refused for losing data from a failure.
    pub fn kind(&self) -> &'static str {
        match self {
            MessageError::Db(DbError::Destructive { .. }) => "MigrationRefused",
            _ => "MessageError",
        }
    }
}

/// Handles any invocation: an SQS event (the queue), or an action (the deploy).
pub async fn invoke(
    ctx: &Context,
    payload: serde_json::Value,
    deadline: Option<(tokio::time::Instant, std::time::Duration)>,
) -> Result<serde_json::Value, MessageError> {
    if is_action(&payload) {
        let action: Action =
            serde_json::from_value(payload).map_err(|e| MessageError::NotS3(e.to_string()))?;
        return match action {
            Action::Migrate => Ok(serde_json::to_value(migrate(ctx).await?).unwrap_or_default()),
            Action::Health => health(ctx).await,
        };
    }
    let event: SqsEvent =
        serde_json::from_value(payload).map_err(|e| MessageError::NotS3(e.to_string()))?;
    Ok(serde_json::to_value(handle_until(ctx, event, deadline).await).unwrap_or_default())
}
