//! YAML parsing into a tree that remembers where every node came from.
//!
//! This is the one module that reads YAML. It uses `saphyr-parser`'s event
//! stream rather than `yaml_serde`: serde stops at the first error and keeps
//! no positions, while validation here must report every problem of a spec
//! with its file, line and column, including problems in values inherited
//! from a parent file.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError};

use super::diag::{FileId, Problem, Span};

/// A parsed YAML node with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub span: Span,
}

/// A YAML value after resolving plain scalars with the YAML 1.2 core schema.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

/// One `key: value` pair of a mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_span: Span,
    pub value: Node,
}

impl Value {
    /// A short name of the value's type, as used in error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

impl Node {
    /// The entry named `key`, if this node is a mapping that has it.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|e| e.key == key),
            _ => None,
        }
    }

    /// Converts the tree into JSON, the form the typed model is read from.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.to_json()))
                    .collect(),
            ),
        }
    }
}

/// Maps the parser's character positions to byte offsets in the source.
struct Offsets<'a> {
    text: &'a str,
    /// Byte offset of each character, only built for non-ASCII text.
    bytes: Option<Vec<usize>>,
}

impl<'a> Offsets<'a> {
    fn new(text: &'a str) -> Self {
        let bytes = (!text.is_ascii()).then(|| text.char_indices().map(|(b, _)| b).collect());
        Offsets { text, bytes }
    }

    fn byte(&self, char_index: usize) -> usize {
        match &self.bytes {
            None => char_index.min(self.text.len()),
            Some(map) => map.get(char_index).copied().unwrap_or(self.text.len()),
        }
    }

    fn span(&self, file: FileId, s: &saphyr_parser::Span) -> Span {
        let start = self.byte(s.start.index());
        let end = self.byte(s.end.index()).max(start);
        Span {
            file,
            offset: start,
            len: end - start,
            line: s.start.line(),
            column: s.start.col() + 1,
        }
    }
}

/// Builds the node tree from the parser's events.
struct Builder<'a> {
    file: FileId,
    offsets: Offsets<'a>,
    anchors: HashMap<usize, Node>,
    problems: Vec<Problem>,
}

enum Frame {
    Seq(Node, usize),
    Map(Node, usize, Option<(String, Span)>),
}

/// Parses one YAML document. Syntax errors and duplicate keys are returned as
/// problems; an empty document is an empty mapping.
pub fn parse(file: FileId, text: &str) -> Result<Node, Vec<Problem>> {
    let mut builder = Builder {
        file,
        offsets: Offsets::new(text),
        anchors: HashMap::new(),
        problems: Vec::new(),
    };
    match builder.run(text) {
        Ok(Some(node)) if builder.problems.is_empty() => Ok(node),
        Ok(None) if builder.problems.is_empty() => Ok(Node {
            value: Value::Map(Vec::new()),
            span: Span::start_of(file),
        }),
        Ok(_) => Err(builder.problems),
        Err(e) => {
            builder.problems.push(builder.scan_problem(&e));
            Err(builder.problems)
        }
    }
}

impl Builder<'_> {
    fn scan_problem(&self, e: &ScanError) -> Problem {
        let m = e.marker();
        let offset = self.offsets.byte(m.index());
        Problem::new(
            Span {
                file: self.file,
                offset,
                len: 0,
                line: m.line(),
                column: m.col() + 1,
            },
            format!("this is not valid YAML: {}", e.info()),
            "here",
        )
        .with_help("check the indentation and quoting around this position")
    }

    fn run(&mut self, text: &str) -> Result<Option<Node>, ScanError> {
        let mut stack: Vec<Frame> = Vec::new();
        let mut root = None;
        let mut documents = 0;
        for event in Parser::new_from_str(text) {
            let (event, span) = event?;
            let span = self.offsets.span(self.file, &span);
            let (node, anchor) = match event {
                Event::DocumentStart(_) => {
                    documents += 1;
                    if documents > 1 {
                        self.problems.push(
                            Problem::new(span, "a spec file holds one YAML document", "second document")
                                .with_help("remove the `---` line and what follows, or move it to its own file"),
                        );
                    }
                    continue;
                }
                Event::SequenceStart(anchor, _) => {
                    stack.push(Frame::Seq(
                        Node {
                            value: Value::Seq(Vec::new()),
                            span,
                        },
                        anchor,
                    ));
                    continue;
                }
                Event::MappingStart(anchor, _) => {
                    stack.push(Frame::Map(
                        Node {
                            value: Value::Map(Vec::new()),
                            span,
                        },
                        anchor,
                        None,
                    ));
                    continue;
                }
                Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                    Some(Frame::Seq(mut node, anchor)) | Some(Frame::Map(mut node, anchor, _)) => {
                        let end = span.offset + span.len;
                        node.span.len = end.saturating_sub(node.span.offset);
                        (node, anchor)
                    }
                    None => continue,
                },
                Event::Scalar(text, style, anchor, _) => (
                    Node {
                        value: resolve(&text, style),
                        span,
                    },
                    anchor,
                ),
                Event::Alias(id) => match self.anchors.get(&id) {
                    Some(node) => (
                        Node {
                            value: node.value.clone(),
                            span,
                        },
                        0,
                    ),
                    None => continue,
                },
                _ => continue,
            };
            if anchor != 0 {
                self.anchors.insert(anchor, node.clone());
            }
            match stack.last_mut() {
                None => root = Some(node),
                Some(Frame::Seq(parent, _)) => {
                    if let Value::Seq(items) = &mut parent.value {
                        items.push(node);
                    }
                }
                Some(Frame::Map(parent, _, pending)) => match pending.take() {
                    None => match &node.value {
                        Value::Str(s) => *pending = Some((s.clone(), node.span)),
                        Value::Int(_) | Value::Bool(_) | Value::Float(_) | Value::Null => {
                            *pending = Some((scalar_text(&node.value), node.span))
                        }
                        _ => {
                            self.problems.push(
                                Problem::new(
                                    node.span,
                                    "mapping keys must be plain names",
                                    "complex key",
                                )
                                .with_help("write the key as a plain word such as `name:`"),
                            );
                            *pending = Some((String::new(), node.span));
                        }
                    },
                    Some((key, key_span)) => {
                        if let Value::Map(entries) = &mut parent.value {
                            if let Some(first) = entries.iter().find(|e| e.key == key) {
                                self.problems.push(
                                    Problem::new(
                                        key_span,
                                        format!("key `{key}` appears twice in this mapping"),
                                        "duplicate key",
                                    )
                                    .with_help(format!(
                                        "the first `{key}` is on line {}; keep one of them",
                                        first.key_span.line
                                    )),
                                );
                            }
                            entries.push(Entry {
                                key,
                                key_span,
                                value: node,
                            });
                        }
                    }
                },
            }
        }
        Ok(root)
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::Int(i) => i.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Null => "null".to_string(),
        Value::Str(s) => s.clone(),
        _ => String::new(),
    }
}

/// Resolves a scalar with the YAML 1.2 core schema: quoted scalars are always
/// strings; plain ones may be null, booleans, integers or floats.
fn resolve(text: &str, style: ScalarStyle) -> Value {
    if style != ScalarStyle::Plain {
        return Value::Str(text.to_string());
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    let int = if let Some(hex) = text.strip_prefix("0x") {
        i64::from_str_radix(hex, 16).ok()
    } else if let Some(oct) = text.strip_prefix("0o") {
        i64::from_str_radix(oct, 8).ok()
    } else if text
        .bytes()
        .enumerate()
        .all(|(i, b)| b.is_ascii_digit() || (i == 0 && (b == b'-' || b == b'+')))
    {
        text.parse().ok()
    } else {
        None
    };
    if let Some(i) = int {
        return Value::Int(i);
    }
    let looks_numeric = text
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
        && text.bytes().any(|b| b.is_ascii_digit());
    if looks_numeric && let Ok(f) = text.parse::<f64>() {
        return Value::Float(f);
    }
    Value::Str(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> Node {
        match parse(0, text) {
            Ok(node) => node,
            Err(problems) => panic!("unexpected problems: {problems:?}"),
        }
    }

    #[test]
    fn resolves_core_schema_scalars() {
        let node = parse_ok("a: 1\nb: '1'\nc: true\nd: ~\ne: 1.5\nf: 0x10\ng: text\nh: 1e3\n");
        let json = node.to_json();
        assert_eq!(
            json,
            serde_json::json!({"a": 1, "b": "1", "c": true, "d": null, "e": 1.5, "f": 16, "g": "text", "h": 1000.0})
        );
    }

    #[test]
    fn records_lines_and_columns() {
        let node = parse_ok("top:\n  inner: 5\n");
        let top = node.get("top").map(|e| &e.value);
        let inner = top.and_then(|t| t.get("inner"));
        let inner = inner.map(|e| {
            (
                e.key_span.line,
                e.key_span.column,
                e.value.span.line,
                e.value.span.column,
            )
        });
        assert_eq!(inner, Some((2, 3, 2, 10)));
    }

    #[test]
    fn byte_offsets_follow_multibyte_text() {
        let text = "name: \"héllo\"\nnext: 1\n";
        let node = parse_ok(text);
        let next = node.get("next").map(|e| e.key_span.offset);
        assert_eq!(next.map(|o| &text[o..o + 4]), Some("next"));
    }

    #[test]
    fn aliases_copy_the_anchored_node() {
        let node = parse_ok("a: &x {k: 1}\nb: *x\n");
        assert_eq!(
            node.to_json(),
            serde_json::json!({"a": {"k": 1}, "b": {"k": 1}})
        );
    }

    #[test]
    fn duplicate_keys_and_syntax_errors_are_problems() {
        let problems = parse(0, "a: 1\na: 2\n").err().unwrap_or_default();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].message, "key `a` appears twice in this mapping");
        let problems = parse(0, "a: [1, 2\n").err().unwrap_or_default();
        assert_eq!(problems.len(), 1);
        assert!(problems[0].message.starts_with("this is not valid YAML: "));
    }

    #[test]
    fn empty_document_is_an_empty_mapping() {
        assert_eq!(
            parse_ok("# only a comment\n").to_json(),
            serde_json::json!({})
        );
    }
}
