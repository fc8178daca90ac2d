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

/// The one problem of a document that passes a limit: message, line, column.
fn limit_problem(text: &str) -> (String, usize, usize) {
    match parse(0, text) {
        Ok(_) => panic!("no problem"),
        Err(problems) => {
            assert_eq!(problems.len(), 1, "{problems:?}");
            let p = &problems[0];
            (p.message.clone(), p.span.line, p.span.column)
        }
    }
}

/// Nested aliases: `a` holds 9 scalars, each further level 9 aliases of
/// the one before, so level `n` expands to about 9^n nodes.
fn laughs(levels: usize) -> String {
    let mut text = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n".to_string();
    for level in 1..levels {
        let items = vec![format!("*a{}", level - 1); 9].join(", ");
        text.push_str(&format!("a{level}: &a{level} [{items}]\n"));
    }
    text
}

#[test]
fn aliases_expand_within_a_budget() {
    // Four levels copy 9*10 + 9*91 + 9*820 = 8289 nodes: allowed.
    let node = parse_ok(&laughs(4));
    let json = node.to_json();
    assert_eq!(json["a3"][8][8][8][8], "x");
    // The fifth level's first alias would copy 7381 more.
    let (message, line, column) = limit_problem(&laughs(5));
    assert_eq!(
        (message.as_str(), line, column),
        ("aliases expand to more than 10000 nodes", 5, 10)
    );
    // Many aliases of one long value copy too much text.
    let long = "y".repeat(MAX_LINE_CHARS - 20);
    let aliases = vec!["*s"; MAX_ALIAS_BYTES / long.len() + 1].join("\n  - ");
    let (message, line, _) = limit_problem(&format!("s: &s {long}\nl:\n  - {aliases}\n"));
    assert_eq!(message, "aliases copy more than 1 MiB of text");
    assert_eq!(line, 2 + MAX_ALIAS_BYTES / long.len() + 1);
}

#[test]
fn aliases_find_anchors_anywhere_in_the_tree() {
    let text = "a: &a\n  b: &b [1, &c {k: &d v}]\n  e: *c\n  f: [*b, *d]\nk: [&k key]\ng: {*k : 2, n: *a}\n";
    let json = parse_ok(text).to_json();
    let a = serde_json::json!({"b": [1, {"k": "v"}], "e": {"k": "v"}, "f": [[1, {"k": "v"}], "v"]});
    assert_eq!(
        json,
        serde_json::json!({"a": a, "k": ["key"], "g": {"key": 2, "n": a}})
    );
    let json = parse_ok("x: &x\n  - &y [1]\n  - *y\nz: [*x, {m: &m 3, n: *m}]\n&q q: *y\nr: *q\n")
        .to_json();
    assert_eq!(
        json,
        serde_json::json!({"x": [[1], [1]], "z": [[[1], [1]], {"m": 3, "n": 3}], "q": [1], "r": "q"})
    );
}

#[test]
fn nesting_is_limited() {
    let flow = |levels: usize| format!("a: {}{}\n", "[".repeat(levels), "]".repeat(levels));
    // The mapping is one level; 63 lists make 64.
    parse_ok(&flow(MAX_DEPTH - 1));
    let (message, line, column) = limit_problem(&flow(MAX_DEPTH));
    assert_eq!(
        (message.as_str(), line, column),
        ("values nest more than 64 levels deep", 1, 67)
    );
    // Block lists nest without any bracket: `- - - x`.
    let block = format!("a:\n  {}x\n", "- ".repeat(MAX_DEPTH));
    let (message, line, column) = limit_problem(&block);
    assert_eq!(
        (message.as_str(), line, column),
        ("values nest more than 64 levels deep", 2, 2 * MAX_DEPTH + 1)
    );
    // An alias may not nest its copy too deep either.
    let text = format!(
        "a: &a {}\nb: {}*a{}\n",
        flow(40).trim_start_matches("a: ").trim_end(),
        "[".repeat(30),
        "]".repeat(30)
    );
    let (message, line, column) = limit_problem(&text);
    assert_eq!(
        (message.as_str(), line, column),
        ("values nest more than 64 levels deep", 2, 34)
    );
}

#[test]
fn files_and_lines_are_limited() {
    let items = vec!["x"; MAX_NODES].join("\n- ");
    let (message, line, column) = limit_problem(&format!("- {items}\n"));
    assert_eq!(
        (message.as_str(), line, column),
        ("this file holds more than 20000 values", MAX_NODES, 3)
    );
    let text = format!("a: 1\nb: é{}\n", "x".repeat(MAX_LINE_CHARS));
    let (message, line, column) = limit_problem(&text);
    assert_eq!(
        (message.as_str(), line, column),
        ("this line is longer than 10000 characters", 2, 10_001)
    );
    let offset = match parse(0, &text) {
        Err(problems) => problems[0].span.offset,
        Ok(_) => 0,
    };
    assert_eq!(offset, 5 + 10_000 + 1);
    // Lines of 100 bytes after 5: the 1 MiB limit falls in line 10487,
    // 71 bytes after its start at 1048505.
    let text = format!("a: 1\n{}", format!("# {}\n", "c".repeat(97)).repeat(11_000));
    let (message, line, column) = limit_problem(&text);
    assert_eq!(
        (message.as_str(), line, column),
        ("this file is longer than 1 MiB", 10_487, 72)
    );
    parse_ok(&text[..MAX_FILE_BYTES]);
}
