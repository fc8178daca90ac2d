//! Datasets: the tables the pipeline loads, as declared in an environment's spec.

use serde::{Deserialize, Serialize};

mod csv;
mod query_value;
mod value;

pub use csv::{CsvOptions, HeaderMatch, normalize_header};
pub use value::{
    DecimalMark, FALSE_VALUES, TRUE_VALUES, TimeFormat, Timezone, pattern_has_offset, sample_value,
};

/// How a dataset's batches are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One JSON object per line (`application/x-ndjson`).
    Ndjson,
    /// Comma-separated values with a header line (`text/csv`).
    Csv,
}

impl Format {
    /// The media type clients send batches of this format with.
    pub fn media_type(self) -> &'static str {
        match self {
            Format::Ndjson => "application/x-ndjson",
            Format::Csv => "text/csv",
        }
    }
}

/// What a load does with a record whose primary key is already in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum OnConflict {
    /// Keep the stored row; the new record counts as a duplicate.
    Ignore,
    /// Replace the stored row's columns with the new record's.
    Update,
}

/// The type of a column, named as in the spec; each maps to one Postgres type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    #[default]
    Text,
    Int,
    Bigint,
    Float,
    Bool,
    Numeric,
    Date,
    Timestamptz,
    Uuid,
    Jsonb,
}

impl ColumnType {
    /// The Postgres type the column is created with.
    pub fn postgres(self) -> &'static str {
        match self {
            ColumnType::Text => "text",
            ColumnType::Int => "integer",
            ColumnType::Bigint => "bigint",
            ColumnType::Float => "double precision",
            ColumnType::Bool => "boolean",
            ColumnType::Numeric => "numeric",
            ColumnType::Date => "date",
            ColumnType::Timestamptz => "timestamptz",
            ColumnType::Uuid => "uuid",
            ColumnType::Jsonb => "jsonb",
        }
    }

    /// The JSON Schema `type` and `format` a value of this column has in the API.
    pub fn json_schema(self) -> (&'static str, Option<&'static str>) {
        match self {
            ColumnType::Text => ("string", None),
            ColumnType::Int => ("integer", Some("int32")),
            ColumnType::Bigint => ("integer", Some("int64")),
            ColumnType::Float => ("number", Some("double")),
            ColumnType::Bool => ("boolean", None),
            // Numerics travel as strings so that no precision is lost in JSON.
            ColumnType::Numeric => ("string", Some("decimal")),
            ColumnType::Date => ("string", Some("date")),
            ColumnType::Timestamptz => ("string", Some("date-time")),
            ColumnType::Uuid => ("string", Some("uuid")),
            ColumnType::Jsonb => ("object", None),
        }
    }

    /// Whether range filters (`gte`/`lte`) make sense on the column.
    pub fn is_ordered(self) -> bool {
        !matches!(
            self,
            ColumnType::Bool | ColumnType::Jsonb | ColumnType::Uuid
        )
    }
}

/// One column of a dataset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Column {
    /// Column name: lower case letters, digits and `_`, starting with a letter.
    #[cfg_attr(
        feature = "schema",
        schemars(regex(pattern = r"^[a-z][a-z0-9_]{0,62}$"))
    )]
    pub name: String,
    /// The column's type.
    #[serde(rename = "type")]
    pub kind: ColumnType,
    /// Whether records may omit the value or send null (default: false).
    #[serde(default)]
    pub nullable: bool,
    /// What the column holds, shown in the API documentation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// How batches write a date or timestamp: a strftime pattern such as
    /// `%Y/%m/%d` or `%d.%m.%Y %H:%M`, or `epoch_seconds` / `epoch_millis`
    /// for timestamps (default: ISO 8601, as the API answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// The time zone of timestamps whose `format` has no offset: `UTC` (the
    /// default), an offset such as `+01:00`, or a name such as `Europe/Paris`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// The decimal mark of numeric and float values: `point` (default) or `comma`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decimal: Option<DecimalMark>,
    /// The words read as true, ignoring case (default: true, t, 1, yes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub true_values: Option<Vec<String>>,
    /// The words read as false, ignoring case (default: false, f, 0, no).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub false_values: Option<Vec<String>>,
    /// The value of a record that leaves the column out (a JSON key or a
    /// CSV header without it), written as the API answers it (ISO 8601 for
    /// dates and timestamps); the table's default too, so rows loaded
    /// without the column (by a version that does not know it) get it.
    /// A null sent explicitly stays null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<DefaultValue>,
}

/// A column's `default`, as the spec writes it: a string, a number or a
/// boolean (`default: 0` and `default: "0"` are the same).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum DefaultValue {
    Text(String),
    Integer(i64),
    Number(f64),
    Bool(bool),
}

impl std::fmt::Display for DefaultValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DefaultValue::Text(text) => f.write_str(text),
            DefaultValue::Integer(n) => write!(f, "{n}"),
            DefaultValue::Number(x) => write!(f, "{x}"),
            DefaultValue::Bool(b) => write!(f, "{b}"),
        }
    }
}

impl Column {
    /// A column with no options: not nullable, values in the API's form.
    pub fn new(name: &str, kind: ColumnType) -> Column {
        Column {
            name: name.to_string(),
            kind,
            ..Column::default()
        }
    }
}

/// Columns whose names start with this are the pipeline's own (the load a
/// row came with, a staged row's chunk and line): no dataset may declare one.
pub const RESERVED_PREFIX: &str = "pipeline_";

/// The bytes of variable-length values one index entry may hold: below
/// the 2,704 bytes of a B-tree entry, with room for its header and the
/// key's fixed-length columns.
pub const INDEX_ENTRY_BYTES: usize = 2_400;

/// A dataset: one Postgres table fed by batches of records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Dataset {
    /// The encoding of the dataset's batches.
    pub format: Format,
    /// The CSV dialect, for `format: csv` (default: `,`, `"`, a header line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csv: Option<CsvOptions>,
    /// The columns, in the order a CSV header lists them.
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    pub columns: Vec<Column>,
    /// The columns that identify a record.
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    pub primary_key: Vec<String>,
    /// What a load does with a record whose key is already stored.
    pub on_conflict: OnConflict,
    /// The columns the records API may filter on.
    #[serde(default)]
    pub filterable: Vec<String>,
    /// What the dataset holds, shown in the API documentation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Let migrations drop or retype columns and change the key, which can lose data.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_destructive_changes: bool,
}

/// A problem found in a dataset definition, with where it is (relative to the dataset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetProblem {
    /// Path below the dataset, such as `["primary_key", "1"]`.
    pub path: Vec<String>,
    pub message: String,
    pub help: Option<String>,
}

impl Dataset {
    /// The column named `name`, if any.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The most bytes a value of `column` may take, when the column is in
    /// an index (the key, or a filterable column with the key after it) and
    /// its values vary in length (text, numeric): a B-tree index entry
    /// holds at most 2,704 bytes (Postgres' limit for 8 kB pages), so
    /// [`INDEX_ENTRY_BYTES`] is shared among the variable-length columns of
    /// the widest index the column is in. A longer value would fail the
    /// whole batch's load with an index error; the decoder refuses it with
    /// its line and column instead.
    pub fn indexed_value_limit(&self, column: &str) -> Option<usize> {
        let varies = |name: &str| {
            self.column(name)
                .is_some_and(|c| matches!(c.kind, ColumnType::Text | ColumnType::Numeric))
        };
        if !varies(column) {
            return None;
        }
        let in_key = |name: &str| self.primary_key.iter().any(|k| k == name);
        let key_varying = self.primary_key.iter().filter(|k| varies(k)).count();
        // A filter index is the column and then the key.
        let varying_filter = self.filterable.iter().any(|f| !in_key(f) && varies(f));
        let widest = if in_key(column) {
            key_varying + usize::from(varying_filter)
        } else if self.filterable.iter().any(|f| f == column) {
            key_varying + 1
        } else {
            return None;
        };
        Some(INDEX_ENTRY_BYTES / widest.max(1))
    }

    /// The CSV dialect (the default one when the spec gives none).
    pub fn csv(&self) -> std::borrow::Cow<'_, CsvOptions> {
        match &self.csv {
            Some(options) => std::borrow::Cow::Borrowed(options),
            None => std::borrow::Cow::Owned(CsvOptions::default()),
        }
    }

    /// The columns records are read in: the primary key, or, with a range
    /// filter, its column and then the key. Every filterable column has an
    /// index in this order (the key's own index serves the key order), so
    /// that a page of records is one range scan of one index, whatever the
    /// filters.
    pub fn read_order<'a>(&'a self, range: Option<&'a str>) -> Vec<&'a str> {
        let mut order: Vec<&str> = range.into_iter().collect();
        for key in &self.primary_key {
            if !order.contains(&key.as_str()) {
                order.push(key);
            }
        }
        order
    }

    /// Checks the rules that span several fields: unique column names, a
    /// primary key and filters that name existing columns.
    pub fn problems(&self) -> Vec<DatasetProblem> {
        let mut out = Vec::new();
        for (i, column) in self.columns.iter().enumerate() {
            if self.columns[..i].iter().any(|c| c.name == column.name) {
                out.push(DatasetProblem {
                    path: vec!["columns".into(), i.to_string(), "name".into()],
                    message: format!("column `{}` is declared twice", column.name),
                    help: Some("give each column a distinct name".into()),
                });
            }
            if column.name.starts_with(RESERVED_PREFIX) {
                out.push(DatasetProblem {
                    path: vec!["columns".into(), i.to_string(), "name".into()],
                    message: format!(
                        "column name `{}` starts with `{RESERVED_PREFIX}`, which the pipeline keeps for its own columns",
                        column.name
                    ),
                    help: Some("give the column another name".into()),
                });
            }
        }
        let mut check_refs = |field: &str, names: &[String]| {
            for (i, name) in names.iter().enumerate() {
                let path = vec![field.to_string(), i.to_string()];
                if names[..i].contains(name) {
                    out.push(DatasetProblem {
                        path,
                        message: format!("`{name}` is listed twice in `{field}`"),
                        help: Some("list each column once".into()),
                    });
                } else if let Some(column) = self.column(name) {
                    if field == "primary_key" && column.nullable {
                        out.push(DatasetProblem {
                            path,
                            message: format!("primary key column `{name}` is nullable"),
                            help: Some(format!("set `nullable: false` on column `{name}`")),
                        });
                    }
                } else {
                    out.push(DatasetProblem {
                        path,
                        message: format!("`{field}` names `{name}`, which is not a column"),
                        help: Some(self.suggest(name)),
                    });
                }
            }
        };
        check_refs("primary_key", &self.primary_key);
        check_refs("filterable", &self.filterable);
        for (i, column) in self.columns.iter().enumerate() {
            for mut problem in column.value_problems() {
                let mut path = vec!["columns".to_string(), i.to_string()];
                path.append(&mut problem.path);
                problem.path = path;
                out.push(problem);
            }
        }
        if let Some(csv) = &self.csv {
            if self.format != Format::Csv {
                out.push(DatasetProblem {
                    path: vec!["csv".into()],
                    message: "`csv` options are for datasets with `format: csv`".into(),
                    help: Some("remove `csv`, or set `format: csv`".into()),
                });
            }
            for mut problem in csv.problems() {
                problem.path.insert(0, "csv".into());
                out.push(problem);
            }
        }
        out
    }

    fn suggest(&self, name: &str) -> String {
        let names: Vec<&str> = self.columns.iter().map(|c| c.name.as_str()).collect();
        match names.iter().find(|c| edit_distance(c, name) <= 2) {
            Some(close) => format!("did you mean `{close}`?"),
            None => format!("the columns are: {}", names.join(", ")),
        }
    }
}

/// Levenshtein distance, small enough to keep the functions free of extra crates.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset(primary_key: &[&str], filterable: &[&str]) -> Dataset {
        Dataset {
            format: Format::Ndjson,
            csv: None,
            columns: vec![
                Column::new("id", ColumnType::Uuid),
                Column {
                    nullable: true,
                    ..Column::new("note", ColumnType::Text)
                },
            ],
            primary_key: primary_key.iter().map(|s| s.to_string()).collect(),
            on_conflict: OnConflict::Ignore,
            filterable: filterable.iter().map(|s| s.to_string()).collect(),
            description: None,
            allow_destructive_changes: false,
        }
    }

    #[test]
    fn valid_dataset_has_no_problems() {
        assert_eq!(dataset(&["id"], &["note"]).problems(), vec![]);
    }

    #[test]
    fn records_are_read_in_the_range_column_then_the_key() {
        let d = dataset(&["sensor_id", "read_at"], &[]);
        assert_eq!(d.read_order(None), ["sensor_id", "read_at"]);
        assert_eq!(d.read_order(Some("read_at")), ["read_at", "sensor_id"]);
        assert_eq!(d.read_order(Some("sensor_id")), ["sensor_id", "read_at"]);
        assert_eq!(d.read_order(Some("day")), ["day", "sensor_id", "read_at"]);
    }

    #[test]
    fn key_and_filters_must_name_columns() {
        let problems = dataset(&["idd", "note"], &["nope", "nope"]).problems();
        let messages: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(
            messages,
            vec![
                "`primary_key` names `idd`, which is not a column",
                "primary key column `note` is nullable",
                "`filterable` names `nope`, which is not a column",
                "`nope` is listed twice in `filterable`",
            ]
        );
        assert_eq!(problems[0].help.as_deref(), Some("did you mean `id`?"));
        assert_eq!(problems[0].path, vec!["primary_key", "0"]);
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
