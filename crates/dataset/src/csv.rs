//! The CSV dialect of a dataset's batches: separators, quoting, nulls and
//! the header line. A byte-order mark and CRLF line ends are always accepted.

use serde::{Deserialize, Serialize};

use crate::DatasetProblem;

/// How a CSV header's names are matched to the columns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum HeaderMatch {
    /// The names are the columns' names, as written.
    #[default]
    Exact,
    /// Case, surrounding spaces and separators are ignored: `Occurred At`
    /// and `occurred-at` both name `occurred_at`.
    Normalized,
}

/// The dialect of a CSV dataset; every key has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct CsvOptions {
    /// The field separator: one character, such as `;` or `"\t"` (default `,`).
    pub delimiter: String,
    /// The quote character (default `"`); inside quotes, a doubled quote is one quote.
    pub quote: String,
    /// A character that escapes the next one inside quotes, such as `\` (default: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub escape: Option<String>,
    /// The field values that stand for null (default: the empty field only).
    pub null_values: Vec<String>,
    /// Whether the first line names the columns (default true); without a
    /// header, fields come in the order of `columns`.
    pub header: bool,
    /// How header names are matched to columns (default `exact`).
    pub header_match: HeaderMatch,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            delimiter: ",".into(),
            quote: "\"".into(),
            escape: None,
            null_values: vec![String::new()],
            header: true,
            header_match: HeaderMatch::Exact,
        }
    }
}

impl CsvOptions {
    /// The delimiter's byte (`,` when it is not one ASCII character, which
    /// [`CsvOptions::problems`] reports).
    pub fn delimiter_byte(&self) -> u8 {
        ascii_byte(&self.delimiter).unwrap_or(b',')
    }

    /// The quote's byte.
    pub fn quote_byte(&self) -> u8 {
        ascii_byte(&self.quote).unwrap_or(b'"')
    }

    /// The escape's byte, if any.
    pub fn escape_byte(&self) -> Option<u8> {
        self.escape.as_deref().and_then(ascii_byte)
    }

    /// Whether `field` stands for null.
    pub fn is_null(&self, field: &[u8]) -> bool {
        self.null_values.iter().any(|n| n.as_bytes() == field)
    }

    /// A sentence on the dialect when it is not plain CSV with a header, for documents.
    pub fn describe(&self) -> Option<String> {
        let mut parts = Vec::new();
        let shown = |c: &str| match c {
            "\t" => "a tab".to_string(),
            c => format!("`{c}`"),
        };
        if self.delimiter != "," {
            parts.push(format!("fields separated by {}", shown(&self.delimiter)));
        }
        if self.quote != "\"" {
            parts.push(format!("quoted with {}", shown(&self.quote)));
        }
        if let Some(e) = &self.escape {
            parts.push(format!(
                "{} escaping the next character in quotes",
                shown(e)
            ));
        }
        if self.null_values != [""] {
            let nulls: Vec<String> = self
                .null_values
                .iter()
                .map(|n| {
                    if n.is_empty() {
                        "an empty field".to_string()
                    } else {
                        format!("`{n}`")
                    }
                })
                .collect();
            parts.push(format!("null written as {}", nulls.join(" or ")));
        }
        if !self.header {
            parts.push("no header line: fields in the columns' order".into());
        } else if self.header_match == HeaderMatch::Normalized {
            parts.push("header names matched ignoring case, spaces and separators".into());
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }

    /// Problems with the dialect, with paths below `csv`.
    pub(crate) fn problems(&self) -> Vec<DatasetProblem> {
        let mut out = Vec::new();
        let mut chars = vec![
            ("delimiter", self.delimiter.as_str()),
            ("quote", self.quote.as_str()),
        ];
        if let Some(e) = &self.escape {
            chars.push(("escape", e));
        }
        for (i, (key, value)) in chars.iter().enumerate() {
            let problem = |message: String, help: &str| DatasetProblem {
                path: vec![key.to_string()],
                message,
                help: Some(help.into()),
            };
            match ascii_byte(value) {
                None => out.push(problem(
                    format!("`{key}` must be one character, found `{value}`"),
                    "write one ASCII character, such as `;` or \"\\t\" for a tab",
                )),
                Some(b'\n' | b'\r') => out.push(problem(
                    format!("`{key}` cannot be a line break"),
                    "records end at line breaks: pick another character",
                )),
                Some(_) => {
                    if let Some((other, _)) = chars[..i].iter().find(|(_, v)| v == value) {
                        out.push(problem(
                            format!("`{key}` is the same character as `{other}`"),
                            "give the delimiter, quote and escape different characters",
                        ));
                    }
                }
            }
        }
        for (i, null) in self.null_values.iter().enumerate() {
            if null.contains([self.delimiter_byte() as char, '\n', '\r']) {
                out.push(DatasetProblem {
                    path: vec!["null_values".into(), i.to_string()],
                    message: format!("the null value `{null}` holds the delimiter or a line break"),
                    help: Some("a null value is a whole field".into()),
                });
            }
        }
        out
    }
}

fn ascii_byte(text: &str) -> Option<u8> {
    match text.as_bytes() {
        [b] if b.is_ascii() => Some(*b),
        _ => None,
    }
}

/// A header name as [`HeaderMatch::Normalized`] compares it: lower case,
/// with each run of spaces and punctuation made one `_`, none at the ends.
pub fn normalize_header(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.trim().chars() {
        if c.is_alphanumeric() {
            out.extend(c.to_lowercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_matches('_').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(edit: impl FnOnce(&mut CsvOptions)) -> Vec<(Vec<String>, String)> {
        let mut o = CsvOptions::default();
        edit(&mut o);
        o.problems()
            .into_iter()
            .map(|p| (p.path, p.message))
            .collect()
    }

    #[test]
    fn dialect_characters_are_single_and_distinct() {
        assert_eq!(problems(|_| {}), vec![]);
        assert_eq!(problems(|o| o.delimiter = "\t".into()), vec![]);
        let path = |k: &str| vec![k.to_string()];
        assert_eq!(
            problems(|o| o.delimiter = ";;".into()),
            vec![(
                path("delimiter"),
                "`delimiter` must be one character, found `;;`".into()
            )]
        );
        assert_eq!(
            problems(|o| o.quote = "\n".into()),
            vec![(path("quote"), "`quote` cannot be a line break".into())]
        );
        assert_eq!(
            problems(|o| o.escape = Some(",".into())),
            vec![(
                path("escape"),
                "`escape` is the same character as `delimiter`".into()
            )]
        );
        assert_eq!(problems(|o| o.null_values = vec!["a;b".into()]), vec![]);
        assert_eq!(
            problems(|o| o.null_values = vec!["NA".into(), "a,b".into()]),
            vec![(
                vec!["null_values".to_string(), "1".into()],
                "the null value `a,b` holds the delimiter or a line break".into()
            )]
        );
    }

    #[test]
    fn normalized_header_names_ignore_case_and_separators() {
        for (given, want) in [
            ("Occurred At", "occurred_at"),
            (" user-id ", "user_id"),
            ("USER__ID", "user_id"),
            ("amount (EUR)", "amount_eur"),
            ("sensor_id", "sensor_id"),
        ] {
            assert_eq!(normalize_header(given), want, "{given}");
        }
    }

    #[test]
    fn a_dialect_is_described_only_where_it_is_not_the_default() {
        assert_eq!(CsvOptions::default().describe(), None);
        let o = CsvOptions {
            delimiter: ";".into(),
            null_values: vec![String::new(), "NA".into()],
            header_match: HeaderMatch::Normalized,
            ..CsvOptions::default()
        };
        assert_eq!(
            o.describe().as_deref(),
            Some(
                "fields separated by `;`; null written as an empty field or `NA`; header names matched ignoring case, spaces and separators"
            )
        );
    }
}
