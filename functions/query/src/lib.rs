//! The query function: `GET /v1/health`, `GET /v1/batches/{id}` and
//! `GET /v1/datasets/{dataset}/records`, reading from a read replica.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use pipeline_contract::{ErrorCode, RecordsPage};
use pipeline_shared::api::{self, Context};
use pipeline_shared::dataset::Dataset;
use pipeline_shared::db::{self, DbError, Filter};

/// The function's name as the spec and the templates know it.
pub const NAME: &str = "query";

/// Records in a page when the request does not say.
pub use pipeline_contract::DEFAULT_PAGE as DEFAULT_LIMIT;
/// Most records in a page.
pub use pipeline_contract::MAX_PAGE as MAX_LIMIT;

/// Handles one API request.
pub async fn handle(ctx: &Context, request: Request<Bytes>) -> Response<Bytes> {
    let path = request.uri().path().to_string();
    let Some((_prefix, parts)) = api::route(&path) else {
        return api::no_route(request.method(), &path);
    };
    match (request.method(), parts.as_slice()) {
        (&Method::GET, ["v1", "health"]) => api::health(ctx).await,
        (&Method::GET, ["v1", "batches", id]) => batch(ctx, id).await,
        (&Method::GET, ["v1", "datasets", dataset, "records"]) => {
            records(ctx, dataset, request.uri().query()).await
        }
        _ => api::no_route(request.method(), &path),
    }
}

async fn batch(ctx: &Context, id: &str) -> Response<Bytes> {
    let Ok(id) = uuid::Uuid::try_parse(id) else {
        return api::error(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("there is no batch `{id}`: batch ids are UUIDs"),
        );
    };
    let client = match ctx.pool.get().await {
        Ok(c) => c,
        Err(e) => return api::unavailable("the database", &e),
    };
    match db::batch(&**client, id).await {
        Ok(Some(batch)) => api::json(StatusCode::OK, &batch.answer),
        Ok(None) => api::error(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("there is no batch {id}"),
        ),
        Err(e) => api::unavailable("the database", &e),
    }
}

fn bad_request(message: impl Into<String>) -> Response<Bytes> {
    api::error(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
}

/// What a records request asks for.
#[derive(Debug, PartialEq)]
struct RecordsQuery {
    filters: Vec<Filter>,
    /// Key of the last record of the previous page.
    after: Option<Vec<String>>,
    limit: u32,
}

/// Parses the query string into filters, a cursor and a limit.
fn parse_query(dataset: &Dataset, query: Option<&str>) -> Result<RecordsQuery, String> {
    let mut filters = Vec::new();
    let mut cursor = None;
    let mut limit = DEFAULT_LIMIT;
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|l| (1..=MAX_LIMIT).contains(l))
                    .ok_or_else(|| {
                        format!(
                            "`limit` takes a whole number from 1 to {MAX_LIMIT}, found `{value}`"
                        )
                    })?;
            }
            "cursor" => {
                cursor = Some(
                    decode_cursor(&value).ok_or("`cursor` is not a cursor this API returned")?,
                )
            }
            other => {
                let (column, op) = match other.rsplit_once('.') {
                    Some((c, "gte")) => (c, "gte"),
                    Some((c, "lt")) => (c, "lt"),
                    _ => (other, "eq"),
                };
                let filterable = dataset.filterable.iter().any(|f| f == column);
                let ordered = dataset.column(column).is_some_and(|c| c.kind.is_ordered());
                if !filterable || (op != "eq" && !ordered) {
                    let allowed = dataset.filterable.join(", ");
                    return Err(format!(
                        "`{other}` is not a filter of this dataset; the filterable columns are: {allowed}"
                    ));
                }
                let value = value.into_owned();
                filters.push(match op {
                    "gte" => Filter::Gte(column.to_string(), value),
                    "lt" => Filter::Lt(column.to_string(), value),
                    _ => Filter::Eq(column.to_string(), value),
                });
            }
        }
    }
    Ok(RecordsQuery {
        filters,
        after: cursor,
        limit,
    })
}

async fn records(ctx: &Context, name: &str, query: Option<&str>) -> Response<Bytes> {
    let Some(dataset) = ctx.datasets.get(name) else {
        return api::unknown_dataset(ctx, name);
    };
    let RecordsQuery {
        filters,
        after,
        limit,
    } = match parse_query(dataset, query) {
        Ok(q) => q,
        Err(message) => return bad_request(message),
    };
    let client = match ctx.pool.get().await {
        Ok(c) => c,
        Err(e) => return api::unavailable("the database", &e),
    };
    match db::records(&**client, name, dataset, &filters, after.as_deref(), limit).await {
        Ok(page) => api::json(
            StatusCode::OK,
            &RecordsPage {
                next_cursor: page.last_key.map(|k| encode_cursor(&k)),
                records: page.records,
            },
        ),
        Err(DbError::Postgres(e))
            if e.as_db_error()
                .is_some_and(|d| d.code().code().starts_with("22")) =>
        {
            let detail = e
                .as_db_error()
                .map(|d| d.message().to_string())
                .unwrap_or_default();
            bad_request(format!("a filter value does not fit its column: {detail}"))
        }
        Err(e) => api::unavailable("the database", &e),
    }
}

/// A cursor is the last key's values as a JSON array of strings, hex-encoded.
fn encode_cursor(key: &[serde_json::Value]) -> String {
    let texts: Vec<String> = key
        .iter()
        .map(|v| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect();
    let json = serde_json::to_vec(&texts).unwrap_or_default();
    json.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_cursor(text: &str) -> Option<Vec<String>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect();
    serde_json::from_slice(&bytes?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let key = vec![serde_json::json!("a b"), serde_json::json!(7)];
        let cursor = encode_cursor(&key);
        assert_eq!(
            decode_cursor(&cursor),
            Some(vec!["a b".to_string(), "7".to_string()])
        );
        assert_eq!(decode_cursor("zz"), None);
        assert_eq!(decode_cursor("abc"), None);
    }
}
