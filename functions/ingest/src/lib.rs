//! The ingest function: `POST /v1/datasets/{dataset}/batches`.
//!
//! A batch is checked whole before anything is stored: a batch with any
//! invalid record is answered 400 with the errors and leaves no trace. A
//! valid batch is recorded as `received` and stored under
//! `raw/<dataset>/<date>/<batch id>`; the object's creation triggers the
//! loader. An `Idempotency-Key` makes a retry return the first answer.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use pipeline_contract::{
    BatchAccepted, BatchRejected, BatchStatus, CompleteRequest, Completed, ErrorCode, PartUrl,
    PartUrls, PartsRequest, RejectionCode, Upload, UploadMethod, UploadRequest,
};
use pipeline_shared::api::{self, Action, Context};
use pipeline_shared::db::{self, NewBatch};
use pipeline_shared::records::{Decoder, MAX_ERRORS};
use pipeline_shared::store::{MAX_OBJECT_BYTES, MAX_PARTS, PART_URLS_PER_ANSWER, StoreError, hex};
use sha2::{Digest, Sha256};

/// The function's name as the spec and the templates know it.
pub const NAME: &str = "ingest";

/// The request's `Idempotency-Key` header: `Ok(None)` without one, `Err`
/// with the 400 answer for one that is not 1 to 128 visible ASCII characters.
#[allow(clippy::result_large_err)]
fn idempotency_header(request: &Request<Bytes>) -> Result<Option<&str>, Response<Bytes>> {
    let Some(value) = request.headers().get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key) if api::valid_idempotency_key(key) => Ok(Some(key)),
        _ => Err(api::error(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            format!(
                "the Idempotency-Key header takes 1 to {} visible ASCII characters",
                api::MAX_IDEMPOTENCY_KEY
            ),
        )),
    }
}

/// Handles one API request.
pub async fn handle(ctx: &Context, request: Request<Bytes>) -> Response<Bytes> {
    let path = request.uri().path().to_string();
    let Some((prefix, parts)) = api::route(&path) else {
        return api::no_route(request.method(), &path);
    };
    let access = api::access(&request);
    match (request.method(), parts.as_slice()) {
        (&Method::GET, ["v1", "health"]) => api::health(ctx).await,
        (&Method::POST, ["v1", "datasets", dataset, "batches" | "uploads"])
            if let Some(refused) = api::refuse(&access, dataset, Action::Write) =>
        {
            refused
        }
        (&Method::POST, ["v1", "datasets", dataset, "batches"]) => {
            post_batch(ctx, &prefix, dataset, &request).await
        }
        (&Method::POST, ["v1", "datasets", dataset, "uploads"]) => {
            create_upload(ctx, &prefix, dataset, &request).await
        }
        (&Method::POST, ["v1", "batches", batch_id, "complete"]) => {
            complete_upload(ctx, &prefix, batch_id, &request).await
        }
        (&Method::POST, ["v1", "batches", batch_id, "parts"]) => {
            part_urls(ctx, batch_id, &request).await
        }
        _ => api::no_route(request.method(), &path),
    }
}

fn header<'r>(request: &'r Request<Bytes>, name: &str) -> Option<&'r str> {
    request.headers().get(name).and_then(|v| v.to_str().ok())
}

async fn post_batch(
    ctx: &Context,
    prefix: &str,
    name: &str,
    request: &Request<Bytes>,
) -> Response<Bytes> {
    let Some(dataset) = api::dataset(ctx, name).await else {
        return api::unknown_dataset(ctx, name);
    };
    let dataset = &*dataset;
    let expected = dataset.format.media_type();
    let media_type = header(request, "content-type")
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    if media_type != expected {
        let found = if media_type.is_empty() {
            "no content type".to_string()
        } else {
            format!("`{media_type}`")
        };
        return api::error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            format!("dataset `{name}` takes `{expected}`, found {found}"),
        );
    }
    let body = request.body();
    let event_bytes = api::event_body_len(body);
    if event_bytes > ctx.max_inline_bytes as u64 {
        return api::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooLarge,
            format!(
                "the batch is {} bytes ({event_bytes} as a JSON string in the Lambda event), over the inline limit of {} bytes; send it through an upload: POST {prefix}/v1/datasets/{name}/uploads",
                body.len(),
                ctx.max_inline_bytes
            ),
        );
    }
    let idempotency_key = match idempotency_header(request) {
        Ok(key) => key,
        Err(answer) => return answer,
    };

    // Check every record before storing anything.
    let mut decoder = Decoder::new(dataset);
    let mut sink = Vec::new();
    decoder.feed(body, &mut sink);
    drop(sink);
    let summary = decoder.finish(&mut Vec::new());
    if !summary.is_valid() {
        return api::json(
            StatusCode::BAD_REQUEST,
            &BatchRejected {
                error: RejectionCode::InvalidBatch,
                message: format!(
                    "{} of {} records are invalid; nothing was stored",
                    summary.invalid,
                    summary.records + summary.invalid
                ),
                truncated: summary.invalid as usize > MAX_ERRORS,
                errors: summary.errors,
            },
        );
    }

    let batch_id = uuid::Uuid::now_v7();
    let key = api::object_key(
        name,
        dataset.format,
        batch_id,
        chrono::Utc::now().date_naive(),
    );
    let sha256 = hex(&Sha256::digest(body));
    let records = summary.records as i64;
    let revision = db::revision(dataset);
    let new = NewBatch {
        batch_id,
        dataset: name,
        object_key: &key,
        idempotency_key,
        records: Some(records),
        sha256: Some(&sha256),
        size_bytes: Some(body.len() as i64),
        dataset_revision: Some(&revision),
    };
    // The connection goes back to the pool before the object is stored:
    // storing notifies the queue, which may need a connection of its own
    // (locally, the same pool), and a request never holds one resource
    // while it waits for another.
    let batch = match insert(ctx, &new).await {
        Ok(Ok(batch)) => batch,
        // A retry: the first answer again, nothing new stored.
        Ok(Err(earlier)) => {
            if earlier.sha256.as_deref() != Some(sha256.as_str()) {
                return api::error(
                    StatusCode::CONFLICT,
                    ErrorCode::IdempotencyConflict,
                    format!(
                        "the Idempotency-Key was used for batch {} with a different body; use a new key for a new batch",
                        earlier.answer.batch_id
                    ),
                );
            }
            // The first request may have died between recording the batch
            // and storing it: store it now, under the first batch's key.
            if earlier.answer.status == BatchStatus::Received {
                match ctx.store.head(&earlier.object_key).await {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        let metadata =
                            object_metadata(earlier.answer.batch_id, name, records, &sha256);
                        if let Err(e) = ctx
                            .store
                            .put(&earlier.object_key, body.clone(), &metadata)
                            .await
                        {
                            return api::unavailable("storage", &e);
                        }
                    }
                    Err(e) => return api::unavailable("storage", &e),
                }
            }
            return api::json(
                StatusCode::ACCEPTED,
                &BatchAccepted {
                    batch_id: earlier.answer.batch_id,
                    dataset: name.to_string(),
                    records: earlier.answer.records.unwrap_or(0),
                    sha256: earlier.sha256.unwrap_or_default(),
                    status_url: format!("{prefix}/v1/batches/{}", earlier.answer.batch_id),
                },
            );
        }
        Err(e) => return api::unavailable("the database", &e),
    };
    let metadata = object_metadata(batch_id, name, records, &sha256);
    if let Err(e) = ctx.store.put(&key, body.clone(), &metadata).await {
        // Forget the batch so that a retry with the same key stores it.
        forget(ctx, batch.answer.batch_id).await;
        return api::unavailable("storage", &e);
    }
    tracing::info!(%batch_id, dataset = name, records, bytes = body.len(), "batch accepted");
    api::json(
        StatusCode::ACCEPTED,
        &BatchAccepted {
            batch_id,
            dataset: name.to_string(),
            records,
            sha256,
            status_url: format!("{prefix}/v1/batches/{batch_id}"),
        },
    )
}

/// Records a received batch on a connection held for that statement only.
async fn insert(ctx: &Context, new: &NewBatch<'_>) -> Result<Result<db::Batch, db::Batch>, String> {
    let client = ctx.pool.get().await.map_err(|e| e.to_string())?;
    let inserted = db::insert_batch(&**client, new).await;
    if inserted.is_err() {
        db::discard(client);
    }
    inserted.map_err(|e| e.to_string())
}

/// Forgets a batch whose object could not be stored (logged if it cannot).
async fn forget(ctx: &Context, batch_id: uuid::Uuid) {
    let deleted = match ctx.pool.get().await {
        Ok(client) => db::delete_batch(&**client, batch_id)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = deleted {
        tracing::error!(%e, %batch_id, "could not forget a batch whose object was not stored");
    }
}

/// An upload's answer before its URLs are added (none, for a batch whose
/// upload is over).
fn no_urls(
    prefix: &str,
    batch_id: uuid::Uuid,
    expires_at: chrono::DateTime<chrono::Utc>,
) -> Upload {
    Upload {
        batch_id,
        expires_at,
        method: UploadMethod::Put,
        url: None,
        headers: Default::default(),
        upload_id: None,
        parts: None,
        complete_url: None,
        parts_url: None,
        status_url: format!("{prefix}/v1/batches/{batch_id}"),
    }
}

/// Why no upload URL is handed out for a batch past `received`: its object
/// is stored, and an upload must never replace it.
fn upload_over(batch: &db::Batch) -> String {
    format!(
        "batch {} is {}: its upload is over, and no URL is handed out for it; use a new key for a new batch",
        batch.answer.batch_id, batch.answer.status
    )
}

/// How long an upload URL stays valid.
pub const UPLOAD_EXPIRY_SECONDS: i64 = 3600;

/// `POST /v1/datasets/{dataset}/uploads`: a batch too large for the API is
/// sent straight to storage through a presigned URL (one per part above the
/// part size); the loader checks it.
async fn create_upload(
    ctx: &Context,
    prefix: &str,
    name: &str,
    request: &Request<Bytes>,
) -> Response<Bytes> {
    let Some(dataset) = api::dataset(ctx, name).await else {
        return api::unknown_dataset(ctx, name);
    };
    let dataset = &*dataset;
    let upload: UploadRequest = match serde_json::from_slice(request.body()) {
        Ok(u) => u,
        Err(e) => {
            return api::error(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                format!("the body must be a JSON object with `size_bytes` and `content_type`: {e}"),
            );
        }
    };
    let expected = dataset.format.media_type();
    if upload.content_type != expected {
        return api::error(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            format!(
                "dataset `{name}` takes `{expected}`, found `{}`",
                upload.content_type
            ),
        );
    }
    if upload.size_bytes == 0 || upload.size_bytes > MAX_OBJECT_BYTES {
        return api::error(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            format!("`size_bytes` must be from 1 to {MAX_OBJECT_BYTES} (5 TiB)"),
        );
    }
    let idempotency_key = match upload.idempotency_key.as_deref() {
        Some(key) if api::valid_idempotency_key(key) => Some(key),
        Some(_) => {
            return api::error(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                format!(
                    "`idempotency_key` takes 1 to {} visible ASCII characters",
                    api::MAX_IDEMPOTENCY_KEY
                ),
            );
        }
        None => match idempotency_header(request) {
            Ok(key) => key,
            Err(answer) => return answer,
        },
    };
    let batch_id = uuid::Uuid::now_v7();
    let revision = db::revision(dataset);
    let key = api::compressed_object_key(
        name,
        dataset.format,
        batch_id,
        chrono::Utc::now().date_naive(),
        upload.content_encoding,
    );
    let new = NewBatch {
        batch_id,
        dataset: name,
        object_key: &key,
        idempotency_key,
        records: None,
        sha256: None,
        size_bytes: Some(upload.size_bytes as i64),
        dataset_revision: Some(&revision),
    };
    let batch = match insert(ctx, &new).await {
        Ok(Ok(b)) => b,
        // A retry: the same batch's URLs again, while it is being uploaded;
        // once its upload is over, the batch without any URL, which could
        // replace its stored object.
        Ok(Err(b)) if b.answer.status == BatchStatus::Received => b,
        Ok(Err(b)) => {
            let over = no_urls(prefix, b.answer.batch_id, chrono::Utc::now());
            return api::json(StatusCode::OK, &over);
        }
        Err(e) => return api::unavailable("the database", &e),
    };
    let expires = chrono::Utc::now().timestamp() + UPLOAD_EXPIRY_SECONDS;
    let mut answer = no_urls(prefix, batch.answer.batch_id, expiry(expires));
    if upload.size_bytes <= ctx.upload_part_bytes {
        match ctx.store.presign_put(&batch.object_key, expires).await {
            Ok(u) => {
                answer.url = Some(u);
                let (name, value) = pipeline_contract::UPLOAD_CONDITION;
                answer.headers.insert(name.into(), value.into());
            }
            Err(e) => return api::unavailable("storage", &e),
        }
    } else {
        let started = ctx
            .store
            .start_multipart(
                &batch.object_key,
                upload.size_bytes,
                ctx.upload_part_bytes,
                expires,
            )
            .await;
        match started {
            Ok(m) => {
                if m.parts.iter().any(|p| p.url.is_none()) {
                    answer.parts_url = Some(format!(
                        "{prefix}/v1/batches/{}/parts",
                        batch.answer.batch_id
                    ));
                }
                answer.upload_id = Some(m.upload_id);
                answer.parts = Some(m.parts);
                answer.complete_url = Some(format!(
                    "{prefix}/v1/batches/{}/complete",
                    batch.answer.batch_id
                ));
            }
            Err(e) => return api::unavailable("storage", &e),
        }
    }
    api::json(StatusCode::CREATED, &answer)
}

/// The batch of a path's `{batch_id}`, or the answer: 404 when there is no
/// such batch, 503 when the database does not answer.
#[allow(clippy::result_large_err)]
/// The batch `batch_id`, when it exists and the caller may send batches to
/// its dataset; a batch of another dataset is answered as missing, so that
/// a token learns nothing of datasets beyond its scopes.
async fn find_batch(
    ctx: &Context,
    batch_id: &str,
    request: &Request<Bytes>,
) -> Result<db::Batch, Response<Bytes>> {
    let not_found = || {
        api::error(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("there is no batch `{batch_id}`"),
        )
    };
    let id = batch_id.parse::<uuid::Uuid>().map_err(|_| not_found())?;
    let client = ctx
        .pool
        .get()
        .await
        .map_err(|e| api::unavailable("the database", &e))?;
    match db::batch(&**client, id).await {
        Ok(Some(b)) if api::access(request).allows(&b.answer.dataset, Action::Write) => Ok(b),
        Ok(_) => Err(not_found()),
        Err(e) => Err(api::unavailable("the database", &e)),
    }
}

/// `POST /v1/batches/{batch_id}/parts`: the URLs of parts an upload's
/// answer listed without one (it holds at most [`PART_URLS_PER_ANSWER`]),
/// at most that many at a time.
async fn part_urls(ctx: &Context, batch_id: &str, request: &Request<Bytes>) -> Response<Bytes> {
    let batch = match find_batch(ctx, batch_id, request).await {
        Ok(b) if b.answer.status == BatchStatus::Received => b,
        Ok(b) => {
            return api::error(
                StatusCode::CONFLICT,
                ErrorCode::InvalidUpload,
                upload_over(&b),
            );
        }
        Err(answer) => return answer,
    };
    let asked: PartsRequest = match serde_json::from_slice(request.body()) {
        Ok(a) => a,
        Err(e) => {
            return api::error(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                format!("the body must be a JSON object with `upload_id` and `part_numbers`: {e}"),
            );
        }
    };
    let max_part = MAX_PARTS as u32;
    if asked.upload_id.is_empty()
        || asked.part_numbers.is_empty()
        || asked.part_numbers.len() > PART_URLS_PER_ANSWER
        || asked
            .part_numbers
            .iter()
            .any(|n| !(1..=max_part).contains(n))
    {
        return api::error(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            format!(
                "`upload_id` must be given and `part_numbers` must hold 1 to {PART_URLS_PER_ANSWER} part numbers from 1 to {max_part}"
            ),
        );
    }
    let expires = chrono::Utc::now().timestamp() + UPLOAD_EXPIRY_SECONDS;
    let urls = match ctx
        .store
        .presign_parts(
            &batch.object_key,
            &asked.upload_id,
            &asked.part_numbers,
            expires,
        )
        .await
    {
        Ok(urls) => urls,
        Err(e) => return api::unavailable("storage", &e),
    };
    api::json(
        StatusCode::OK,
        &PartUrls {
            expires_at: expiry(expires),
            parts: asked
                .part_numbers
                .iter()
                .zip(urls)
                .map(|(&part_number, url)| PartUrl { part_number, url })
                .collect(),
        },
    )
}

/// `POST /v1/batches/{batch_id}/complete`: the client has uploaded every
/// part of a multipart upload and sends their ETags; the parts are joined
/// into the batch's object, which the loader then loads. Completing again
/// once the object is there answers the same.
async fn complete_upload(
    ctx: &Context,
    prefix: &str,
    batch_id: &str,
    request: &Request<Bytes>,
) -> Response<Bytes> {
    let batch = match find_batch(ctx, batch_id, request).await {
        Ok(b) => b,
        Err(answer) => return answer,
    };
    let complete: CompleteRequest = match serde_json::from_slice(request.body()) {
        Ok(c) => c,
        Err(e) => {
            return api::error(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                format!(
                    "the body must be a JSON object with `upload_id` and `parts` (each with `part_number` and `etag`): {e}"
                ),
            );
        }
    };
    let metadata = BTreeMap::from([
        ("batch-id".to_string(), batch.answer.batch_id.to_string()),
        ("dataset".to_string(), batch.answer.dataset.clone()),
    ]);
    let done = Completed {
        batch_id: batch.answer.batch_id,
        status_url: format!("{prefix}/v1/batches/{}", batch.answer.batch_id),
    };
    match ctx
        .store
        .complete_multipart(
            &batch.object_key,
            &complete.upload_id,
            &complete.parts,
            &metadata,
        )
        .await
    {
        Ok(()) => api::json(StatusCode::ACCEPTED, &done),
        Err(StoreError::InvalidUpload(reason)) => {
            // A retried completion whose first try went through.
            if let Ok(Some(_)) = ctx.store.head(&batch.object_key).await {
                return api::json(StatusCode::ACCEPTED, &done);
            }
            api::error(StatusCode::BAD_REQUEST, ErrorCode::InvalidUpload, reason)
        }
        Err(e) => api::unavailable("storage", &e),
    }
}

/// The time of a Unix timestamp (now, for one out of range).
fn expiry(timestamp: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(timestamp, 0).unwrap_or_else(chrono::Utc::now)
}

/// The metadata a stored batch carries, as S3 user metadata.
fn object_metadata(
    batch_id: uuid::Uuid,
    dataset: &str,
    records: i64,
    sha256: &str,
) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("batch-id".to_string(), batch_id.to_string()),
        ("dataset".to_string(), dataset.to_string()),
        ("records".to_string(), records.to_string()),
        ("sha256".to_string(), sha256.to_string()),
    ])
}
