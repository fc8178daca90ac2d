//! What the API functions share: their context, routing, JSON responses.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{Response, StatusCode};
use serde::Serialize;

use crate::dataset::Dataset;
use crate::store::Store;

pub use pipeline_contract::{
    Access, Action, ErrorCode, MAX_IDEMPOTENCY_KEY, ROUTES, allowed_methods, event_body_len,
    valid_idempotency_key,
};
use pipeline_contract::{ErrorBody, Health, HealthStatus};

/// What the request's caller may do, as its entry point found it (Lambda's
/// event from the authorizer's claims, or `pipeline local`'s own check).
/// A request that carries none may do nothing: no entry point leaves it
/// out, so its absence is a fault, and it fails closed.
pub fn access<B>(request: &http::Request<B>) -> Access {
    request
        .extensions()
        .get::<Access>()
        .cloned()
        .unwrap_or(Access::Scopes(Vec::new()))
}

/// The 403 for a caller whose scopes do not allow `action` on `dataset`.
pub fn refuse(access: &Access, dataset: &str, action: Action) -> Option<Response<Bytes>> {
    if access.allows(dataset, action) {
        return None;
    }
    let verb = match action {
        Action::Read => "read",
        Action::Write => "send batches to",
    };
    Some(error(
        StatusCode::FORBIDDEN,
        ErrorCode::Forbidden,
        format!(
            "this token may not {verb} dataset `{dataset}`: it needs the scope `{}`, and it has {}",
            pipeline_contract::Scope::new(dataset, action).qualified(),
            access.describe()
        ),
    ))
}

/// Everything a handler needs, built once per process.
#[derive(Clone)]
pub struct Context {
    /// Environment name, such as `dev`.
    pub env: String,
    pub datasets: BTreeMap<String, Dataset>,
    pub store: Store,
    pub pool: deadpool_postgres::Pool,
    /// Largest inline batch, in bytes.
    pub max_inline_bytes: usize,
    /// Objects larger than this are loaded in parallel chunks of about this
    /// size, through `chunk_queue`.
    pub chunk_bytes: u64,
    /// Uploads larger than this are multipart uploads in parts of this size.
    pub upload_part_bytes: u64,
    /// Staged rows merged per transaction of a chunked batch's merge.
    pub merge_slice_rows: u64,
    /// The most a compressed upload may decode to, per byte of it.
    pub max_decoded_ratio: u64,
    /// Where chunk messages go; without one, every object loads as a whole.
    pub chunk_queue: Option<std::sync::Arc<dyn crate::chunks::ChunkQueue>>,
    /// Deliveries of a message before its queue dead-letters it (the
    /// redrive policy's `maxReceiveCount`): on the last one, a message that
    /// still fails fails its batch instead. `None`: never given up here.
    pub max_receives: Option<u32>,
    /// The datasets' definitions as the database holds them now.
    pub definitions: crate::db::Definitions,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("env", &self.env)
            .field("datasets", &self.datasets.keys().collect::<Vec<_>>())
            .field("store", &self.store)
            .finish()
    }
}

/// A JSON response.
pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Response<Bytes> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Bytes::from(bytes))
        .unwrap_or_else(|_| Response::new(Bytes::new()))
}

/// An error response: `{"error": code, "message": message}`.
pub fn error(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Response<Bytes> {
    json(
        status,
        &ErrorBody {
            error: code,
            message: message.into(),
        },
    )
}

/// The request path split after its `/v1/` (API Gateway may put a stage
/// name before it), and the prefix to build links with.
pub fn route(path: &str) -> Option<(String, Vec<&str>)> {
    let start = path
        .find("/v1/")
        .or_else(|| path.ends_with("/v1").then(|| path.len() - 3))?;
    let prefix = path[..start].to_string();
    let rest = path[start + 1..].trim_end_matches('/');
    Some((prefix, rest.split('/').collect()))
}

/// The definition a batch of `name` is checked against: the database's
/// current one (what the last migration made the tables), or this
/// version's own when the database has none it can read. `None`: no such
/// dataset.
pub async fn dataset<'c>(ctx: &'c Context, name: &str) -> Option<std::borrow::Cow<'c, Dataset>> {
    match ctx.definitions.current(&ctx.pool, name).await {
        Ok(Some(current)) => Some(std::borrow::Cow::Owned(current)),
        Ok(None) => ctx.datasets.get(name).map(std::borrow::Cow::Borrowed),
        Err(e) => {
            tracing::warn!(error = %e, "the datasets' current definitions could not be read; this version's serve");
            ctx.datasets.get(name).map(std::borrow::Cow::Borrowed)
        }
    }
}

/// 404 for an unknown dataset, naming the known ones.
pub fn unknown_dataset(ctx: &Context, name: &str) -> Response<Bytes> {
    let known: Vec<&str> = ctx.datasets.keys().map(String::as_str).collect();
    error(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        format!(
            "there is no dataset `{name}`; the datasets are: {}",
            known.join(", ")
        ),
    )
}

/// 405 (with `Allow`) for a method a path does not take, 404 for a path
/// no function serves.
pub fn no_route(method: &http::Method, path: &str) -> Response<Bytes> {
    let allowed = route(path).map_or(&[][..], |(_, parts)| allowed_methods(&parts));
    if !allowed.is_empty() {
        let allow = allowed.join(", ");
        let mut answer = error(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::MethodNotAllowed,
            format!("{path} takes {allow}, not {method}"),
        );
        if let Ok(value) = http::HeaderValue::from_str(&allow) {
            answer.headers_mut().insert(http::header::ALLOW, value);
        }
        return answer;
    }
    error(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        format!("no route for {method} {path}"),
    )
}

/// Seconds a client is asked to wait before retrying a 503
/// (`Retry-After`): about the pool's wait for a connection.
pub const RETRY_AFTER_SECONDS: u64 = 1;

/// 503 when a dependency fails or is busy (a full connection pool), with
/// `Retry-After`; the details go to the log, not the caller.
pub fn unavailable(what: &str, detail: &dyn std::fmt::Display) -> Response<Bytes> {
    tracing::error!(%detail, "{what} failed");
    let mut answer = error(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Unavailable,
        format!("{what} is unavailable; try again"),
    );
    answer.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from(RETRY_AFTER_SECONDS),
    );
    answer
}

/// `GET /v1/health`: 200 when the database answers, else 503. Both API
/// functions serve it, so that a new version of either can be checked
/// before it takes traffic.
pub async fn health(ctx: &Context) -> Response<Bytes> {
    let client = match ctx.pool.get().await {
        Ok(c) => c,
        Err(e) => return unavailable("the database", &e),
    };
    match crate::db::ping(&**client).await {
        Ok(()) => json(
            StatusCode::OK,
            &Health {
                status: HealthStatus::Ok,
                environment: ctx.env.clone(),
            },
        ),
        Err(e) => unavailable("the database", &e),
    }
}

/// The object key of a batch: `raw/<dataset>/<date>/<batch id>.<format>`.
pub fn object_key(
    dataset: &str,
    format: crate::dataset::Format,
    batch_id: uuid::Uuid,
    date: chrono::NaiveDate,
) -> String {
    let ext = match format {
        crate::dataset::Format::Ndjson => "ndjson",
        crate::dataset::Format::Csv => "csv",
    };
    format!("raw/{dataset}/{}/{batch_id}.{ext}", date.format("%Y-%m-%d"))
}

/// The object key of a batch stored compressed: the encoding's suffix
/// after the format's, as in `raw/events/2024-01-31/<id>.ndjson.gz`.
pub fn compressed_object_key(
    dataset: &str,
    format: crate::dataset::Format,
    batch_id: uuid::Uuid,
    date: chrono::NaiveDate,
    encoding: Option<pipeline_contract::ContentEncoding>,
) -> String {
    let key = object_key(dataset, format, batch_id, date);
    match encoding {
        Some(e) => format!("{key}.{}", e.extension()),
        None => key,
    }
}

/// Where the loader keeps the decoded copy of a compressed batch object,
/// so that it can load in chunks: `raw/events/<date>/<id>.ndjson.gz` has
/// its copy at `decoded/events/<date>/<id>.ndjson`, outside `raw/`, so that
/// storing it starts no notification (the data stack expires such copies).
/// `None` for an object that is not compressed.
pub fn decoded_object_key(key: &str) -> Option<String> {
    object_encoding(key)?;
    let plain = key.strip_prefix("raw/")?.rsplit_once('.')?.0;
    Some(format!("decoded/{plain}"))
}

/// How the object at `key` is compressed, from its suffix.
pub fn object_encoding(key: &str) -> Option<pipeline_contract::ContentEncoding> {
    use pipeline_contract::ContentEncoding;
    let ext = key.rsplit_once('.')?.1;
    [
        ContentEncoding::Gzip,
        ContentEncoding::Deflate,
        ContentEncoding::Zstd,
    ]
    .into_iter()
    .find(|e| e.extension() == ext)
}

/// The dataset and batch id of an object key made by [`object_key`].
pub fn parse_object_key(key: &str) -> Option<(&str, uuid::Uuid)> {
    let mut parts = key.split('/');
    if parts.next()? != "raw" {
        return None;
    }
    let dataset = parts.next()?;
    let _date = parts.next()?;
    let file = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    let id = file.split('.').next()?;
    Some((dataset, uuid::Uuid::try_parse(id).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_objects_have_their_decoded_copy_outside_raw() {
        let id = uuid::Uuid::nil();
        assert_eq!(
            decoded_object_key(&format!("raw/events/2024-02-29/{id}.ndjson.gz")),
            Some(format!("decoded/events/2024-02-29/{id}.ndjson"))
        );
        assert_eq!(
            decoded_object_key(&format!("raw/events/2024-02-29/{id}.csv.zst")),
            Some(format!("decoded/events/2024-02-29/{id}.csv"))
        );
        assert_eq!(
            decoded_object_key(&format!("raw/events/2024-02-29/{id}.csv")),
            None
        );
        assert_eq!(decoded_object_key("elsewhere/a.ndjson.gz"), None);
    }

    #[test]
    fn routes_ignore_a_stage_prefix() {
        assert_eq!(
            route("/v1/health"),
            Some((String::new(), vec!["v1", "health"]))
        );
        assert_eq!(
            route("/live/v1/batches/x/"),
            Some(("/live".to_string(), vec!["v1", "batches", "x"]))
        );
        assert_eq!(route("/other"), None);
    }

    #[test]
    fn other_methods_of_a_route_are_405_and_other_paths_404() {
        let answer = no_route(&http::Method::TRACE, "/v1/datasets/events/batches");
        assert_eq!(answer.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(answer.headers()[http::header::ALLOW], "POST");
        let answer = no_route(&http::Method::POST, "/live/v1/health");
        assert_eq!(answer.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(answer.headers()[http::header::ALLOW], "GET");
        assert_eq!(
            no_route(&http::Method::GET, "/v1/nothing").status(),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn object_keys_round_trip() {
        let id = uuid::Uuid::now_v7();
        let date = chrono::NaiveDate::from_ymd_opt(2024, 2, 29).unwrap_or_default();
        let key = object_key("events", crate::dataset::Format::Csv, id, date);
        assert_eq!(key, format!("raw/events/2024-02-29/{id}.csv"));
        assert_eq!(parse_object_key(&key), Some(("events", id)));
        assert_eq!(parse_object_key("raw/events/x.csv"), None);
        assert_eq!(object_encoding(&key), None);
        let key = compressed_object_key(
            "events",
            crate::dataset::Format::Csv,
            id,
            date,
            Some(pipeline_contract::ContentEncoding::Zstd),
        );
        assert_eq!(key, format!("raw/events/2024-02-29/{id}.csv.zst"));
        assert_eq!(parse_object_key(&key), Some(("events", id)));
        assert_eq!(
            object_encoding(&key),
            Some(pipeline_contract::ContentEncoding::Zstd)
        );
    }
}
