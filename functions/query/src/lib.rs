//! The query function: `GET /v1/health`, `GET /v1/batches/{id}` and
//! `GET /v1/datasets/{dataset}/records`, reading from a read replica.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use pipeline_contract::{ErrorCode, READ_TIMEOUT_MS, RecordsPage};
use pipeline_shared::api::{self, Context};
use pipeline_shared::dataset::Dataset;
use pipeline_shared::db::{self, Cursor, DbError, Filter};

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
    /// Where the previous page ended.
    after: Option<Cursor>,
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
                    decode_cursor(dataset, &value)
                        .ok_or("`cursor` is not a cursor this API returned")?,
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
                if let Some(problem) = dataset
                    .column(column)
                    .and_then(|c| c.kind.query_value_problem(&value))
                {
                    return Err(format!("`{other}`: {problem}"));
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
    match db::records_cached(&client, name, dataset, &filters, after.as_ref(), limit).await {
        Ok(page) => api::json(
            StatusCode::OK,
            &RecordsPage {
                next_cursor: page.next.as_ref().map(encode_cursor),
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
        Err(DbError::Cursor) => bad_request(
            "`cursor` belongs to a read with other range filters; read from the first page, without `cursor`",
        ),
        // query_canceled: the role's (or local's) statement_timeout.
        Err(DbError::Postgres(e))
            if e.as_db_error().is_some_and(|d| d.code().code() == "57014") =>
        {
            tracing::warn!(error = %e, "a read passed its time limit");
            api::error(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                format!(
                    "the read took longer than {} s and was stopped; narrow it with filters",
                    READ_TIMEOUT_MS / 1000
                ),
            )
        }
        Err(e) => api::unavailable("the database", &e),
    }
}

/// A cursor is where a page ended ([`Cursor`]) as JSON, hex-encoded.
fn encode_cursor(cursor: &Cursor) -> String {
    let json = serde_json::to_vec(cursor).unwrap_or_default();
    json.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a cursor; one of earlier versions, the last key's values alone,
/// continues a read in key order.
fn decode_cursor(dataset: &Dataset, text: &str) -> Option<Cursor> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Vec<u8> = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect::<Option<_>>()?;
    if let Ok(cursor) = serde_json::from_slice::<Cursor>(&bytes) {
        return Some(cursor);
    }
    let after: Vec<String> = serde_json::from_slice(&bytes).ok()?;
    Some(Cursor {
        by: dataset.primary_key.clone(),
        after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset() -> Dataset {
        serde_json::from_value(serde_json::json!({
            "format": "ndjson",
            "columns": [
                {"name": "id", "type": "int"},
                {"name": "at", "type": "timestamptz"}
            ],
            "primary_key": ["id"],
            "on_conflict": "ignore",
            "filterable": ["at"]
        }))
        .expect("dataset")
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let d = dataset();
        let cursor = Cursor {
            by: vec!["at".into(), "id".into()],
            after: vec!["2024-01-31T10:00:00+00:00".into(), "7".into()],
        };
        assert_eq!(decode_cursor(&d, &encode_cursor(&cursor)), Some(cursor));
        assert_eq!(decode_cursor(&d, "zz"), None);
        assert_eq!(decode_cursor(&d, "abc"), None);
        // An earlier version's cursor: the key's values, in key order.
        let legacy: String = br#"["7"]"#.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            decode_cursor(&d, &legacy),
            Some(Cursor {
                by: vec!["id".into()],
                after: vec!["7".into()],
            })
        );
    }
}
