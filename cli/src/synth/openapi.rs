//! The API's OpenAPI 3 document, built from the datasets.
//!
//! The same document is written as `openapi.json` for clients and, with the
//! API Gateway integrations and request validators added, becomes the REST
//! API's body in the app stack.

use serde_json::{Map, Value, json};

use crate::spec::Spec;
use crate::spec::model::AuthMode;
use pipeline_shared::{ColumnType, Dataset};

/// Largest page of records the records endpoint returns.
pub const MAX_PAGE: u32 = 1000;
/// Most validation errors a rejected batch lists.
pub const MAX_ERRORS: u32 = 100;

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

fn record_schema(name: &str, dataset: &Dataset) -> Value {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for column in &dataset.columns {
        let (kind, format) = column.kind.json_schema();
        let mut schema = Map::new();
        if column.nullable {
            schema.insert("type".into(), json!([kind, "null"]));
        } else {
            schema.insert("type".into(), json!(kind));
            required.push(json!(column.name));
        }
        if let Some(format) = format {
            schema.insert("format".into(), json!(format));
        }
        if let Some(d) = &column.description {
            schema.insert("description".into(), json!(d));
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

/// Query parameters that filter records, across datasets.
fn filter_parameters(spec: &Spec) -> Vec<Value> {
    // Column name -> (datasets, types) so that a column shared by datasets is documented once.
    let mut filters: Vec<(String, Vec<String>, Vec<ColumnType>)> = Vec::new();
    for (name, dataset) in &spec.datasets {
        for column in dataset.filterable.iter().filter_map(|c| dataset.column(c)) {
            match filters.iter_mut().find(|(c, _, _)| *c == column.name) {
                Some((_, sets, kinds)) => {
                    sets.push(name.clone());
                    kinds.push(column.kind);
                }
                None => filters.push((column.name.clone(), vec![name.clone()], vec![column.kind])),
            }
        }
    }
    let mut params = Vec::new();
    for (column, sets, kinds) in filters {
        let datasets = sets
            .iter()
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let schema = match kinds.as_slice() {
            [only] => {
                let (_, format) = only.json_schema();
                match format {
                    Some(f) => json!({"type": "string", "format": f}),
                    None => json!({"type": "string"}),
                }
            }
            _ => json!({"type": "string"}),
        };
        params.push(json!({
            "name": column,
            "in": "query",
            "required": false,
            "description": format!("Only records whose `{column}` equals this value (datasets {datasets})."),
            "schema": schema,
        }));
        if kinds.iter().all(|k| k.is_ordered()) {
            for (suffix, words) in [("gte", "is at least"), ("lt", "is below")] {
                params.push(json!({
                    "name": format!("{column}.{suffix}"),
                    "in": "query",
                    "required": false,
                    "description": format!("Only records whose `{column}` {words} this value (datasets {datasets})."),
                    "schema": schema,
                }));
            }
        }
    }
    params
}

/// Builds the document. With `aws`, API Gateway's integrations, validators
/// and key source are added, and `Fn::Sub` objects stand for the alias ARNs
/// (built from the function's ARN: a `Ref` to an alias would also do in AWS,
/// but not in emulators).
pub fn document(env: &str, spec: &Spec, aws: bool) -> Value {
    let names: Vec<&String> = spec.datasets.keys().collect();
    let dataset_param = json!({
        "name": "dataset",
        "in": "path",
        "required": true,
        "description": "Name of the dataset.",
        "schema": {"type": "string", "enum": names},
    });
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
        if aws && let Value::Object(map) = &mut operation {
            map.insert(
                "x-amazon-apigateway-integration".into(),
                integration(target),
            );
        }
        operation
    };

    let mut records_params = vec![
        dataset_param.clone(),
        json!({"name": "limit", "in": "query", "required": false,
               "description": "Most records in the page.",
               "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 100}}),
        json!({"name": "cursor", "in": "query", "required": false,
               "description": "The `next_cursor` of the previous page.",
               "schema": {"type": "string"}}),
    ];
    records_params.extend(filter_parameters(spec));
    let pages: Vec<Value> = names
        .iter()
        .map(|n| schema_ref(&format!("RecordsPage_{n}")))
        .collect();

    let mut paths = Map::new();
    paths.insert(
        "/v1/health".into(),
        json!({"get": op(Target::Query, json!({
            "operationId": "health",
            "summary": "Whether the API and its database answer.",
            "responses": {
                "200": json_response("Healthy.", schema_ref("Health")),
                "503": error_response("The database does not answer."),
            }
        }))}),
    );
    paths.insert(
        "/v1/datasets/{dataset}/batches".into(),
        json!({"post": op(Target::Ingest, json!({
            "operationId": "postBatch",
            "summary": "Send a batch of records inline.",
            "description": format!("The body holds the records: NDJSON for datasets of format `ndjson`, CSV with a header line for `csv`. Every record is checked; a batch with any invalid record is rejected whole and nothing is stored. Batches above {} KiB go through an upload.", spec.api.max_inline_batch_kib),
            "parameters": [
                dataset_param,
                {"name": "Idempotency-Key", "in": "header", "required": false,
                 "description": "A retry with the same key returns the first answer and stores nothing new.",
                 "schema": {"type": "string", "minLength": 1, "maxLength": 128}}
            ],
            "requestBody": {
                "required": true,
                "content": {
                    "application/x-ndjson": {"schema": {"type": "string"}},
                    "text/csv": {"schema": {"type": "string"}}
                }
            },
            "responses": {
                "202": json_response("Accepted and stored; loading follows.", schema_ref("BatchAccepted")),
                "400": json_response("Invalid records; nothing was stored.", schema_ref("BatchRejected")),
                "404": error_response("No such dataset."),
                "409": error_response("The Idempotency-Key was used for a batch with a different body."),
                "413": error_response("The batch is larger than the inline limit; use an upload."),
                "415": error_response("The content type does not match the dataset's format."),
                "429": error_response("Too many requests."),
            }
        }))}),
    );
    paths.insert(
        "/v1/datasets/{dataset}/uploads".into(),
        json!({"post": op(Target::Ingest, json!({
            "operationId": "createUpload",
            "summary": "Start a large batch: get a presigned upload URL.",
            "parameters": [dataset_param],
            "requestBody": {"required": true, "content": {"application/json": {"schema": schema_ref("UploadRequest")}}},
            "responses": {
                "201": json_response("Upload URLs, valid until `expires_at`.", schema_ref("Upload")),
                "400": error_response("Invalid request."),
                "404": error_response("No such dataset."),
                "429": error_response("Too many requests."),
            }
        }))}),
    );
    paths.insert(
        "/v1/batches/{batch_id}/complete".into(),
        json!({"post": op(Target::Ingest, json!({
            "operationId": "completeUpload",
            "summary": "Finish a multipart upload: join its parts into the batch, which then loads.",
            "parameters": [{"name": "batch_id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}}],
            "requestBody": {"required": true, "content": {"application/json": {"schema": schema_ref("UploadComplete")}}},
            "responses": {
                "202": json_response("The batch is stored; loading follows. Completing again answers the same.", schema_ref("UploadCompleted")),
                "400": error_response("A part is missing, out of order, or its ETag does not match; the upload can be completed again once fixed."),
                "404": error_response("No such batch."),
                "429": error_response("Too many requests."),
            }
        }))}),
    );
    paths.insert(
        "/v1/batches/{batch_id}".into(),
        json!({"get": op(Target::Query, json!({
            "operationId": "getBatch",
            "summary": "Status of a batch.",
            "parameters": [{"name": "batch_id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}}],
            "responses": {
                "200": json_response("The batch's status.", schema_ref("BatchStatus")),
                "404": error_response("No such batch."),
            }
        }))}),
    );
    paths.insert(
        "/v1/datasets/{dataset}/records".into(),
        json!({"get": op(Target::Query, json!({
            "operationId": "listRecords",
            "summary": "Read records from a read replica, a page at a time in key order.",
            "parameters": records_params,
            "responses": {
                "200": json_response("A page of records.", json!({"oneOf": pages})),
                "400": error_response("Invalid filter, limit or cursor."),
                "404": error_response("No such dataset."),
            }
        }))}),
    );
    if aws && !spec.api.cors_origins.is_empty() {
        for path in paths.values_mut() {
            if let Value::Object(ops) = path {
                ops.insert(
                    "options".into(),
                    op(
                        Target::Query,
                        json!({
                            "summary": "CORS preflight.",
                            "security": [],
                            "responses": {"204": {"description": "Allowed methods and headers."}}
                        }),
                    ),
                );
            }
        }
    }

    let mut schemas = Map::new();
    schemas.insert("Error".into(), json!({
        "type": "object",
        "properties": {"error": {"type": "string", "description": "A stable code, such as `not_found`."},
                       "message": {"type": "string"}},
        "required": ["error", "message"],
    }));
    schemas.insert("ValidationError".into(), json!({
        "type": "object",
        "properties": {
            "line": {"type": "integer", "minimum": 1, "description": "Line of the batch, counting a CSV header as line 1."},
            "column": {"type": "string", "description": "The column (field) at fault, if one is."},
            "reason": {"type": "string"},
        },
        "required": ["line", "reason"],
    }));
    schemas.insert("BatchRejected".into(), json!({
        "type": "object",
        "properties": {
            "error": {"type": "string", "enum": ["invalid_batch"]},
            "errors": {"type": "array", "maxItems": MAX_ERRORS, "items": schema_ref("ValidationError")},
            "truncated": {"type": "boolean", "description": format!("True when more than {MAX_ERRORS} errors were found.")},
        },
        "required": ["error", "errors", "truncated"],
    }));
    schemas.insert(
        "BatchAccepted".into(),
        json!({
            "type": "object",
            "properties": {
                "batch_id": {"type": "string", "format": "uuid"},
                "dataset": {"type": "string"},
                "records": {"type": "integer", "minimum": 0},
                "sha256": {"type": "string", "description": "SHA-256 of the body as stored."},
                "status_url": {"type": "string"},
            },
            "required": ["batch_id", "dataset", "records", "sha256", "status_url"],
        }),
    );
    schemas.insert(
        "BatchStatus".into(),
        json!({
            "type": "object",
            "properties": {
                "batch_id": {"type": "string", "format": "uuid"},
                "dataset": {"type": "string"},
                "status": {"type": "string", "enum": ["received", "loading", "loaded", "failed"]},
                "records": {"type": ["integer", "null"]},
                "inserted": {"type": ["integer", "null"]},
                "duplicates": {"type": ["integer", "null"]},
                "received_at": {"type": "string", "format": "date-time"},
                "loaded_at": {"type": ["string", "null"], "format": "date-time"},
                "error": {"oneOf": [{"type": "null"}, schema_ref("ValidationError")]},
            },
            "required": ["batch_id", "dataset", "status", "received_at"],
        }),
    );
    schemas.insert("UploadRequest".into(), json!({
        "type": "object",
        "properties": {
            "size_bytes": {"type": "integer", "minimum": 1, "description": "Size of the batch to upload."},
            "content_type": {"type": "string", "enum": ["application/x-ndjson", "text/csv"]},
            "idempotency_key": {"type": "string", "maxLength": 128},
        },
        "required": ["size_bytes", "content_type"],
        "additionalProperties": false,
    }));
    schemas.insert("Upload".into(), json!({
        "type": "object",
        "description": "Either `url`, for a batch that fits in one part, or `upload_id`, `parts` and `complete_url`: PUT each part's bytes to its URL (in any order, in parallel), keep the `ETag` header of each answer, then POST them to `complete_url`.",
        "properties": {
            "batch_id": {"type": "string", "format": "uuid"},
            "expires_at": {"type": "string", "format": "date-time"},
            "method": {"type": "string", "enum": ["PUT"]},
            "url": {"type": "string", "description": "Presigned URL that takes one PUT of the whole batch, with no other credentials."},
            "upload_id": {"type": "string"},
            "parts": {"type": "array", "maxItems": 10000, "items": schema_ref("UploadPart")},
            "complete_url": {"type": "string"},
            "status_url": {"type": "string"},
        },
        "required": ["batch_id", "expires_at", "method", "status_url"],
    }));
    schemas.insert("UploadPart".into(), json!({
        "type": "object",
        "properties": {
            "part_number": {"type": "integer", "minimum": 1, "maximum": 10000},
            "offset": {"type": "integer", "minimum": 0, "description": "First byte of the batch in this part."},
            "size": {"type": "integer", "minimum": 1, "description": "Bytes in this part."},
            "url": {"type": "string", "description": "Presigned URL that takes one PUT of the part."},
        },
        "required": ["part_number", "offset", "size", "url"],
    }));
    schemas.insert("UploadComplete".into(), json!({
        "type": "object",
        "properties": {
            "upload_id": {"type": "string"},
            "parts": {"type": "array", "minItems": 1, "maxItems": 10000, "description": "Every part, in ascending order of part number.", "items": {
                "type": "object",
                "properties": {
                    "part_number": {"type": "integer", "minimum": 1, "maximum": 10000},
                    "etag": {"type": "string", "description": "The ETag header of the part's PUT answer."},
                },
                "required": ["part_number", "etag"],
                "additionalProperties": false,
            }},
        },
        "required": ["upload_id", "parts"],
        "additionalProperties": false,
    }));
    schemas.insert(
        "UploadCompleted".into(),
        json!({
            "type": "object",
            "properties": {
                "batch_id": {"type": "string", "format": "uuid"},
                "status_url": {"type": "string"},
            },
            "required": ["batch_id", "status_url"],
        }),
    );
    schemas.insert("Health".into(), json!({
        "type": "object",
        "properties": {"status": {"type": "string", "enum": ["ok"]}, "environment": {"type": "string"}},
        "required": ["status"],
    }));
    for (name, dataset) in &spec.datasets {
        schemas.insert(format!("Record_{name}"), record_schema(name, dataset));
        schemas.insert(format!("RecordsPage_{name}"), json!({
            "type": "object",
            "properties": {
                "records": {"type": "array", "maxItems": MAX_PAGE, "items": schema_ref(&format!("Record_{name}"))},
                "next_cursor": {"type": ["string", "null"], "description": "Pass as `cursor` for the next page; null on the last page."},
            },
            "required": ["records", "next_cursor"],
        }));
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
    if aws {
        doc["x-amazon-apigateway-api-key-source"] = json!("HEADER");
        doc["x-amazon-apigateway-request-validators"] = json!({
            "params": {"validateRequestParameters": true, "validateRequestBody": false},
        });
        doc["x-amazon-apigateway-request-validator"] = json!("params");
    } else {
        doc["servers"] = json!([{
            "url": format!("https://{{api_id}}.execute-api.{}.amazonaws.com/{}", spec.region, super::context::STAGE),
            "variables": {"api_id": {"default": "api_id", "description": "The REST API's id (`pipeline outputs`)."}},
        }]);
    }
    doc
}
