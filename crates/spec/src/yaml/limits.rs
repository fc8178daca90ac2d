//! The limits on one spec file, which keep a hostile or generated file from
//! taking unbounded memory, time or stack, and the problems that report them.

use super::{Node, Value};
use crate::diag::{FileId, Problem, Span};

/// Most nodes that aliases may produce in one file, all aliases together; an
/// alias produces a copy of every node under its anchor. Hand-written specs
/// alias a few small blocks of defaults (tens of nodes); ten thousand leaves
/// them a wide margin while a "billion laughs" of nested aliases, which would
/// otherwise grow as 9^levels, stops after about a megabyte.
pub const MAX_ALIAS_NODES: usize = 10_000;

/// Most bytes of text (strings and keys) that aliases may copy in one file, so
/// that many aliases of one long value cannot grow memory either.
pub const MAX_ALIAS_BYTES: usize = 1 << 20;

/// Most levels of collections nested in one another. Specs use about five;
/// the tree and everything that reads it recurse once per level, so a limit
/// keeps `[[[[...` or `- - - - ...` from overflowing the stack.
pub const MAX_DEPTH: usize = 64;

/// Most nodes in one file, aliases' copies included. The shipped specs hold a
/// few hundred. A node takes about 100 bytes and the tree is copied a few
/// times while an environment is loaded, and layering a file over its parent
/// takes time growing with the square of a mapping's size (about 0.4 s for
/// 10,000 keys), so the limit keeps memory and time small.
pub const MAX_NODES: usize = 20_000;

/// Longest spec file, in bytes. The shipped specs are a few kilobytes; a
/// file is read whole, and every problem shown scans it again to find its
/// line, so the limit keeps even a file full of mistakes quick to report.
pub const MAX_FILE_BYTES: usize = 1 << 20;

/// Longest line, in characters. Problems quote the line they point at, and
/// the renderer cannot place a label beyond column 65,535; hand-written specs
/// keep lines under a hundred characters or so.
pub const MAX_LINE_CHARS: usize = 10_000;

/// The size of a tree, as an alias copying it would add it.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(super) struct Size {
    pub(super) nodes: usize,
    /// Bytes of strings and keys.
    pub(super) bytes: usize,
    /// Levels of collections: 0 for a scalar, 1 for `[x]`, 2 for `[[x]]`.
    pub(super) height: usize,
}

/// Measures `node` (at `level` collections below the aliased node), giving up
/// once more than `limit` nodes are counted, so that an alias is never
/// measured for longer than the budget it may use.
pub(super) fn measure(node: &Node, limit: usize, level: usize, size: &mut Size) {
    size.nodes += 1;
    match &node.value {
        Value::Str(s) => size.bytes += s.len(),
        Value::Seq(items) => {
            size.height = size.height.max(level + 1);
            for item in items {
                if size.nodes > limit {
                    return;
                }
                measure(item, limit, level + 1, size);
            }
        }
        Value::Map(entries) => {
            size.height = size.height.max(level + 1);
            for entry in entries {
                if size.nodes > limit {
                    return;
                }
                size.bytes += entry.key.len();
                measure(&entry.value, limit, level + 1, size);
            }
        }
        _ => {}
    }
}

/// The first place where `text` passes [`MAX_LINE_CHARS`] or
/// [`MAX_FILE_BYTES`], as a problem; only the text up to that place is read.
pub(super) fn oversized(file: FileId, text: &str) -> Option<Problem> {
    let mut offset = 0;
    for (index, line) in text.split('\n').enumerate() {
        let at = |byte: usize, column: usize, message: String, help: &str| {
            let span = Span {
                file,
                offset: offset + byte,
                len: 0,
                line: index + 1,
                column,
            };
            Some(Problem::new(span, message, "the limit is passed here").with_help(help))
        };
        // A line has at least as many bytes as characters.
        if line.len() > MAX_LINE_CHARS
            && let Some((byte, _)) = line.char_indices().nth(MAX_LINE_CHARS)
            && offset + byte <= MAX_FILE_BYTES
        {
            return at(
                byte,
                MAX_LINE_CHARS + 1,
                format!("this line is longer than {MAX_LINE_CHARS} characters"),
                "break a long value over several lines; inside double quotes, end each line with `\\`",
            );
        }
        if text.len() > MAX_FILE_BYTES && offset + line.len() >= MAX_FILE_BYTES {
            let mut byte = MAX_FILE_BYTES - offset;
            while !line.is_char_boundary(byte) {
                byte -= 1;
            }
            return at(
                byte,
                line[..byte].chars().count() + 1,
                format!("this file is longer than {} MiB", MAX_FILE_BYTES >> 20),
                "a spec holds one environment's settings; keep data and generated content out of it",
            );
        }
        offset += line.len() + 1;
    }
    None
}

pub(super) fn too_deep(span: Span, label: &str) -> Problem {
    Problem::new(
        span,
        format!("values nest more than {MAX_DEPTH} levels deep"),
        label,
    )
    .with_help("a spec needs only a few levels; look for brackets that are never closed or indentation that keeps growing")
}

pub(super) fn too_many_nodes(span: Span) -> Problem {
    Problem::new(
        span,
        format!("this file holds more than {MAX_NODES} values"),
        "the limit is passed here",
    )
    .with_help("an environment needs a few hundred values; remove generated or repeated content")
}
