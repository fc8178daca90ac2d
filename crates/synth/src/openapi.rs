//! The API's OpenAPI 3 document, built from the datasets.
//!
//! The same document is written as `openapi.json` for clients and, with the
//! API Gateway integrations and request validators added, becomes the REST
//! API's body in the app stack.

use serde_json::{Map, Value, json};

use pipeline_contract::{
    CURSOR_PATTERN, DEFAULT_PAGE, IDEMPOTENCY_KEY_PATTERN, MAX_PAGE, MAX_PAGE_BYTES,
    PART_URLS_PER_ANSWER, Required, Scope,
};
use pipeline_dataset::{ColumnType, Dataset};
use pipeline_spec::Spec;
use pipeline_spec::model::AuthMode;

/// Which function serves an operation.
#[derive(Clone, Copy)]
enum Target {
    Ingest,
    Query,
}

impl Target {
    /// The function whose `live` alias serves the route.
    fn function(self) -> &'static str {
        match self {
            Target::Ingest => "IngestFunction",
            Target::Query => "QueryFunction",
        }
    }
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

fn json_response(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

pub use crate::context::model_name;

/// The answers every operation can give besides its own: a refused key or
/// signature (403) and throttling (429) from API Gateway, and 503 when the
/// database or storage does not answer.
fn common_responses(responses: &mut Value) {
    if let Value::Object(map) = responses {
        map.insert(
            "401".into(),
            error_response("With scoped tokens: the access token is missing, invalid or expired, or has none of the operation's scopes."),
        );
        map.insert(
            "403".into(),
            error_response("No valid credentials: the API key or signature is missing or wrong; with scoped tokens, the token's scopes do not cover the dataset, or the web ACL blocked the client."),
        );
        map.insert(
            "429".into(),
            error_response("Too many requests: slow down and retry."),
        );
        let mut unavailable = error_response(
            "The database or storage does not answer, or is busy (every connection in use); retry after `Retry-After` seconds.",
        );
        unavailable["headers"] = json!({"Retry-After": {
            "description": "Seconds to wait before retrying. Absent when retrying cannot help (a read stopped at its time limit).",
            "schema": {"type": "integer", "minimum": 0}
        }});
        map.insert("503".into(), unavailable);
    }
}

/// The JSON Schema (OpenAPI 3.0 flavour) of a column's values.
fn column_schema(kind: ColumnType, nullable: bool) -> Map<String, Value> {
    let mut schema = Map::new();
    match kind {
        // Any JSON value.
        ColumnType::Jsonb => {}
        // API Gateway models take no `decimal` format: numerics are strings.
        ColumnType::Numeric => {
            schema.insert("type".into(), json!("string"));
            schema.insert(
                "description".into(),
                json!("A decimal number, as a string."),
            );
        }
        _ => {
            let (kind, format) = kind.json_schema();
            schema.insert("type".into(), json!(kind));
            if let Some(format) = format {
                schema.insert("format".into(), json!(format));
            }
        }
    }
    if nullable {
        schema.insert("nullable".into(), json!(true));
    }
    schema
}

fn record_schema(name: &str, dataset: &Dataset) -> Value {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for column in &dataset.columns {
        let mut schema = column_schema(column.kind, column.nullable);
        if !column.nullable {
            required.push(json!(column.name));
        }
        let left_out = column
            .default
            .as_ref()
            .map(|d| format!("A batch that leaves it out sets `{d}`."));
        let description = [column.description.clone(), left_out]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        if !description.is_empty() {
            schema.insert("description".into(), json!(description));
        }
        properties.insert(column.name.clone(), Value::Object(schema));
    }
    let mut description = format!(
        "A record of dataset `{name}`, sent as {}; key: {}.",
        dataset.format.media_type(),
        dataset.primary_key.join(", ")
    );
    if let Some(d) = &dataset.description {
        description = format!("{d} {description}");
    }
    json!({
        "type": "object",
        "description": description,
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

/// How a dataset's batches write their records, where they differ from
/// the records the API answers: the CSV dialect and the columns' formats.
fn dialect(dataset: &Dataset) -> String {
    let mut out = String::new();
    if dataset.format == pipeline_dataset::Format::Csv {
        let csv = dataset.csv();
        out.push_str(match csv.header {
            true => ", with a header line",
            false => ", without a header line",
        });
        if let Some(described) = csv.describe() {
            out.push_str(&format!(" ({described})"));
        }
    }
    for column in &dataset.columns {
        if let Some(written) = column.written_as() {
            out.push_str(&format!("; `{}` is {written}", column.name));
        }
    }
    out
}

/// The query parameters that filter a dataset's records.
fn filter_parameters(dataset: &Dataset) -> Vec<Value> {
    let mut params = Vec::new();
    for column in dataset.filterable.iter().filter_map(|c| dataset.column(c)) {
        let schema = Value::Object(column_schema(column.kind, false));
        let name = &column.name;
        params.push(json!({
            "name": name,
            "in": "query",
            "required": false,
            "description": format!("Only records whose `{name}` equals this value."),
            "schema": schema,
        }));
        if column.kind.is_ordered() {
            for (suffix, words) in [("gte", "is at least"), ("lt", "is below")] {
                params.push(json!({
                    "name": format!("{name}.{suffix}"),
                    "in": "query",
                    "required": false,
                    "description": format!("Only records whose `{name}` {words} this value."),
                    "schema": schema,
                }));
            }
        }
    }
    params
}

/// Builds the document. With `aws`, API Gateway's integrations, validators,
/// gateway responses and key source are added, and `Fn::Sub` objects stand
/// for the alias ARNs (built from the function's ARN: a `Ref` to an alias
/// would also do in AWS, but not in emulators).
///
/// Each dataset has its own paths, so that each operation's body, filters
/// and records are exactly that dataset's.
pub fn document(env: &str, spec: &Spec, aws: bool) -> Value {
    let integration = |target: Target| {
        json!({
            "type": "aws_proxy",
            "httpMethod": "POST",
            "passthroughBehavior": "when_no_match",
            "uri": {"Fn::Sub": format!(
                "arn:${{AWS::Partition}}:apigateway:${{AWS::Region}}:lambda:path/2015-03-31/functions/${{{}.Arn}}:live/invocations",
                target.function()
            )},
        })
    };
    let op = |target: Target, mut operation: Value| {
        common_responses(&mut operation["responses"]);
        if aws && let Value::Object(map) = &mut operation {
            map.insert(
                "x-amazon-apigateway-integration".into(),
                integration(target),
            );
        }
        operation
    };
    let batch_id = json!({"name": "batch_id", "in": "path", "required": true,
                          "description": "The batch's id, as `POST .../batches` or `.../uploads` answered it.",
                          "schema": {"type": "string", "format": "uuid"}});

    let mut paths = Map::new();
    paths.insert(
        "/v1/health".into(),
        json!({"get": op(Target::Query, json!({
            "operationId": "health",
            "summary": "Whether the API and its database answer.",
            "responses": {
                "200": json_response("Healthy.", schema_ref("Health")),
            }
        }))}),
    );
    for (name, dataset) in &spec.datasets {
        let model = model_name(name);
        let media_type = dataset.format.media_type();
        paths.insert(
            format!("/v1/datasets/{name}/batches"),
            json!({"post": op(Target::Ingest, json!({
                "operationId": format!("postBatch{model}"),
                "summary": format!("Send a batch of `{name}` records inline."),
                "description": format!("The body holds the records as {media_type}{}. Every record is checked; a batch with any invalid record is rejected whole and nothing is stored. A batch whose body, written as a JSON string (quotes and line breaks escaped, as Lambda receives it), is above {} KiB goes through an upload. The body may be sent compressed, with `Content-Encoding: gzip` or `deflate`: API Gateway decodes it before the batch is checked, and the inline limit counts the decoded body (zstd batches go through an upload). The header is API Gateway's, not a parameter of the operation: a coding it does not support, or a body not in the coding named, is answered 415 by API Gateway.",
                    dialect(dataset),
                    spec.api.max_inline_batch_kib),
                "parameters": [
                    {"name": "Idempotency-Key", "in": "header", "required": false,
                     "description": "A retry with the same key returns the first answer and stores nothing new.",
                     "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN}}
                ],
                "requestBody": {
                    "required": true,
                    "content": {media_type: {"schema": {"type": "string", "minLength": 1}}}
                },
                "responses": {
                    "202": json_response("Accepted and stored; loading follows.", schema_ref("BatchAccepted")),
                    "400": json_response("Invalid records (`invalid_batch`, with each record's line and column) or an invalid Idempotency-Key (`bad_request`); nothing was stored.", schema_ref("BatchRejected")),
                    "409": error_response("The Idempotency-Key was used for a batch with a different body."),
                    "413": error_response("The batch is larger than the inline limit; use an upload."),
                    "415": error_response(&format!("The content type is not `{media_type}`, or the body is not in the `Content-Encoding` it names (answered by API Gateway).")),
                }
            }))}),
        );
        paths.insert(
            format!("/v1/datasets/{name}/uploads"),
            json!({"post": op(Target::Ingest, json!({
                "operationId": format!("createUpload{model}"),
                "summary": format!("Start a large batch of `{name}` records: get presigned upload URLs."),
                "requestBody": {"required": true, "content": {"application/json": {"schema": schema_ref(&format!("UploadRequest{model}"))}}},
                "responses": {
                    "201": json_response("Upload URLs, valid until `expires_at`.", schema_ref("Upload")),
                    "400": error_response("Invalid request."),
                    "200": json_response("A retry with the idempotency key of a batch whose upload is over (it is loading, loaded or failed): the batch, without any URL (none is handed out that could replace its object); its status is at `status_url`.", schema_ref("Upload")),
                }
            }))}),
        );
        let mut params = vec![
            json!({"name": "limit", "in": "query", "required": false,
                   "description": "Most records in the page.",
                   "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": DEFAULT_PAGE}}),
            json!({"name": "cursor", "in": "query", "required": false,
                   "description": "The `next_cursor` of the previous page of the same read (the same range filters).",
                   "schema": {"type": "string", "pattern": CURSOR_PATTERN}}),
        ];
        params.extend(filter_parameters(dataset));
        paths.insert(
            format!("/v1/datasets/{name}/records"),
            json!({"get": op(Target::Query, json!({
                "operationId": format!("listRecords{model}"),
                "summary": format!("Read `{name}` records from a read replica, a page at a time: in key order, or, with range filters, in the order of the first of their columns the dataset declares and then the key's. A page holds up to `limit` records, fewer when more would take over {MAX_PAGE_BYTES} bytes, and `next_cursor` goes on from where it stopped."),
                "parameters": params,
                "responses": {
                    "200": json_response("A page of records.", schema_ref(&format!("RecordsPage{model}"))),
                    "400": error_response("Invalid filter, limit or cursor."),
                }
            }))}),
        );
    }
    paths.insert(
        "/v1/batches/{batch_id}/complete".into(),
        json!({"post": op(Target::Ingest, json!({
            "operationId": "completeUpload",
            "summary": "Finish a multipart upload: join its parts into the batch, which then loads.",
            "parameters": [batch_id],
            "requestBody": {"required": true, "content": {"application/json": {"schema": schema_ref("UploadComplete")}}},
            "responses": {
                "202": json_response("The batch is stored; loading follows. Completing again answers the same.", schema_ref("UploadCompleted")),
                "400": error_response("A part is missing, out of order, or its ETag does not match; the upload can be completed again once fixed."),
                "404": error_response("No such batch."),
            }
        }))}),
    );
    paths.insert(
        "/v1/batches/{batch_id}/parts".into(),
        json!({"post": op(Target::Ingest, json!({
            "operationId": "presignParts",
            "summary": format!("URLs of parts of a multipart upload that its answer listed without one (it holds at most {PART_URLS_PER_ANSWER}), up to {PART_URLS_PER_ANSWER} at a time."),
            "parameters": [batch_id],
            "requestBody": {"required": true, "content": {"application/json": {"schema": schema_ref("PartsRequest")}}},
            "responses": {
                "200": json_response("The parts' URLs, in the order asked, valid until `expires_at`.", schema_ref("PartUrls")),
                "400": error_response("Invalid request."),
                "404": error_response("No such batch."),
                "409": error_response("The batch's upload is over (it is loading, loaded or failed): no URL is handed out for it."),
            }
        }))}),
    );
    paths.insert(
        "/v1/batches/{batch_id}".into(),
        json!({"get": op(Target::Query, json!({
            "operationId": "getBatch",
            "summary": "Status of a batch.",
            "parameters": [batch_id],
            "responses": {
                "200": json_response("The batch's status.", schema_ref("BatchStatus")),
                "404": error_response("No such batch."),
            }
        }))}),
    );
    if aws && !spec.api.cors_origins.is_empty() {
        for path in paths.values_mut() {
            if let Value::Object(ops) = path {
                ops.insert(
                    "options".into(),
                    json!({
                        "summary": "CORS preflight.",
                        "security": [],
                        "responses": {"204": {"description": "Allowed methods and headers."}},
                        "x-amazon-apigateway-integration": integration(Target::Query),
                    }),
                );
            }
        }
    }

    let mut schemas = wire_schemas();
    let upload_request = schemas.shift_remove("UploadRequest").unwrap_or_default();
    let page = schemas.shift_remove("RecordsPage").unwrap_or_default();
    for (name, dataset) in &spec.datasets {
        let model = model_name(name);
        let mut request = upload_request.clone();
        if let Some(kind) = request.pointer_mut("/properties/content_type") {
            kind["enum"] = json!([dataset.format.media_type()]);
        }
        schemas.insert(format!("UploadRequest{model}"), request);
        schemas.insert(format!("Record{model}"), record_schema(name, dataset));
        let mut records = page.clone();
        if let Some(items) = records.pointer_mut("/properties/records/items") {
            *items = schema_ref(&format!("Record{model}"));
        }
        schemas.insert(format!("RecordsPage{model}"), records);
    }

    let mut components = Map::new();
    components.insert("schemas".into(), Value::Object(schemas));
    let mut security = json!([]);
    match spec.api.auth {
        AuthMode::ApiKey => {
            components.insert(
                "securitySchemes".into(),
                json!({
                    "api_key": {"type": "apiKey", "name": "x-api-key", "in": "header"}
                }),
            );
            security = json!([{"api_key": []}]);
        }
        AuthMode::Iam => {
            let mut scheme = json!({"type": "apiKey", "name": "Authorization", "in": "header",
                                    "description": "AWS Signature Version 4."});
            if aws {
                scheme["x-amazon-apigateway-authtype"] = json!("awsSigv4");
            }
            components.insert("securitySchemes".into(), json!({"sigv4": scheme}));
            security = json!([{"sigv4": []}]);
        }
        AuthMode::Cognito => {
            let scheme = cognito_scheme(env, spec, aws);
            let mut schemes = json!({"cognito": scheme});
            security = json!([{"cognito": []}]);
            if spec.api.metering_keys {
                schemes["api_key"] = json!({"type": "apiKey", "name": "x-api-key", "in": "header",
                                            "description": "The client's metering key, beside its token."});
                security = json!([{"cognito": [], "api_key": []}]);
            }
            // Each operation names its scopes (`scope_operations`).
            components.insert("securitySchemes".into(), schemes);
        }
        AuthMode::None => {}
    }

    let mut doc = json!({
        "openapi": "3.0.1",
        "info": {
            "title": format!("{}-{env}-api", spec.project),
            "version": "1",
            "description": format!("Ingestion API of {} ({env}).", spec.project),
        },
        "paths": paths,
        "components": components,
        "security": security,
    });
    if spec.api.auth == AuthMode::Cognito {
        scope_operations(&mut doc, spec);
    }
    if aws {
        doc["x-amazon-apigateway-api-key-source"] = json!("HEADER");
        doc["x-amazon-apigateway-request-validators"] = json!({
            "params": {"validateRequestParameters": true, "validateRequestBody": false},
        });
        doc["x-amazon-apigateway-request-validator"] = json!("params");
        doc["x-amazon-apigateway-gateway-responses"] = gateway_responses();
    } else {
        doc["servers"] = json!([{
            "url": format!("https://{{api_id}}.execute-api.{}.amazonaws.com/{}", spec.region, super::context::STAGE),
            "variables": {"api_id": {"default": "api_id", "description": "The REST API's id (`pipeline outputs`)."}},
        }]);
    }
    doc
}

/// The token endpoint of an environment's user pool: its domain is the
/// project, the environment and the account (domains are unique across
/// AWS), as the app template names it.
pub fn token_url(env: &str, spec: &Spec) -> String {
    format!(
        "https://{}-{env}-{}.auth.{}.amazoncognito.com/oauth2/token",
        spec.project,
        spec.account.as_deref().unwrap_or_default(),
        spec.region
    )
}

/// The security scheme of `auth: cognito`: OAuth 2.0 client credentials
/// with a read and a write scope per dataset for clients; for API Gateway,
/// its Cognito user pools authorizer over the app stack's user pool, which
/// checks an access token's scopes against each operation's.
fn cognito_scheme(env: &str, spec: &Spec, aws: bool) -> Value {
    if aws {
        return json!({
            "type": "apiKey", "name": "Authorization", "in": "header",
            "x-amazon-apigateway-authtype": "cognito_user_pools",
            "x-amazon-apigateway-authorizer": {
                "type": "cognito_user_pools",
                "providerARNs": [{"Fn::GetAtt": ["ApiUserPool", "Arn"]}],
            },
        });
    }
    let scopes: Map<String, Value> = Scope::all(spec.datasets.keys().map(String::as_str))
        .into_iter()
        .map(|s| (s.qualified(), json!(s.description())))
        .collect();
    json!({
        "type": "oauth2",
        "description": "An access token of the environment's Cognito user pool (client credentials), as `Authorization: Bearer <token>`.",
        "flows": {"clientCredentials": {"tokenUrl": token_url(env, spec), "scopes": scopes}},
    })
}

/// Each operation's scopes (the contract's [`Required`]): a dataset's
/// routes take its write scope (sending batches) or its read scope
/// (records); the batch routes take any scope of the kind, and the
/// handlers check the batch's dataset.
fn scope_operations(doc: &mut Value, spec: &Spec) {
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let scopes: Vec<String> = Required::of(&parts)
            .list(spec.datasets.keys().map(String::as_str))
            .iter()
            .map(Scope::qualified)
            .collect();
        let mut requirement = json!({"cognito": scopes});
        if spec.api.metering_keys {
            requirement["api_key"] = json!([]);
        }
        for (method, operation) in item.as_object_mut().into_iter().flatten() {
            if method != "options" {
                operation["security"] = json!([requirement]);
            }
        }
    }
}

/// The schemas of the API's bodies, from the contract's types, as OpenAPI
/// 3.0 components. `UploadRequest` and `RecordsPage` are made per dataset
/// from the ones here.
fn wire_schemas() -> Map<String, Value> {
    use pipeline_contract as wire;
    let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
    generator.subschema_for::<wire::ErrorBody>();
    generator.subschema_for::<wire::BatchRejected>();
    generator.subschema_for::<wire::BatchAccepted>();
    generator.subschema_for::<wire::Batch>();
    generator.subschema_for::<wire::UploadRequest>();
    generator.subschema_for::<wire::Upload>();
    generator.subschema_for::<wire::PartsRequest>();
    generator.subschema_for::<wire::PartUrls>();
    generator.subschema_for::<wire::CompleteRequest>();
    generator.subschema_for::<wire::Completed>();
    generator.subschema_for::<wire::Health>();
    generator.subschema_for::<wire::RecordsPage<Value>>();
    let mut schemas = generator.take_definitions(true);
    for schema in schemas.values_mut() {
        tidy(schema);
    }
    schemas
}

/// Drops schemars' `uint32`/`uint64` formats, which OpenAPI does not
/// define (`minimum: 0` says the same), and joins the lines of
/// descriptions taken from doc comments (paragraphs stay apart).
fn tidy(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            if map
                .get("format")
                .and_then(Value::as_str)
                .is_some_and(|f| f.starts_with("uint"))
            {
                map.remove("format");
            }
            if let Some(Value::String(text)) = map.get_mut("description") {
                *text = text
                    .split("\n\n")
                    .map(|paragraph| paragraph.replace('\n', " "))
                    .collect::<Vec<_>>()
                    .join("\n\n");
            }
            map.values_mut().for_each(tidy);
        }
        Value::Array(items) => items.iter_mut().for_each(tidy),
        _ => {}
    }
}

/// Answers made by API Gateway itself (a refused key, throttling, a body
/// above its limit, a failed integration) in the API's own error shape, so
/// that every answer of the API is `{"error", "message"}`. The types are
/// those of "Gateway response types for API Gateway"; `messageString` is
/// already a quoted JSON string.
fn gateway_responses() -> Value {
    let mut responses = Map::new();
    use pipeline_contract::ErrorCode;
    for (kind, code) in [
        ("DEFAULT_4XX", ErrorCode::BadRequest),
        ("DEFAULT_5XX", ErrorCode::Unavailable),
        ("RESOURCE_NOT_FOUND", ErrorCode::NotFound),
        ("WAF_FILTERED", ErrorCode::Forbidden),
        ("UNAUTHORIZED", ErrorCode::Forbidden),
        ("ACCESS_DENIED", ErrorCode::Forbidden),
        ("INVALID_API_KEY", ErrorCode::Forbidden),
        ("MISSING_AUTHENTICATION_TOKEN", ErrorCode::Forbidden),
        ("INVALID_SIGNATURE", ErrorCode::Forbidden),
        ("EXPIRED_TOKEN", ErrorCode::Forbidden),
        ("THROTTLED", ErrorCode::Throttled),
        ("QUOTA_EXCEEDED", ErrorCode::Throttled),
        ("REQUEST_TOO_LARGE", ErrorCode::TooLarge),
        ("UNSUPPORTED_MEDIA_TYPE", ErrorCode::UnsupportedMediaType),
    ] {
        responses.insert(
            kind.into(),
            json!({"responseTemplates": {"application/json": format!(
                "{{\"error\":\"{code}\",\"message\":$context.error.messageString}}"
            )}}),
        );
    }
    Value::Object(responses)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The router's routes (the contract's `ROUTES`) and the document's
    /// operations are the same set, for every shipped environment: a route
    /// added to one and not the other fails here.
    #[test]
    fn every_route_is_in_the_document_and_nothing_else() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../environments");
        for env in ["dev", "dit", "uat", "prod"] {
            let spec = pipeline_spec::Loader::new(Some(dir.clone()))
                .load(env)
                .map(|e| e.spec)
                .unwrap_or_else(|e| panic!("{env}: {e:?}"));
            let document = document(env, &spec, false);
            let documented: BTreeSet<(String, String)> = document["paths"]
                .as_object()
                .into_iter()
                .flatten()
                .flat_map(|(path, item)| {
                    item.as_object()
                        .into_iter()
                        .flatten()
                        .filter(|(method, _)| {
                            ["get", "post", "put", "delete", "patch"].contains(&method.as_str())
                        })
                        .map(move |(method, _)| (path.clone(), method.to_uppercase()))
                })
                .collect();
            let mut routed = BTreeSet::new();
            for (segments, methods) in pipeline_contract::ROUTES {
                let fill = |value: &str| {
                    let parts: Vec<&str> = segments
                        .iter()
                        .map(|s| if *s == "*" { value } else { s })
                        .collect();
                    format!("/{}", parts.join("/"))
                };
                let paths: Vec<String> = match segments.get(1) {
                    Some(&"datasets") => spec.datasets.keys().map(|d| fill(d)).collect(),
                    _ => vec![fill("{batch_id}")],
                };
                for path in paths {
                    for method in *methods {
                        routed.insert((path.clone(), method.to_string()));
                    }
                }
            }
            assert_eq!(documented, routed, "{env}");
        }
    }
}
