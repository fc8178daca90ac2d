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

mod limits;
pub use limits::{
    MAX_ALIAS_BYTES, MAX_ALIAS_NODES, MAX_DEPTH, MAX_FILE_BYTES, MAX_LINE_CHARS, MAX_NODES,
};
use limits::{Size, measure, oversized, too_deep, too_many_nodes};

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

/// Where a node sits in the tree being built: the collection holding it (an
/// index into [`Builder::places`]; `None` for the document, which holds the
/// root at position 0) and its position there. A sequence's item `i` is at
/// position `i`; a mapping's entry `i` has its key at `2i` and its value at
/// `2i + 1`.
#[derive(Debug, Clone, Copy)]
struct Place {
    parent: Option<usize>,
    position: usize,
}

/// What an alias refers to.
enum Anchor {
    /// A node in the tree, found again through its place rather than copied
    /// when it is anchored, so that anchors nested in anchors cost nothing.
    At(Place),
    /// A scalar mapping key, which the tree keeps only as text.
    Key(Node),
}

/// Builds the node tree from the parser's events.
struct Builder<'a> {
    file: FileId,
    offsets: Offsets<'a>,
    anchors: HashMap<usize, Anchor>,
    /// The place of every collection opened so far.
    places: Vec<Place>,
    problems: Vec<Problem>,
    /// Nodes in the tree so far, aliases' copies included.
    nodes: usize,
    /// Nodes and text bytes produced by aliases so far.
    alias_nodes: usize,
    alias_bytes: usize,
}

/// A collection being read.
struct Frame {
    /// A sequence or a mapping, with the children read so far.
    node: Node,
    anchor: usize,
    /// Index of this collection's place in [`Builder::places`].
    place: usize,
    /// In a mapping: the key read, waiting for its value.
    pending: Option<(String, Span)>,
    /// In a mapping: the line of each key's first appearance.
    keys: HashMap<String, usize>,
}

impl Frame {
    /// The position the next child will take (see [`Place`]).
    fn next_position(&self) -> usize {
        match &self.node.value {
            Value::Seq(items) => items.len(),
            Value::Map(entries) => 2 * entries.len() + usize::from(self.pending.is_some()),
            _ => 0,
        }
    }
}

/// The finished child of `node` at `position` (see [`Place`]).
fn child(node: &Node, position: usize) -> Option<&Node> {
    match &node.value {
        Value::Seq(items) => items.get(position),
        Value::Map(entries) if position % 2 == 1 => entries.get(position / 2).map(|e| &e.value),
        _ => None,
    }
}

/// The node at the end of `path`, walking down from `node`.
fn descend<'t>(node: &'t Node, path: &[usize]) -> Option<&'t Node> {
    path.iter()
        .try_fold(node, |node, &position| child(node, position))
}

/// Parses one YAML document. Syntax errors and duplicate keys are returned as
/// problems; an empty document is an empty mapping. A document that passes
/// one of the limits above gives one problem at the node that passed it, and
/// the rest of the file is not read.
pub fn parse(file: FileId, text: &str) -> Result<Node, Vec<Problem>> {
    if let Some(problem) = oversized(file, text) {
        return Err(vec![problem]);
    }
    let mut builder = Builder {
        file,
        offsets: Offsets::new(text),
        anchors: HashMap::new(),
        places: Vec::new(),
        problems: Vec::new(),
        nodes: 0,
        alias_nodes: 0,
        alias_bytes: 0,
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

    /// Opens a collection, unless it would nest too deep or be one node too many.
    fn open(
        &mut self,
        stack: &mut Vec<Frame>,
        value: Value,
        anchor: usize,
        span: Span,
    ) -> Result<(), Problem> {
        if stack.len() >= MAX_DEPTH {
            return Err(too_deep(span, "too deep"));
        }
        self.count(1, span)?;
        self.places.push(Place {
            parent: stack.last().map(|f| f.place),
            position: stack.last().map_or(0, Frame::next_position),
        });
        stack.push(Frame {
            node: Node { value, span },
            anchor,
            place: self.places.len() - 1,
            pending: None,
            keys: HashMap::new(),
        });
        Ok(())
    }

    /// Counts `nodes` more nodes in the tree.
    fn count(&mut self, nodes: usize, span: Span) -> Result<(), Problem> {
        self.nodes += nodes;
        if self.nodes > MAX_NODES {
            return Err(too_many_nodes(span));
        }
        Ok(())
    }

    /// The node an alias names, found in the tree being built.
    fn anchored<'t>(
        &'t self,
        id: usize,
        stack: &'t [Frame],
        root: Option<&'t Node>,
    ) -> Option<&'t Node> {
        let place = match self.anchors.get(&id)? {
            Anchor::Key(node) => return Some(node),
            Anchor::At(place) => *place,
        };
        let mut path = vec![place.position];
        let mut up = place.parent;
        while let Some(index) = up {
            let place = self.places.get(index)?;
            path.push(place.position);
            up = place.parent;
        }
        path.reverse();
        // `path[0]` is the root's position in the document; the rest leads
        // through the collections still open, then through finished nodes.
        let mut rest = path.get(1..)?;
        for (level, frame) in stack.iter().enumerate() {
            let (&position, tail) = rest.split_first()?;
            let next = frame.next_position();
            if position < next {
                return descend(child(&frame.node, position)?, tail);
            }
            if position > next || level + 1 == stack.len() {
                return None;
            }
            rest = tail;
        }
        descend(root?, rest)
    }

    /// A copy of the node an alias names, at the alias's position, unless the
    /// copy would pass one of the limits.
    fn expand(
        &mut self,
        id: usize,
        span: Span,
        stack: &[Frame],
        root: Option<&Node>,
    ) -> Result<Node, Problem> {
        let budget = MAX_ALIAS_NODES - self.alias_nodes;
        let (value, size) = match self.anchored(id, stack, root) {
            Some(node) => {
                let mut size = Size::default();
                measure(node, budget, 0, &mut size);
                if size.nodes > budget {
                    return Err(Problem::new(
                        span,
                        format!("aliases expand to more than {MAX_ALIAS_NODES} nodes"),
                        "this alias passes the limit",
                    )
                    .with_help("write the values out or use fewer nested aliases"));
                }
                if self.alias_bytes + size.bytes > MAX_ALIAS_BYTES {
                    return Err(Problem::new(
                        span,
                        format!(
                            "aliases copy more than {} MiB of text",
                            MAX_ALIAS_BYTES >> 20
                        ),
                        "this alias passes the limit",
                    )
                    .with_help("write the values out or alias shorter values"));
                }
                if stack.len() + size.height > MAX_DEPTH {
                    return Err(too_deep(span, "this alias nests too deep"));
                }
                (node.value.clone(), size)
            }
            // The anchor is on a complex mapping key, which is reported and
            // left out of the tree.
            None => (Value::Null, Size::default()),
        };
        self.alias_nodes += size.nodes;
        self.alias_bytes += size.bytes;
        self.count(size.nodes.max(1), span)?;
        Ok(Node { value, span })
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
                    if let Err(problem) =
                        self.open(&mut stack, Value::Seq(Vec::new()), anchor, span)
                    {
                        self.problems.push(problem);
                        return Ok(None);
                    }
                    continue;
                }
                Event::MappingStart(anchor, _) => {
                    if let Err(problem) =
                        self.open(&mut stack, Value::Map(Vec::new()), anchor, span)
                    {
                        self.problems.push(problem);
                        return Ok(None);
                    }
                    continue;
                }
                Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                    Some(Frame {
                        mut node, anchor, ..
                    }) => {
                        let end = span.offset + span.len;
                        node.span.len = end.saturating_sub(node.span.offset);
                        (node, anchor)
                    }
                    None => continue,
                },
                Event::Scalar(text, style, anchor, _) => {
                    if let Err(problem) = self.count(1, span) {
                        self.problems.push(problem);
                        return Ok(None);
                    }
                    (
                        Node {
                            value: resolve(&text, style),
                            span,
                        },
                        anchor,
                    )
                }
                Event::Alias(id) => match self.expand(id, span, &stack, root.as_ref()) {
                    Ok(node) => (node, 0),
                    Err(problem) => {
                        self.problems.push(problem);
                        return Ok(None);
                    }
                },
                _ => continue,
            };
            if anchor != 0 {
                let is_key = matches!(
                    stack.last(),
                    Some(Frame {
                        node: Node {
                            value: Value::Map(_),
                            ..
                        },
                        pending: None,
                        ..
                    })
                );
                if !is_key {
                    let place = Place {
                        parent: stack.last().map(|f| f.place),
                        position: stack.last().map_or(0, Frame::next_position),
                    };
                    self.anchors.insert(anchor, Anchor::At(place));
                } else if !matches!(node.value, Value::Seq(_) | Value::Map(_)) {
                    self.anchors.insert(anchor, Anchor::Key(node.clone()));
                }
            }
            let Some(frame) = stack.last_mut() else {
                root = Some(node);
                continue;
            };
            match &mut frame.node.value {
                Value::Seq(items) => items.push(node),
                Value::Map(entries) => match frame.pending.take() {
                    None => match &node.value {
                        Value::Str(s) => frame.pending = Some((s.clone(), node.span)),
                        Value::Int(_) | Value::Bool(_) | Value::Float(_) | Value::Null => {
                            frame.pending = Some((scalar_text(&node.value), node.span))
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
                            frame.pending = Some((String::new(), node.span));
                        }
                    },
                    Some((key, key_span)) => {
                        if let Some(first_line) = frame.keys.get(&key) {
                            self.problems.push(
                                Problem::new(
                                    key_span,
                                    format!("key `{key}` appears twice in this mapping"),
                                    "duplicate key",
                                )
                                .with_help(format!(
                                    "the first `{key}` is on line {first_line}; keep one of them"
                                )),
                            );
                        } else {
                            frame.keys.insert(key.clone(), key_span.line);
                        }
                        entries.push(Entry {
                            key,
                            key_span,
                            value: node,
                        });
                    }
                },
                _ => {}
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
mod tests;
