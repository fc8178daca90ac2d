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
use pipeline_shared::chunks::{self, Begin, ChunkBody, ChunkOutcome};
use pipeline_shared::compression;
use pipeline_shared::dataset::Format;
use pipeline_shared::db::{self, DbError, LoadOutcome};

/// The function's name as the spec and the templates know it.
pub const NAME: &str = "loader";

/// Why a message could not be handled.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("the message is not an S3 notification: {0}")]
    NotS3(String),
    #[error("the database pool: {0}")]
    Pool(String),
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
        finished: Option<LoadOutcome>,
    },
    /// Not an object of a batch (a test event, a foreign key).
    Skipped {
        key: String,
        reason: String,
    },
}

/// Handles an SQS event; the response lists the messages to retry.
pub async fn handle(ctx: &Context, event: SqsEvent) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for message in event.records {
        let id = message.message_id.clone().unwrap_or_default();
        match handle_message(ctx, &message).await {
            Ok(handled) => {
                for h in handled {
                    tracing::info!(message_id = %id, result = ?h, "handled");
                }
            }
            Err(e) => {
                tracing::warn!(message_id = %id, error = %e, "message will be retried");
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                response.batch_item_failures.push(failure);
            }
        }
    }
    response
}

/// Loads the objects an SQS message announces.
pub async fn handle_message(
    ctx: &Context,
    message: &SqsMessage,
) -> Result<Vec<Handled>, MessageError> {
    let body = message.body.as_deref().unwrap_or("");
    // S3 sends a test event when notifications are set up; nothing to load.
    if body.contains("\"s3:TestEvent\"") {
        return Ok(Vec::new());
    }
    if let Ok(ChunkBody { chunk }) = serde_json::from_str::<ChunkBody>(body) {
        return Ok(vec![load_chunk(ctx, &chunk).await?]);
    }
    let event: S3Event =
        serde_json::from_str(body).map_err(|e| MessageError::NotS3(e.to_string()))?;
    let mut out = Vec::new();
    for record in event.records {
        let Some(raw_key) = record.s3.object.key.clone() else {
            continue;
        };
        // S3 notifications carry keys URL-encoded, with `+` for spaces.
        let key: String = form_urlencoded::parse(format!("k={raw_key}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or(raw_key);
        out.push(load_key(ctx, &key).await?);
    }
    Ok(out)
}

/// Loads the batch stored under `key`.
pub async fn load_key(ctx: &Context, key: &str) -> Result<Handled, MessageError> {
    let skipped = |reason: &str| Handled::Skipped {
        key: key.to_string(),
        reason: reason.to_string(),
    };
    let Some((name, batch_id)) = api::parse_object_key(key) else {
        return Ok(skipped("not a batch object key"));
    };
    let Some(dataset) = ctx.datasets.get(name) else {
        return Ok(skipped("no such dataset"));
    };
    let mut client = ctx
        .pool
        .get()
        .await
        .map_err(|e| MessageError::Pool(e.to_string()))?;
    // A compressed object cannot be cut at byte offsets: when chunks are in
    // use, a large one is loaded from its decoded copy, in chunks; else it
    // loads as one stream, decoded on the way.
    let mut encoding = api::object_encoding(key);
    let mut object = key.to_string();
    if let Some(decoded) = decoded_copy(ctx, &client, key, batch_id).await? {
        object = decoded;
        encoding = None;
    }
    let key = object.as_str();
    if let Some(queue) = ctx.chunk_queue.as_ref().filter(|_| encoding.is_none()) {
        // A batch begun in chunks goes on in chunks, whatever the chunk size
        // is now (a restart with another `--chunk-size`, say).
        let planned = chunks::planned(&client, batch_id).await?;
        let size = if planned || ctx.chunk_bytes > 0 {
            ctx.store
                .head(key)
                .await
                .map_err(DbError::from)?
                .map_or(0, |i| i.size)
        } else {
            0
        };
        if planned || (ctx.chunk_bytes > 0 && size > ctx.chunk_bytes) {
            // The chunks recorded are kept: planning again only finds the CSV header.
            let chunk_bytes = if planned {
                size.max(1)
            } else {
                ctx.chunk_bytes
            };
            let (ranges, header) = match dataset.format {
                Format::Ndjson => (chunks::plan(&ctx.store, key, size, chunk_bytes).await, None),
                Format::Csv => {
                    match chunks::plan_csv(&ctx.store, key, size, chunk_bytes, &dataset.csv()).await
                    {
                        Ok((ranges, header)) => (Ok(ranges), header),
                        Err(e) => (Err(e), None),
                    }
                }
            };
            let ranges = ranges.map_err(DbError::from)?;
            let begun =
                chunks::begin(&mut client, name, batch_id, key, &ranges, header.as_deref()).await;
            return match begun {
                Ok(Begin::Done { status }) => Ok(Handled::Loaded {
                    key: key.to_string(),
                    outcome: LoadOutcome::AlreadyDone { status },
                }),
                // Every chunk is in, but the batch was not merged (the loader
                // of its last chunk died, say): merge it now.
                Ok(Begin::Pending(messages)) if messages.is_empty() => {
                    let store = &ctx.store;
                    let finished = chunks::finish(&mut client, name, dataset, batch_id, |end| {
                        store.get_range(key, 0, Some(end))
                    })
                    .await;
                    match finished {
                        Ok(Some(outcome)) => Ok(Handled::Loaded {
                            key: key.to_string(),
                            outcome,
                        }),
                        Ok(None) => Ok(Handled::Chunked {
                            key: key.to_string(),
                            chunks: 0,
                        }),
                        Err(DbError::NoBatch(_)) => {
                            Ok(skipped("no batch was recorded for this object"))
                        }
                        Err(e) => Err(e.into()),
                    }
                }
                Ok(Begin::Pending(messages)) => {
                    let chunks = messages.len();
                    queue.send(messages).await.map_err(MessageError::Pool)?;
                    Ok(Handled::Chunked {
                        key: key.to_string(),
                        chunks,
                    })
                }
                Err(DbError::NoBatch(_)) => Ok(skipped("no batch was recorded for this object")),
                Err(e) => Err(e.into()),
            };
        }
    }
    let store = ctx.store.clone();
    let object = key.to_string();
    let outcome = db::load(&mut client, name, dataset, batch_id, || {
        let store = store.clone();
        let object = object.clone();
        async move {
            let stream = store.get(&object).await?;
            Ok(match encoding {
                Some(encoding) => compression::decompress(encoding, stream),
                None => stream,
            })
        }
    })
    .await;
    match outcome {
        Ok(outcome) => Ok(Handled::Loaded {
            key: key.to_string(),
            outcome,
        }),
        Err(DbError::NoBatch(_)) => Ok(skipped("no batch was recorded for this object")),
        Err(e) => Err(e.into()),
    }
}

/// The key of the decoded copy of a compressed object: the one made before,
/// or one made now when chunks are in use and the object is above an eighth
/// of the chunk size (it likely decodes to more than a chunk). `None` when
/// it should load as one stream: chunks are off, the object is small, its
/// batch is done, or its data is corrupt (the stream's load then fails the
/// batch with the offset, as for any compressed object). A copy is stored
/// whole or not at all, so a loader that dies meanwhile leaves none.
async fn decoded_copy(
    ctx: &Context,
    client: &tokio_postgres::Client,
    key: &str,
    batch_id: uuid::Uuid,
) -> Result<Option<String>, MessageError> {
    let (Some(encoding), Some(decoded)) = (api::object_encoding(key), api::decoded_object_key(key))
    else {
        return Ok(None);
    };
    // A copy made before is used whatever the settings are now: its batch
    // may have begun in chunks of it.
    if ctx
        .store
        .head(&decoded)
        .await
        .map_err(DbError::from)?
        .is_some()
    {
        return Ok(Some(decoded));
    }
    if ctx.chunk_queue.is_none() || ctx.chunk_bytes == 0 {
        return Ok(None);
    }
    let size = ctx
        .store
        .head(key)
        .await
        .map_err(DbError::from)?
        .map_or(0, |i| i.size);
    if size <= ctx.chunk_bytes / 8 {
        return Ok(None);
    }
    match db::batch(client, batch_id).await? {
        Some(batch) if !batch.answer.status.is_final() => {}
        _ => return Ok(None),
    }
    let started = std::time::Instant::now();
    let stream =
        compression::decompress(encoding, ctx.store.get(key).await.map_err(DbError::from)?);
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
            Ok(Some(decoded))
        }
        Err(pipeline_shared::store::StoreError::Corrupt(_)) => Ok(None),
        Err(e) => Err(DbError::from(e).into()),
    }
}

/// Loads one chunk of a large object, then merges the batch if it was the last.
pub async fn load_chunk(
    ctx: &Context,
    message: &chunks::ChunkMessage,
) -> Result<Handled, MessageError> {
    let Some(dataset) = ctx.datasets.get(&message.dataset) else {
        return Ok(Handled::Skipped {
            key: message.key.clone(),
            reason: "no such dataset".into(),
        });
    };
    let mut client = ctx
        .pool
        .get()
        .await
        .map_err(|e| MessageError::Pool(e.to_string()))?;
    let store = &ctx.store;
    let outcome = chunks::load_chunk(&mut client, dataset, message, || {
        store.get_range(&message.key, message.start, Some(message.end))
    })
    .await?;
    let finished = match chunks::finish(
        &mut client,
        &message.dataset,
        dataset,
        message.batch_id,
        |end| store.get_range(&message.key, 0, Some(end)),
    )
    .await
    {
        Ok(finished) => finished,
        // The batch is gone (its object could not be stored): nothing to merge.
        Err(DbError::NoBatch(_)) => None,
        Err(e) => return Err(e.into()),
    };
    Ok(Handled::Chunk {
        key: message.key.clone(),
        chunk: message.chunk,
        outcome,
        finished,
    })
}

/// The `migrate` action: brings the tables in line with the datasets.
pub async fn migrate(ctx: &Context) -> Result<db::MigrationReport, MessageError> {
    let mut client = ctx
        .pool
        .get()
        .await
        .map_err(|e| MessageError::Pool(e.to_string()))?;
    Ok(db::migrate(&mut client, &ctx.datasets).await?)
}

/// What a direct invocation of the loader may ask.
#[derive(Debug, serde::Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
enum Action {
    /// Run the migrations; answers with the statements run.
    Migrate,
}

/// Whether a payload is an action (from the deploy) rather than an SQS event.
pub fn is_action(payload: &serde_json::Value) -> bool {
    payload.get("action").is_some()
}

/// Handles any invocation: an SQS event (the queue), or an action (the deploy).
pub async fn invoke(
    ctx: &Context,
    payload: serde_json::Value,
) -> Result<serde_json::Value, MessageError> {
    if is_action(&payload) {
        let action: Action =
            serde_json::from_value(payload).map_err(|e| MessageError::NotS3(e.to_string()))?;
        return match action {
            Action::Migrate => Ok(serde_json::to_value(migrate(ctx).await?).unwrap_or_default()),
        };
    }
    let event: SqsEvent =
        serde_json::from_value(payload).map_err(|e| MessageError::NotS3(e.to_string()))?;
    Ok(serde_json::to_value(handle(ctx, event).await).unwrap_or_default())
}
