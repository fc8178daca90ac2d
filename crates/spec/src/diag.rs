//! Problems found in spec files, and how they are shown.

use std::sync::Arc;

use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme, NamedSource, SourceSpan};
use serde::Serialize;
use thiserror::Error;

/// Index of a file in [`Sources`].
pub type FileId = usize;

/// A position in a spec file: byte offset and length for the snippet, line and
/// column (both 1-based, the column in characters) for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub file: FileId,
    pub offset: usize,
    pub len: usize,
    pub line: usize,
    pub column: usize,
}

impl Span {
    /// The very start of a file.
    pub fn start_of(file: FileId) -> Span {
        Span {
            file,
            offset: 0,
            len: 0,
            line: 1,
            column: 1,
        }
    }
}

/// One problem in a spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub span: Span,
    pub message: String,
    /// A few words shown under the offending snippet.
    pub label: String,
    pub help: Option<String>,
}

impl Problem {
    pub fn new(span: Span, message: impl Into<String>, label: impl Into<String>) -> Problem {
        Problem {
            span,
            message: message.into(),
            label: label.into(),
            help: None,
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Problem {
        self.help = Some(help.into());
        self
    }

    pub fn with_optional_help(mut self, help: Option<String>) -> Problem {
        self.help = help;
        self
    }
}

/// The spec files read in one run, so that problems can quote them.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    files: Vec<SourceFile>,
}

#[derive(Debug, Clone)]
struct SourceFile {
    name: String,
    text: Arc<String>,
}

impl Sources {
    /// Adds a file (or returns the id it already has).
    pub fn add(&mut self, name: String, text: String) -> FileId {
        if let Some(id) = self.files.iter().position(|f| f.name == name) {
            return id;
        }
        self.files.push(SourceFile {
            name,
            text: Arc::new(text),
        });
        self.files.len() - 1
    }

    pub fn name(&self, id: FileId) -> &str {
        self.files.get(id).map_or("<unknown>", |f| f.name.as_str())
    }

    pub fn text(&self, id: FileId) -> &str {
        self.files.get(id).map_or("", |f| f.text.as_str())
    }

    /// The source line a span starts on, without its line break.
    pub fn line_of(&self, span: &Span) -> &str {
        let text = self.text(span.file);
        let offset = span.offset.min(text.len());
        let (Some(before), Some(after)) = (text.get(..offset), text.get(offset..)) else {
            return text.lines().nth(span.line.saturating_sub(1)).unwrap_or("");
        };
        let start = before.rfind('\n').map_or(0, |i| i + 1);
        let end = offset + after.find('\n').unwrap_or(after.len());
        text.get(start..end).unwrap_or("").trim_end_matches('\r')
    }

    /// The problem as a miette diagnostic that quotes its snippet.
    pub fn diagnostic(&self, problem: &Problem) -> SpecProblem {
        let file = self.files.get(problem.span.file);
        let (name, text) = match file {
            Some(f) => (f.name.clone(), f.text.clone()),
            None => ("<unknown>".to_string(), Arc::new(String::new())),
        };
        let len = problem
            .span
            .len
            .min(first_line_len(&text, problem.span.offset));
        SpecProblem {
            message: problem.message.clone(),
            src: NamedSource::new(name, text),
            span: (problem.span.offset, len).into(),
            label: problem.label.clone(),
            help: problem.help.clone(),
        }
    }

    /// Renders problems as text, each with its snippet, file, line and column.
    pub fn render(&self, problems: &[Problem], color: bool) -> String {
        let theme = if color {
            GraphicalTheme::unicode()
        } else {
            GraphicalTheme::unicode_nocolor()
        };
        let handler = GraphicalReportHandler::new_themed(theme)
            .with_width(100)
            .with_context_lines(1);
        let mut out = String::new();
        // Each report reads its file from the start to place its snippet: a
        // file with thousands of problems would take minutes to show.
        for problem in problems.iter().take(MAX_RENDERED) {
            let diagnostic = self.diagnostic(problem);
            if handler.render_report(&mut out, &diagnostic).is_err() {
                out.push_str(&problem.message);
            }
            out.push('\n');
        }
        if problems.len() > MAX_RENDERED {
            out.push_str(&format!(
                "… and {} more problems (`--output json` lists them all)\n",
                problems.len() - MAX_RENDERED
            ));
        }
        out
    }

    /// The problems as plain records for `--output json`.
    pub fn records(&self, problems: &[Problem]) -> Vec<ProblemRecord> {
        problems
            .iter()
            .map(|p| ProblemRecord {
                file: self.name(p.span.file).to_string(),
                line: p.span.line,
                column: p.span.column,
                message: p.message.clone(),
                snippet: self.line_of(&p.span).trim_end().to_string(),
                help: p.help.clone(),
            })
            .collect()
    }
}

/// Most problems shown as text, each with its snippet.
pub const MAX_RENDERED: usize = 50;

/// Length of the rest of the line starting at `offset`, so labels never span lines.
fn first_line_len(text: &str, offset: usize) -> usize {
    text.get(offset..)
        .map_or(0, |rest| rest.find('\n').unwrap_or(rest.len()))
}

/// A problem as miette shows it.
#[derive(Debug, Error, Diagnostic)]
#[error("{message}")]
pub struct SpecProblem {
    message: String,
    #[source_code]
    src: NamedSource<Arc<String>>,
    #[label("{label}")]
    span: SourceSpan,
    label: String,
    #[help]
    help: Option<String>,
}

/// A problem as `--output json` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ProblemRecord {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub snippet: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

/// Closest candidate to `word`, if one is close enough to be a likely typo
/// (a similar spelling, or one or two letters added, dropped or swapped).
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| {
            let score = strsim::jaro_winkler(word, c)
                .max(strsim::normalized_damerau_levenshtein(word, c) + 0.15);
            (score, c)
        })
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        let keys = ["memory_mb", "timeout_seconds", "architecture"];
        assert_eq!(did_you_mean("memroy_mb", keys), Some("memory_mb"));
        assert_eq!(did_you_mean("timeout", keys), Some("timeout_seconds"));
        assert_eq!(did_you_mean("colour", keys), None);
        assert_eq!(
            did_you_mean("dve", ["dev", "dit", "uat", "prod"]),
            Some("dev")
        );
        assert_eq!(did_you_mean("qa", ["dev", "dit", "uat", "prod"]), None);
    }

    #[test]
    fn text_shows_the_first_problems_and_counts_the_rest() {
        let mut sources = Sources::default();
        let text: String = (0..60).map(|i| format!("k{i}: 1\r\n")).collect();
        let id = sources.add("environments/x.yaml".into(), text.clone());
        let problems: Vec<Problem> = (0..60)
            .map(|i| {
                let offset = text.find(&format!("k{i}:")).unwrap_or(0);
                let span = Span {
                    file: id,
                    offset,
                    len: 2,
                    line: i + 1,
                    column: 1,
                };
                Problem::new(span, format!("problem {i}"), "here")
            })
            .collect();
        let shown = sources.render(&problems, false);
        assert!(shown.contains("problem 49"), "{shown}");
        assert!(!shown.contains("problem 50"), "{shown}");
        assert!(
            shown.ends_with("… and 10 more problems (`--output json` lists them all)\n"),
            "{shown}"
        );
        let records = sources.records(&problems);
        assert_eq!(records.len(), 60);
        assert_eq!(records[59].snippet, "k59: 1");
    }

    #[test]
    fn renders_file_line_column_and_snippet() {
        let mut sources = Sources::default();
        let id = sources.add("environments/x.yaml".into(), "a: 1\nbad: 2\n".into());
        let span = Span {
            file: id,
            offset: 5,
            len: 3,
            line: 2,
            column: 1,
        };
        let problem =
            Problem::new(span, "unknown key `bad`", "not a known key").with_help("remove it");
        let text = sources.render(std::slice::from_ref(&problem), false);
        assert!(text.contains("[environments/x.yaml:2:1]"), "{text}");
        assert!(text.contains("bad: 2"), "{text}");
        assert!(text.contains("not a known key"), "{text}");
        assert!(text.contains("help: remove it"), "{text}");
        let records = sources.records(&[problem]);
        assert_eq!(records[0].snippet, "bad: 2");
        assert_eq!((records[0].line, records[0].column), (2, 1));
    }
}
