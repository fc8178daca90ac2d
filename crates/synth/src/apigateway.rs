//! API Gateway's rules for importing an OpenAPI document as a REST API,
//! beyond what OpenAPI itself requires. A generic OpenAPI validator does not
//! know them, and the emulator does not apply them all; the app stack's body
//! is checked against them before anything is sent.
//!
//! Source: "Amazon API Gateway important notes for REST APIs" and "OpenAPI
//! extensions for API Gateway" (API Gateway Developer Guide), and the `Model`
//! resource of the API Gateway API reference (model names are alphanumeric,
//! schemas are JSON Schema draft 4).

use serde_json::Value;

/// Schema keywords API Gateway's import refuses or drops in models.
const UNSUPPORTED_KEYWORDS: &[&str] = &[
    "discriminator",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "readOnly",
    "writeOnly",
    "example",
    "examples",
    "deprecated",
    "oneOf",
    "anyOf",
    "not",
];

/// Integration types of `x-amazon-apigateway-integration`.
const INTEGRATION_TYPES: &[&str] = &["aws", "aws_proxy", "http", "http_proxy", "mock"];

/// Every rule the document breaks, each as "where: what".
pub fn import_problems(doc: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    match doc.get("openapi").and_then(Value::as_str) {
        // API Gateway imports OpenAPI 2.0 and 3.0 only.
        Some(v) if v.starts_with("3.0.") => {}
        other => problems.push(format!(
            "openapi: API Gateway imports OpenAPI 3.0.x, found {other:?}"
        )),
    }
    if let Some(schemas) = doc
        .pointer("/components/schemas")
        .and_then(Value::as_object)
    {
        for (name, schema) in schemas {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric()) {
                problems.push(format!(
                    "components.schemas.{name}: model names must be alphanumeric"
                ));
            }
            check_schema(&format!("components.schemas.{name}"), schema, &mut problems);
        }
    }
    if let Some(schemes) = doc
        .pointer("/components/securitySchemes")
        .and_then(Value::as_object)
    {
        for (name, scheme) in schemes {
            if scheme.get("type").and_then(Value::as_str) != Some("apiKey") {
                problems.push(format!(
                    "components.securitySchemes.{name}: the type must be apiKey"
                ));
            }
        }
    }
    for (path, item) in doc
        .get("paths")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        check_path(path, &mut problems);
        for (method, operation) in item.as_object().into_iter().flatten() {
            let at = format!("paths.{path}.{method}");
            for (i, param) in operation
                .get("parameters")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                // Only name, in, required, schema (type) and description are
                // taken from parameters; anything else would be ignored.
                for key in param.as_object().into_iter().flatten().map(|(k, _)| k) {
                    if !["name", "in", "required", "schema", "description"].contains(&key.as_str())
                    {
                        problems.push(format!(
                            "{at}.parameters[{i}]: `{key}` is not supported in parameters"
                        ));
                    }
                }
                if let Some(schema) = param.get("schema") {
                    check_schema(&format!("{at}.parameters[{i}]"), schema, &mut problems);
                }
            }
            for (status, _) in operation
                .get("responses")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                if !(status.len() == 3 && status.chars().all(|c| c.is_ascii_digit())) {
                    problems.push(format!(
                        "{at}.responses.{status}: method responses need a 3-digit status code"
                    ));
                }
            }
            if let Some(integration) = operation.get("x-amazon-apigateway-integration") {
                let kind = integration
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if !INTEGRATION_TYPES.contains(&kind.to_ascii_lowercase().as_str()) {
                    problems.push(format!(
                        "{at}: x-amazon-apigateway-integration type `{kind}` is not one of {}",
                        INTEGRATION_TYPES.join(", ")
                    ));
                }
                // Lambda is always invoked with POST.
                if kind.eq_ignore_ascii_case("aws_proxy")
                    && integration.get("httpMethod").and_then(Value::as_str) != Some("POST")
                {
                    problems.push(format!(
                        "{at}: a Lambda proxy integration's httpMethod must be POST"
                    ));
                }
                if integration.get("uri").is_none() {
                    problems.push(format!("{at}: the integration has no uri"));
                }
            }
        }
    }
    problems
}

/// Path segments are alphanumerics, underscores, hyphens, periods, commas,
/// colons and whole-segment `{parameters}`.
fn check_path(path: &str, problems: &mut Vec<String>) {
    if !path.starts_with('/') {
        problems.push(format!("paths.{path}: a path starts with /"));
        return;
    }
    for segment in path[1..].split('/') {
        let param = segment.len() > 2 && segment.starts_with('{') && segment.ends_with('}');
        let text = if param {
            &segment[1..segment.len() - 1]
        } else {
            segment
        };
        let ok = !text.is_empty()
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.,:".contains(c) || (param && c == '+'));
        if !ok {
            problems.push(format!(
                "paths.{path}: segment `{segment}` must be alphanumerics, - _ . , : or a whole {{parameter}}"
            ));
        }
    }
}

fn check_schema(at: &str, schema: &Value, problems: &mut Vec<String>) {
    let Some(map) = schema.as_object() else {
        return;
    };
    for keyword in UNSUPPORTED_KEYWORDS {
        if map.contains_key(*keyword) {
            problems.push(format!("{at}: `{keyword}` is not supported"));
        }
    }
    match map.get("type") {
        None => {}
        Some(Value::String(kind)) => {
            // OpenAPI 3.0 types; `null` is OpenAPI 3.1 (3.0 has `nullable`).
            if !["string", "number", "integer", "boolean", "array", "object"]
                .contains(&kind.as_str())
            {
                problems.push(format!("{at}: type `{kind}` is not an OpenAPI 3.0 type"));
            }
            let format = map.get("format").and_then(Value::as_str);
            if kind == "number" && matches!(format, Some("int32" | "int64")) {
                problems.push(format!(
                    "{at}: numbers of format int32/int64 are not supported (use type integer)"
                ));
            }
        }
        Some(_) => problems.push(format!(
            "{at}: `type` must be one type name (OpenAPI 3.0 has `nullable` for null)"
        )),
    }
    if map.get("format").and_then(Value::as_str) == Some("decimal") {
        problems.push(format!(
            "{at}: the `decimal` format is not supported in models"
        ));
    }
    if let Some(Value::Object(properties)) = map.get("properties") {
        for (name, property) in properties {
            check_schema(&format!("{at}.properties.{name}"), property, problems);
        }
    }
    if let Some(items) = map.get("items") {
        check_schema(&format!("{at}.items"), items, problems);
    }
    if let Some(Value::Array(parts)) = map.get("allOf") {
        for (i, part) in parts.iter().enumerate() {
            check_schema(&format!("{at}.allOf[{i}]"), part, problems);
        }
    }
    if let Some(extra @ Value::Object(_)) = map.get("additionalProperties") {
        check_schema(&format!("{at}.additionalProperties"), extra, problems);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(schemas: Value, paths: Value) -> Value {
        json!({"openapi": "3.0.1", "info": {"title": "t", "version": "1"},
               "paths": paths, "components": {"schemas": schemas}})
    }

    #[test]
    fn a_clean_document_has_no_problem() {
        let d = doc(
            json!({"Record": {"type": "object", "properties": {"a": {"type": "integer", "nullable": true}}}}),
            json!({"/v1/datasets/page_views/records": {"get": {"responses": {"200": {"description": "ok"}}}},
                   "/v1/batches/{batch_id}": {"get": {"parameters": [{"name": "batch_id", "in": "path", "required": true, "schema": {"type": "string"}}],
                                                       "responses": {"404": {"description": "no"}}}}}),
        );
        assert_eq!(import_problems(&d), Vec::<String>::new());
    }

    #[test]
    fn each_rule_is_found() {
        let d = json!({
            "openapi": "3.1.0",
            "paths": {
                "/v1/x{id}": {"get": {
                    "parameters": [{"name": "q", "in": "query", "style": "form", "schema": {"type": ["integer", "null"]}}],
                    "responses": {"5XX": {"description": "x"}},
                    "x-amazon-apigateway-integration": {"type": "lambda", "httpMethod": "GET"}
                }},
                "/v1/a b": {}
            },
            "components": {
                "schemas": {
                    "Record_events": {"type": "object", "properties": {
                        "e": {"oneOf": [{"type": "null"}, {"type": "string"}]},
                        "n": {"type": "number", "format": "int64"},
                        "d": {"type": "string", "format": "decimal", "example": "1.5"},
                        "m": {"type": "integer", "exclusiveMinimum": true, "minimum": 0}
                    }},
                    "Kind": {"discriminator": {"propertyName": "k"}}
                },
                "securitySchemes": {"basic": {"type": "http", "scheme": "basic"}}
            }
        });
        let problems = import_problems(&d);
        let expected = [
            "openapi: API Gateway imports OpenAPI 3.0.x, found Some(\"3.1.0\")",
            "components.schemas.Kind: `discriminator` is not supported",
            "components.schemas.Record_events: model names must be alphanumeric",
            "components.schemas.Record_events.properties.d: `example` is not supported",
            "components.schemas.Record_events.properties.d: the `decimal` format is not supported in models",
            "components.schemas.Record_events.properties.e: `oneOf` is not supported",
            "components.schemas.Record_events.properties.m: `exclusiveMinimum` is not supported",
            "components.schemas.Record_events.properties.n: numbers of format int32/int64 are not supported (use type integer)",
            "components.securitySchemes.basic: the type must be apiKey",
            "paths./v1/x{id}: segment `x{id}` must be alphanumerics, - _ . , : or a whole {parameter}",
            "paths./v1/x{id}.get.parameters[0]: `style` is not supported in parameters",
            "paths./v1/x{id}.get.parameters[0]: `type` must be one type name (OpenAPI 3.0 has `nullable` for null)",
            "paths./v1/x{id}.get.responses.5XX: method responses need a 3-digit status code",
            "paths./v1/x{id}.get: x-amazon-apigateway-integration type `lambda` is not one of aws, aws_proxy, http, http_proxy, mock",
            "paths./v1/x{id}.get: the integration has no uri",
            "paths./v1/a b: segment `a b` must be alphanumerics, - _ . , : or a whole {parameter}",
        ];
        for e in expected {
            assert!(
                problems.iter().any(|p| p == e),
                "missing: {e}\nall: {problems:#?}"
            );
        }
        assert_eq!(problems.len(), expected.len(), "{problems:#?}");
    }
}
