//! Finding environment files, layering them over their parents, and turning
//! the result into a checked [`Spec`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::check;
use super::diag::{Problem, Sources, Span, did_you_mean};
use super::model::Spec;
use super::rules;
use super::yaml::{self, Entry, Node, Value};

/// The environment files shipped with the tool, used when there is no
/// environments directory.
const EMBEDDED: &[(&str, &str)] = &[
    ("base", include_str!("../../../environments/base.yaml")),
    ("dev", include_str!("../../../environments/dev.yaml")),
    ("dit", include_str!("../../../environments/dit.yaml")),
    ("uat", include_str!("../../../environments/uat.yaml")),
    ("prod", include_str!("../../../environments/prod.yaml")),
];

/// The name of the file every environment layers over unless it says otherwise.
pub const BASE: &str = "base";

/// Environments listed in this order first; others follow alphabetically.
const PROMOTION_ORDER: &[&str] = &["dev", "dit", "uat", "prod"];

/// Where environment files come from.
#[derive(Debug, Clone)]
pub enum Origin {
    /// A directory of `<name>.yaml` files.
    Dir(PathBuf),
    /// The files built into the binary.
    Embedded,
}

/// An environment that passed every check.
#[derive(Debug, Clone)]
pub struct Environment {
    pub name: String,
    pub spec: Spec,
    /// The files it was layered from, the environment's own first.
    pub files: Vec<String>,
}

/// Problems that stop an environment from loading.
#[derive(Debug)]
pub enum LoadError {
    /// No file for the environment.
    Unknown {
        name: String,
        available: Vec<String>,
    },
    /// An environment name that cannot name stacks and buckets.
    BadName { name: String },
    /// A file that cannot be read.
    Io { path: String, error: std::io::Error },
    /// The spec has problems; they quote [`Loader::sources`].
    Invalid {
        name: String,
        problems: Vec<Problem>,
    },
}

/// Loads environments, reading and parsing each file once.
#[derive(Debug)]
pub struct Loader {
    origin: Origin,
    sources: Sources,
    parsed: HashMap<String, Result<(usize, Node), Vec<Problem>>>,
}

/// Environment names make stack and bucket names, so they are kept short and plain.
pub fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 12
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && !name.ends_with('-')
}

impl Loader {
    /// Reads from `dir` if given, else from `./environments` if it exists,
    /// else from the files built into the binary.
    pub fn new(dir: Option<PathBuf>) -> Loader {
        let origin = match dir {
            Some(dir) => Origin::Dir(dir),
            None if Path::new("environments").is_dir() => {
                Origin::Dir(PathBuf::from("environments"))
            }
            None => Origin::Embedded,
        };
        Loader {
            origin,
            sources: Sources::default(),
            parsed: HashMap::new(),
        }
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    pub fn sources(&self) -> &Sources {
        &self.sources
    }

    /// The environments available, in promotion order (dev, dit, uat, prod,
    /// then the others alphabetically). `base` is not an environment.
    pub fn names(&self) -> Result<Vec<String>, LoadError> {
        let mut names: Vec<String> = match &self.origin {
            Origin::Embedded => EMBEDDED.iter().map(|(n, _)| n.to_string()).collect(),
            Origin::Dir(dir) => {
                let entries = std::fs::read_dir(dir).map_err(|error| LoadError::Io {
                    path: dir.display().to_string(),
                    error,
                })?;
                entries
                    .filter_map(Result::ok)
                    .filter_map(|e| {
                        let path = e.path();
                        let ext = path.extension()?.to_str()?;
                        if ext != "yaml" && ext != "yml" {
                            return None;
                        }
                        Some(path.file_stem()?.to_str()?.to_string())
                    })
                    .collect()
            }
        };
        names.retain(|n| n != BASE);
        names.sort_by_key(|n| {
            let rank = PROMOTION_ORDER
                .iter()
                .position(|p| p == n)
                .unwrap_or(PROMOTION_ORDER.len());
            (rank, n.clone())
        });
        names.dedup();
        Ok(names)
    }

    fn read(&self, name: &str) -> Result<Option<(String, String)>, LoadError> {
        match &self.origin {
            Origin::Embedded => Ok(EMBEDDED
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(n, text)| (format!("environments/{n}.yaml"), text.to_string()))),
            Origin::Dir(dir) => {
                for ext in ["yaml", "yml"] {
                    let path = dir.join(format!("{name}.{ext}"));
                    match std::fs::read_to_string(&path) {
                        Ok(text) => return Ok(Some((path.display().to_string(), text))),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(error) => {
                            return Err(LoadError::Io {
                                path: path.display().to_string(),
                                error,
                            });
                        }
                    }
                }
                Ok(None)
            }
        }
    }

    /// Parses the named file once; `Ok(None)` if there is no such file.
    fn parse(&mut self, name: &str) -> Result<Option<Result<Node, Vec<Problem>>>, LoadError> {
        if !self.parsed.contains_key(name) {
            let Some((path, text)) = self.read(name)? else {
                return Ok(None);
            };
            let file = self.sources.add(path, text);
            let parsed = yaml::parse(file, self.sources.text(file)).map(|node| (file, node));
            self.parsed.insert(name.to_string(), parsed);
        }
        Ok(self.parsed.get(name).map(|r| {
            r.as_ref()
                .map(|(_, node)| node.clone())
                .map_err(Clone::clone)
        }))
    }

    /// Loads an environment: layers its file over its parents, checks the
    /// result against the schema and the cross-field rules.
    pub fn load(&mut self, name: &str) -> Result<Environment, LoadError> {
        if !valid_name(name) {
            return Err(LoadError::BadName {
                name: name.to_string(),
            });
        }
        let Some(own) = self.parse(name)? else {
            return Err(LoadError::Unknown {
                name: name.to_string(),
                available: self.names()?,
            });
        };
        let invalid = |problems| LoadError::Invalid {
            name: name.to_string(),
            problems,
        };
        let own = own.map_err(invalid)?;

        // Walk up the `extends` chain.
        let mut chain = vec![(name.to_string(), own)];
        let mut problems = Vec::new();
        while let Some((current, node)) = chain.last().map(|(n, node)| (n.clone(), node.clone())) {
            let (parent, span) = match node.get("extends") {
                Some(Entry {
                    value:
                        Node {
                            value: Value::Str(p),
                            span,
                        },
                    ..
                }) => (p.clone(), *span),
                // A wrong type is reported by the schema check.
                Some(_) => break,
                None if current != BASE => (
                    BASE.to_string(),
                    Span {
                        len: 0,
                        ..node.span
                    },
                ),
                None => break,
            };
            if let Some(pos) = chain.iter().position(|(n, _)| *n == parent) {
                let mut cycle: Vec<&str> = chain[pos..].iter().map(|(n, _)| n.as_str()).collect();
                cycle.push(&parent);
                problems.push(
                    Problem::new(
                        span,
                        format!("`extends` makes a cycle: {}", cycle.join(" -> ")),
                        "cycle",
                    )
                    .with_help("an environment cannot extend itself, directly or through others"),
                );
                break;
            }
            match self.parse(&parent)? {
                Some(Ok(parent_node)) => chain.push((parent, parent_node)),
                Some(Err(parent_problems)) => {
                    problems.extend(parent_problems);
                    break;
                }
                // An implicit `base` that does not exist: the file stands alone.
                None if node.get("extends").is_none() => break,
                None => {
                    let names = self.names()?;
                    let mut candidates: Vec<&str> = names.iter().map(String::as_str).collect();
                    candidates.push(BASE);
                    let help = match did_you_mean(&parent, candidates) {
                        Some(m) => format!("did you mean `{m}`?"),
                        None => format!(
                            "create {} or extend one of: {}",
                            self.path_for(&parent),
                            names.join(", ")
                        ),
                    };
                    problems.push(
                        Problem::new(
                            span,
                            format!("`{current}` extends `{parent}`, which does not exist"),
                            "no such environment",
                        )
                        .with_help(help),
                    );
                    break;
                }
            }
        }
        if !problems.is_empty() {
            return Err(invalid(problems));
        }

        let files = chain
            .iter()
            .filter_map(|(n, _)| self.parsed.get(n))
            .filter_map(|r| r.as_ref().ok())
            .map(|(file, _)| self.sources.name(*file).to_string())
            .collect();
        let mut merged = None;
        for (_, node) in chain.into_iter().rev() {
            merged = Some(match merged {
                None => node,
                Some(parent) => merge(parent, node),
            });
        }
        let Some(mut tree) = merged else {
            return Err(invalid(Vec::new()));
        };
        // `extends` belongs to the file, not to the result.
        if let Value::Map(entries) = &mut tree.value {
            entries.retain(|e| e.key != "extends");
        }

        // Schema problems do not stop the cross-field rules: they run on a
        // repaired copy, and report nothing about the repaired values.
        let mut problems = check::check(&tree);
        let mut json = tree.to_json();
        let repaired = if problems.is_empty() {
            Vec::new()
        } else {
            check::repair(&mut json)
        };
        match serde_json::from_value::<Spec>(json) {
            Ok(spec) => {
                let spans: Vec<Span> = problems.iter().map(|p| p.span).collect();
                let rule_problems = rules::check(name, &spec, &tree, &repaired);
                problems.extend(
                    rule_problems
                        .into_iter()
                        .filter(|p| !spans.contains(&p.span)),
                );
                if problems.is_empty() {
                    return Ok(Environment {
                        name: name.to_string(),
                        spec,
                        files,
                    });
                }
            }
            Err(e) if problems.is_empty() => {
                problems.push(Problem::new(
                    tree.span,
                    format!("the spec cannot be read: {e}"),
                    "here",
                ));
            }
            Err(_) => {}
        }
        problems.sort_by_key(|p| (p.span.file, p.span.offset));
        Err(invalid(problems))
    }
    fn path_for(&self, name: &str) -> String {
        match &self.origin {
            Origin::Dir(dir) => dir.join(format!("{name}.yaml")).display().to_string(),
            Origin::Embedded => format!("environments/{name}.yaml"),
        }
    }
}

/// Layers `child` over `parent`: mappings merge key by key, anything else replaces.
pub fn merge(parent: Node, child: Node) -> Node {
    match (parent.value, child.value) {
        (Value::Map(mut base), Value::Map(over)) => {
            for entry in over {
                match base.iter().position(|e| e.key == entry.key) {
                    Some(i) => {
                        let old = std::mem::replace(
                            &mut base[i].value,
                            Node {
                                value: Value::Null,
                                span: entry.value.span,
                            },
                        );
                        base[i].value = merge(old, entry.value);
                        base[i].key_span = entry.key_span;
                    }
                    None => base.push(entry),
                }
            }
            Node {
                value: Value::Map(base),
                span: child.span,
            }
        }
        (_, value) => Node {
            value,
            span: child.span,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(text: &str) -> Node {
        yaml::parse(0, text).unwrap_or_else(|p| panic!("{p:?}"))
    }

    #[test]
    fn maps_merge_and_the_rest_replaces() {
        let parent = node("a: {x: 1, y: [1, 2]}\nb: 1\n");
        let child = node("a: {y: [3]}\nc: 2\n");
        assert_eq!(
            merge(parent, child).to_json(),
            serde_json::json!({"a": {"x": 1, "y": [3]}, "b": 1, "c": 2})
        );
    }

    #[test]
    fn names_must_be_short_lower_case_words() {
        assert!(valid_name("pr-123"));
        assert!(valid_name("dev"));
        assert!(!valid_name("Dev"));
        assert!(!valid_name("pr_1"));
        assert!(!valid_name("-x"));
        assert!(!valid_name("x-"));
        assert!(!valid_name("thirteen-long"));
    }
}
