//! Checks a merged spec tree against the JSON Schema derived from the model,
//! collecting every problem with its position instead of stopping at the first.
//!
//! The schema is the one `pipeline schema` prints, so editors and `validate`
//! agree. Only the keywords that schemars emits for the model are interpreted.

use std::fmt::Write as _;
use std::sync::OnceLock;

use regex::Regex;
use serde_json::{Map, Value as Json};

use super::diag::{Problem, Span, did_you_mean};
use super::yaml::{Node, Value};

mod repair;
pub use repair::repair;

/// A path into the spec, shown as `functions.ingest.memory_mb` or `datasets.events.columns[2]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Path(Vec<Seg>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

impl Path {
    pub fn key(&self, key: &str) -> Path {
        let mut p = self.clone();
        p.0.push(Seg::Key(key.to_string()));
        p
    }

    pub fn index(&self, i: usize) -> Path {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// The model's JSON Schema, built once.
pub fn schema() -> &'static Json {
    static SCHEMA: OnceLock<Json> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let schema = schemars::generate::SchemaSettings::draft2020_12()
            .into_generator()
            .into_root_schema_for::<super::model::Spec>();
        schema.to_value()
    })
}

/// Checks `node` against the model's schema.
pub fn check(node: &Node) -> Vec<Problem> {
    let root = schema();
    let mut checker = Checker {
        defs: root.get("$defs").and_then(Json::as_object),
        problems: Vec::new(),
        shallow: false,
    };
    checker.check(root, node, &Path::default(), node.span);
    checker.problems
}

struct Checker<'s> {
    defs: Option<&'s Map<String, Json>>,
    problems: Vec<Problem>,
    /// Check only a value's own kind and range, not its children, keys or form.
    shallow: bool,
}

fn description(schema: &Json) -> Option<String> {
    schema
        .get("description")
        .and_then(Json::as_str)
        .map(|d| d.split_whitespace().collect::<Vec<_>>().join(" "))
}

fn quoted_list(values: &[String]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("`{v}`")).collect();
    quoted.join(", ")
}

fn json_text(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn node_text(node: &Node) -> String {
    match &node.value {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
        Value::Seq(_) => "a list".into(),
        Value::Map(_) => "a mapping".into(),
    }
}

fn subject(path: &Path) -> String {
    if path.is_root() {
        "the spec".to_string()
    } else {
        format!("`{path}`")
    }
}

impl<'s> Checker<'s> {
    fn resolve(&self, schema: &'s Json) -> &'s Json {
        let mut schema = schema;
        for _ in 0..16 {
            let Some(name) = schema
                .get("$ref")
                .and_then(Json::as_str)
                .and_then(|r| r.strip_prefix("#/$defs/"))
            else {
                break;
            };
            match self.defs.and_then(|d| d.get(name)) {
                Some(target) => schema = target,
                None => break,
            }
        }
        schema
    }

    fn push(&mut self, span: Span, message: String, label: &str, help: Option<String>) {
        self.problems
            .push(Problem::new(span, message, label).with_optional_help(help));
    }

    /// Checks one node. `key_span` is where the node's key is (for messages
    /// about a whole mapping, such as a missing key).
    fn check(&mut self, schema: &'s Json, node: &Node, path: &Path, key_span: Span) {
        let help = description(schema);
        let schema = self.resolve(schema);
        let help = help.or_else(|| description(schema));

        if let Some(options) = schema
            .get("anyOf")
            .or_else(|| schema.get("oneOf"))
            .and_then(Json::as_array)
        {
            self.check_alternatives(options, node, path, key_span, help);
            return;
        }
        if let Some(allowed) = schema.get("enum").and_then(Json::as_array) {
            let allowed: Vec<String> = allowed.iter().map(json_text).collect();
            self.check_allowed(&allowed, node, path, help);
            return;
        }
        if let Some(c) = schema.get("const") {
            self.check_allowed(&[json_text(c)], node, path, help);
            return;
        }
        if let Some(types) = schema.get("type") {
            let types: Vec<&str> = match types {
                Json::String(t) => vec![t.as_str()],
                Json::Array(ts) => ts.iter().filter_map(Json::as_str).collect(),
                _ => vec![],
            };
            if !types.iter().any(|t| matches_type(t, &node.value)) {
                let expected = describe_types(&types);
                self.push(
                    node.span,
                    format!(
                        "{} must be {expected}, found {}",
                        subject(path),
                        node.value.kind()
                    ),
                    &format!("expected {expected}"),
                    help,
                );
                return;
            }
        }
        if self.shallow {
            if matches!(node.value, Value::Int(_) | Value::Float(_)) {
                self.check_number(schema, node, path, help);
            }
            return;
        }
        match &node.value {
            Value::Int(_) | Value::Float(_) => self.check_number(schema, node, path, help),
            Value::Str(s) => self.check_string(schema, s, node, path, help),
            Value::Seq(items) => {
                if let Some(min) = schema.get("minItems").and_then(Json::as_u64)
                    && (items.len() as u64) < min
                {
                    let noun = if min == 1 { "item" } else { "items" };
                    self.push(
                        node.span,
                        format!("{} must list at least {min} {noun}", subject(path)),
                        "too few items",
                        help.clone(),
                    );
                }
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        self.check(item_schema, item, &path.index(i), item.span);
                    }
                }
            }
            Value::Map(entries) => self.check_map(schema, node, entries, path, key_span, help),
            Value::Null | Value::Bool(_) => {}
        }
    }

    fn check_alternatives(
        &mut self,
        options: &'s [Json],
        node: &Node,
        path: &Path,
        key_span: Span,
        help: Option<String>,
    ) {
        let options: Vec<&'s Json> = options.iter().map(|o| self.resolve(o)).collect();
        let is_null = |o: &&Json| o.get("type").and_then(Json::as_str) == Some("null");
        if matches!(node.value, Value::Null) && options.iter().any(is_null) {
            return;
        }
        let rest: Vec<&'s Json> = options.into_iter().filter(|o| !is_null(o)).collect();
        let constants: Option<Vec<String>> = rest
            .iter()
            .map(|o| o.get("const").map(json_text))
            .collect::<Option<Vec<String>>>()
            .filter(|c| !c.is_empty());
        if let Some(allowed) = constants {
            self.check_allowed(&allowed, node, path, help);
            return;
        }
        // Report against the first alternative that fits, else against the first.
        let mut first_problems = None;
        for option in &rest {
            let mut scratch = Checker {
                defs: self.defs,
                problems: Vec::new(),
                shallow: self.shallow,
            };
            scratch.check(option, node, path, key_span);
            if scratch.problems.is_empty() {
                return;
            }
            first_problems.get_or_insert(scratch.problems);
        }
        self.problems.extend(first_problems.unwrap_or_default());
    }

    fn check_allowed(
        &mut self,
        allowed: &[String],
        node: &Node,
        path: &Path,
        help: Option<String>,
    ) {
        let text = match &node.value {
            Value::Str(s) => s.clone(),
            Value::Int(_) | Value::Float(_) | Value::Bool(_) | Value::Null => node_text(node),
            _ => {
                self.push(
                    node.span,
                    format!(
                        "{} must be one of {}, found {}",
                        subject(path),
                        quoted_list(allowed),
                        node.value.kind()
                    ),
                    "not an allowed value",
                    help,
                );
                return;
            }
        };
        if allowed.contains(&text) {
            return;
        }
        let close = did_you_mean(&text, allowed.iter().map(String::as_str))
            .map(|m| format!("did you mean `{m}`?"));
        let (message, hint) = if allowed.len() <= 6 {
            let message = format!(
                "{} must be one of {}, found `{text}`",
                subject(path),
                quoted_list(allowed)
            );
            (message, close.or(help))
        } else {
            let message = format!("{} has an unknown value `{text}`", subject(path));
            (
                message,
                close.or_else(|| Some(format!("the allowed values are: {}", allowed.join(", ")))),
            )
        };
        self.push(node.span, message, "not an allowed value", hint);
    }

    fn check_number(&mut self, schema: &Json, node: &Node, path: &Path, help: Option<String>) {
        let value = match node.value {
            Value::Int(i) => i as f64,
            Value::Float(f) => f,
            _ => return,
        };
        let shown = node_text(node);
        if let Some(min) = schema.get("minimum").and_then(Json::as_f64)
            && value < min
        {
            self.push(
                node.span,
                format!("{} must be at least {min}, found {shown}", subject(path)),
                "too small",
                help.clone(),
            );
            return;
        }
        if let Some(max) = schema.get("maximum").and_then(Json::as_f64)
            && value > max
        {
            self.push(
                node.span,
                format!("{} must be at most {max}, found {shown}", subject(path)),
                "too large",
                help,
            );
        }
    }

    fn check_string(
        &mut self,
        schema: &Json,
        s: &str,
        node: &Node,
        path: &Path,
        help: Option<String>,
    ) {
        if let Some(min) = schema.get("minLength").and_then(Json::as_u64)
            && (s.chars().count() as u64) < min
        {
            self.push(
                node.span,
                format!("{} must be at least {min} characters long", subject(path)),
                "too short",
                help.clone(),
            );
            return;
        }
        if let Some(pattern) = schema.get("pattern").and_then(Json::as_str)
            && !pattern_matches(pattern, s)
        {
            self.push(
                node.span,
                format!("{} has an invalid value `{s}`", subject(path)),
                "not in the expected form",
                help,
            );
        }
    }

    fn check_map(
        &mut self,
        schema: &'s Json,
        node: &Node,
        entries: &[super::yaml::Entry],
        path: &Path,
        key_span: Span,
        help: Option<String>,
    ) {
        let properties = schema.get("properties").and_then(Json::as_object);
        let additional = schema.get("additionalProperties");
        for entry in entries {
            let child = path.key(&entry.key);
            if let Some(prop) = properties.and_then(|p| p.get(&entry.key)) {
                self.check(prop, &entry.value, &child, entry.key_span);
            } else if let Some(extra) = additional.filter(|a| a.is_object()) {
                self.check(extra, &entry.value, &child, entry.key_span);
            } else if additional == Some(&Json::Bool(false)) {
                let known: Vec<&str> = properties
                    .map(|p| p.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                let hint = match did_you_mean(&entry.key, known.iter().copied()) {
                    Some(m) => format!("did you mean `{m}`?"),
                    None => format!("the keys allowed here are: {}", known.join(", ")),
                };
                let place = if path.is_root() {
                    "at the top level".to_string()
                } else {
                    format!("in `{path}`")
                };
                self.push(
                    entry.key_span,
                    format!("unknown key `{}` {place}", entry.key),
                    "unknown key",
                    Some(hint),
                );
            }
        }
        if let Some(required) = schema.get("required").and_then(Json::as_array) {
            for key in required.iter().filter_map(Json::as_str) {
                if entries.iter().any(|e| e.key == key) {
                    continue;
                }
                let what = properties
                    .and_then(|p| p.get(key))
                    .and_then(|p| description(p).or_else(|| description(self.resolve(p))));
                let mut message = String::new();
                let _ = write!(
                    message,
                    "{} is missing the required key `{key}`",
                    subject(path)
                );
                let span = if path.is_root() {
                    Span {
                        len: 0,
                        ..node.span
                    }
                } else {
                    key_span
                };
                self.push(span, message, "missing a key", what.or(help.clone()));
            }
        }
    }
}

fn matches_type(t: &str, value: &Value) -> bool {
    matches!(
        (t, value),
        ("null", Value::Null)
            | ("boolean", Value::Bool(_))
            | ("integer", Value::Int(_))
            | ("number", Value::Int(_) | Value::Float(_))
            | ("string", Value::Str(_))
            | ("array", Value::Seq(_))
            | ("object", Value::Map(_))
    )
}

fn describe_types(types: &[&str]) -> String {
    let names: Vec<&str> = types
        .iter()
        .filter(|t| **t != "null")
        .map(|t| match *t {
            "boolean" => "true or false",
            "integer" => "a whole number",
            "number" => "a number",
            "string" => "a string",
            "array" => "a list",
            "object" => "a mapping",
            other => other,
        })
        .collect();
    names.join(" or ")
}

fn pattern_matches(pattern: &str, s: &str) -> bool {
    static CACHE: OnceLock<std::sync::Mutex<Vec<(String, Regex)>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let Ok(mut cache) = cache.lock() else {
        return true;
    };
    if let Some((_, re)) = cache.iter().find(|(p, _)| p == pattern) {
        return re.is_match(s);
    }
    match Regex::new(pattern) {
        Ok(re) => {
            let ok = re.is_match(s);
            cache.push((pattern.to_string(), re));
            ok
        }
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_display_with_dots_and_indexes() {
        let p = Path::default()
            .key("datasets")
            .key("events")
            .key("columns")
            .index(2)
            .key("type");
        assert_eq!(p.to_string(), "datasets.events.columns[2].type");
    }

    #[test]
    fn schema_describes_the_model() {
        let s = schema();
        assert_eq!(s["additionalProperties"], Json::Bool(false));
        let function = &s["$defs"]["Function"]["properties"]["memory_mb"];
        assert_eq!(function["minimum"], 128);
        assert_eq!(function["maximum"], 10240);
    }
}
