//! The query function: `GET /v1/health`, `GET /v1/batches/{id}` and
//! `GET /v1/datasets/{dataset}/records`, reading from a read replica.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use pipeline_contract::{ErrorCode, READ_TIMEOUT_MS, RecordsPage};
use pipeline_shared::api::{self, Access, Action, Context};
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
    let access = api::access(&request);
    match (request.method(), parts.as_slice()) {
        (&Method::GET, ["v1", "health"]) => api::health(ctx).await,
        (&Method::GET, ["v1", "batches", id]) => batch(ctx, id, &access).await,
        (&Method::GET, ["v1", "datasets", dataset, "records"])
            if let Some(refused) = api::refuse(&access, dataset, Action::Read) =>
        {
            refused
        }
        (&Method::GET, ["v1", "datasets", dataset, "records"]) => {
            records(ctx, dataset, request.uri().query()).await
        }
        _ => api::no_route(request.method(), &path),
    }
}

/// A batch's status, for a caller with either scope of its dataset; a
/// batch of another dataset is answered as missing.
async fn batch(ctx: &Context, id: &str, access: &Access) -> Response<Bytes> {
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
        Ok(Some(batch)) if access.sees_batches_of(&batch.answer.dataset) => {
            api::json(StatusCode::OK, &batch.answer)
        }
        Ok(_) => api::error(
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
    let bytes = pipeline_contract::cursor_bytes(text)?;
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

    /// API Gateway's REST event for `GET .../records` with these query
    /// parameters, the keys of its parameter maps in the order given.
    fn rest_event(params: &[(&str, &str)]) -> String {
        let single: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k:?}: {v:?}"))
            .collect();
        let multi: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k:?}: [{v:?}]"))
            .collect();
        format!(
            r#"{{"resource": "/v1/datasets/{{dataset}}/records",
                "path": "/v1/datasets/events/records", "httpMethod": "GET",
                "headers": {{"Host": "api.example.com"}}, "multiValueHeaders": {{"Host": ["api.example.com"]}},
                "queryStringParameters": {{{}}}, "multiValueQueryStringParameters": {{{}}},
                "pathParameters": {{"dataset": "events"}}, "stageVariables": null,
                "requestContext": {{"stage": "v1", "httpMethod": "GET", "resourcePath": "/v1/datasets/{{dataset}}/records",
                                    "path": "/v1/v1/datasets/events/records", "requestId": "r", "accountId": "123456789012",
                                    "apiId": "a", "identity": {{"sourceIp": "192.0.2.1"}}}},
                "body": null, "isBase64Encoded": false}}"#,
            single.join(", "),
            multi.join(", ")
        )
    }

    /// Two range filters on different columns: the records come in the
    /// order of the one declared first, however the event's maps are
    /// ordered and whatever order lambda_http writes the query string back
    /// in (that of a `HashMap`, which differs from map to map). Before, the
    /// first range filter of the rebuilt query string chose the order, so
    /// the same read changed order between requests and its cursors were
    /// refused at random.
    #[test]
    fn two_range_filters_read_in_one_order_whatever_the_event_gives() {
        let dataset: Dataset = serde_json::from_value(serde_json::json!({
            "format": "ndjson",
            "columns": [
                {"name": "id", "type": "bigint"},
                {"name": "at", "type": "timestamptz"},
                {"name": "user_id", "type": "bigint"},
                {"name": "kind", "type": "text"}
            ],
            "primary_key": ["id"],
            "on_conflict": "ignore",
            "filterable": ["kind", "user_id", "at"]
        }))
        .expect("dataset");
        let params = [
            ("user_id.gte", "10"),
            ("at.lt", "2024-02-01T00:00:00Z"),
            ("kind", "click"),
            ("at.gte", "2024-01-01T00:00:00Z"),
        ];
        let mut orders = std::collections::BTreeSet::new();
        for shift in 0..params.len() {
            for reversed in [false, true] {
                let mut these = params.to_vec();
                these.rotate_left(shift);
                if reversed {
                    these.reverse();
                }
                for _ in 0..4 {
                    let request = lambda_http::request::from_str(&rest_event(&these))
                        .expect("a REST API event");
                    let request = pipeline_shared::lambda::request(request);
                    let query = parse_query(&dataset, request.uri().query()).expect("a query");
                    assert_eq!(query.filters.len(), 4, "{:?}", request.uri());
                    let read =
                        db::read("events", &dataset, &query.filters, None, 10).expect("a read");
                    orders.insert(read.by);
                }
            }
        }
        let expected = vec!["at".to_string(), "id".to_string()];
        assert_eq!(orders, std::collections::BTreeSet::from([expected]));
    }

    /// The API document gives the cursor's form, so that a client (or
    /// schemathesis) knows `cursor=0` is not one: before, the document
    /// said only "a string", and `0` was schema-valid and refused. Every
    /// cursor the API makes has the form; a text without it is refused
    /// before it is read.
    #[test]
    fn cursors_have_the_form_the_document_gives() {
        let pattern = regex::Regex::new(pipeline_contract::CURSOR_PATTERN).expect("pattern");
        let cursor = Cursor {
            by: vec!["at".into(), "id".into()],
            after: vec!["2024-01-31T10:00:00+00:00".into(), "é\"7".into()],
        };
        assert!(pattern.is_match(&encode_cursor(&cursor)));
        for malformed in ["0", "", "abc", "zz", "7B22", "7b 22", "0x7b"] {
            assert!(!pattern.is_match(malformed), "{malformed:?}");
            assert_eq!(
                pipeline_contract::cursor_bytes(malformed),
                None,
                "{malformed:?}"
            );
        }
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let d = dataset();
        let cursor = Cursor {
            by: vec!["at".into(), "id".into()],
            after: vec!["2024-01-31T10:00:00+00:00".into(), "7".into()],
        };
        let upper = encode_cursor(&cursor).to_uppercase();
        assert_eq!(decode_cursor(&d, &encode_cursor(&cursor)), Some(cursor));
        assert_eq!(decode_cursor(&d, "zz"), None);
        assert_eq!(decode_cursor(&d, "abc"), None);
        assert_eq!(decode_cursor(&d, &upper), None);
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
