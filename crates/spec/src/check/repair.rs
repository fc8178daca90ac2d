//! Repairs a spec tree that has schema problems, so that the cross-field
//! rules can still run on it.

use serde_json::{Map, Value as Json};

use super::{Checker, Path, schema};
use crate::diag::Span;
use crate::yaml::{Node, Value};

/// Makes `value` fit the schema so that the cross-field rules can still run
/// on a spec with schema problems: unknown keys are dropped, wrong or
/// out-of-range values replaced by the nearest valid one, missing keys filled
/// in. Returns the dotted paths that were changed, whose rule problems would
/// only repeat the schema's.
pub fn repair(value: &mut Json) -> Vec<String> {
    let root = schema();
    let repairer = Repairer {
        defs: root.get("$defs").and_then(Json::as_object),
    };
    let mut changed = Vec::new();
    repairer.repair(root, value, "", &mut changed);
    changed
}

struct Repairer<'s> {
    defs: Option<&'s Map<String, Json>>,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl<'s> Repairer<'s> {
    fn resolve(&self, schema: &'s Json) -> &'s Json {
        Checker {
            defs: self.defs,
            problems: Vec::new(),
            shallow: true,
        }
        .resolve(schema)
    }

    /// A valid stand-in for a value of this schema.
    fn placeholder(&self, schema: &'s Json) -> Json {
        let schema = self.resolve(schema);
        if let Some(options) = schema
            .get("anyOf")
            .or_else(|| schema.get("oneOf"))
            .and_then(Json::as_array)
        {
            return options.first().map_or(Json::Null, |o| self.placeholder(o));
        }
        if let Some(first) = schema
            .get("enum")
            .and_then(Json::as_array)
            .and_then(|a| a.first())
        {
            return first.clone();
        }
        if let Some(c) = schema.get("const") {
            return c.clone();
        }
        let kind = match schema.get("type") {
            Some(Json::String(t)) => t.as_str(),
            Some(Json::Array(ts)) => ts.iter().filter_map(Json::as_str).next().unwrap_or("null"),
            _ => "null",
        };
        match kind {
            "integer" | "number" => schema.get("minimum").cloned().unwrap_or(Json::from(0)),
            "boolean" => Json::Bool(false),
            "string" => Json::String(String::new()),
            "array" => Json::Array(Vec::new()),
            "object" => {
                let mut map = Map::new();
                let props = schema.get("properties").and_then(Json::as_object);
                for key in schema
                    .get("required")
                    .and_then(Json::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Json::as_str)
                {
                    if let Some(p) = props.and_then(|p| p.get(key)) {
                        map.insert(key.to_string(), self.placeholder(p));
                    }
                }
                Json::Object(map)
            }
            _ => Json::Null,
        }
    }

    fn repair(&self, schema: &'s Json, value: &mut Json, path: &str, changed: &mut Vec<String>) {
        let schema = self.resolve(schema);
        let mut scratch = Checker {
            defs: self.defs,
            problems: Vec::new(),
            shallow: true,
        };
        // A cheap check on the value alone tells whether it fits, children aside.
        let fits = |v: &Json, s: &'s Json, scratch: &mut Checker<'s>| {
            scratch.problems.clear();
            let node = json_to_node(v);
            scratch.check(s, &node, &Path::default(), node.span);
            scratch.problems.is_empty()
        };
        if !fits(value, schema, &mut scratch) {
            let replacement = match (
                value.as_f64(),
                schema.get("minimum").and_then(Json::as_f64),
                schema.get("maximum").and_then(Json::as_f64),
            ) {
                (Some(v), Some(min), _) if v < min => schema["minimum"].clone(),
                (Some(v), _, Some(max)) if v > max => schema["maximum"].clone(),
                _ => self.placeholder(schema),
            };
            *value = replacement;
            changed.push(path.to_string());
            return;
        }
        match value {
            Json::Object(map) => {
                let props = schema.get("properties").and_then(Json::as_object);
                let extra = schema.get("additionalProperties").filter(|a| a.is_object());
                let keys: Vec<String> = map.keys().cloned().collect();
                for key in keys {
                    let sub = props.and_then(|p| p.get(&key)).or(extra);
                    match (sub, map.get_mut(&key)) {
                        (Some(sub), Some(v)) => self.repair(sub, v, &join(path, &key), changed),
                        _ => {
                            map.remove(&key);
                            changed.push(join(path, &key));
                        }
                    }
                }
                for key in schema
                    .get("required")
                    .and_then(Json::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Json::as_str)
                {
                    if !map.contains_key(key)
                        && let Some(p) = props.and_then(|p| p.get(key))
                    {
                        map.insert(key.to_string(), self.placeholder(p));
                        changed.push(join(path, key));
                    }
                }
            }
            Json::Array(items) => {
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter_mut().enumerate() {
                        self.repair(item_schema, item, &join(path, &i.to_string()), changed);
                    }
                }
            }
            _ => {}
        }
    }
}

/// A node without positions, to reuse the checker on plain JSON.
fn json_to_node(value: &Json) -> Node {
    let span = Span::start_of(0);
    let value = match value {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => n
            .as_i64()
            .map_or_else(|| Value::Float(n.as_f64().unwrap_or(0.0)), Value::Int),
        Json::String(s) => Value::Str(s.clone()),
        // Children are repaired one by one; only the container's kind matters here.
        Json::Array(_) => Value::Seq(Vec::new()),
        Json::Object(_) => Value::Map(Vec::new()),
    };
    Node { value, span }
}
