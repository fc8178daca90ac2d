//! How a column's values are written in batches: date and timestamp
//! formats, time zones, decimal marks and boolean words. The loader turns
//! every value into its column's Postgres type, so the table holds proper
//! types whatever the batch's dialect.

use chrono::format::{Item, StrftimeItems};
use chrono::{NaiveDate, NaiveDateTime};
use serde::{Deserialize, Serialize};

use crate::{Column, ColumnType, DatasetProblem};

/// The mark between a number's whole and fractional parts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum DecimalMark {
    /// `1234.5`
    #[default]
    Point,
    /// `1234,5`
    Comma,
}

/// How a date or timestamp column's values are written, from its `format`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeFormat {
    /// ISO 8601: `2024-01-31` for dates, RFC 3339 for timestamps.
    Iso,
    /// Seconds since 1970-01-01T00:00:00Z, with an optional fraction.
    EpochSeconds,
    /// Whole milliseconds since 1970-01-01T00:00:00Z.
    EpochMillis,
    /// A strftime-style pattern, such as `%Y/%m/%d` or `%d.%m.%Y %H:%M`.
    Pattern(String),
}

impl TimeFormat {
    /// The format a column's `format` names.
    pub fn of(format: Option<&str>) -> TimeFormat {
        match format {
            None => TimeFormat::Iso,
            Some("epoch_seconds") => TimeFormat::EpochSeconds,
            Some("epoch_millis") => TimeFormat::EpochMillis,
            Some(pattern) => TimeFormat::Pattern(pattern.to_string()),
        }
    }

    /// Whether values are numbers (JSON numbers are accepted for them).
    pub fn is_epoch(&self) -> bool {
        matches!(self, TimeFormat::EpochSeconds | TimeFormat::EpochMillis)
    }
}

impl std::fmt::Display for TimeFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TimeFormat::Iso => f.write_str("ISO 8601"),
            TimeFormat::EpochSeconds => f.write_str("seconds since 1970-01-01 UTC"),
            TimeFormat::EpochMillis => f.write_str("milliseconds since 1970-01-01 UTC"),
            TimeFormat::Pattern(p) => write!(f, "`{p}`"),
        }
    }
}

/// Whether a strftime pattern carries a UTC offset (`%z` and its variants).
pub fn pattern_has_offset(pattern: &str) -> bool {
    StrftimeItems::new(pattern).any(|item| {
        matches!(
            item,
            Item::Fixed(
                chrono::format::Fixed::TimezoneOffset
                    | chrono::format::Fixed::TimezoneOffsetColon
                    | chrono::format::Fixed::TimezoneOffsetDoubleColon
                    | chrono::format::Fixed::TimezoneOffsetTripleColon
                    | chrono::format::Fixed::TimezoneOffsetColonZ
                    | chrono::format::Fixed::TimezoneOffsetZ
                    | chrono::format::Fixed::RFC2822
                    | chrono::format::Fixed::RFC3339
            )
        )
    })
}

/// The time zone of timestamps written without an offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Timezone {
    Utc,
    /// A fixed offset such as `+01:00`.
    Offset(String),
    /// An IANA name such as `Europe/Paris`, which follows daylight saving time.
    Named(String),
}

impl Timezone {
    /// Reads a column's `timezone`; `None` when it is not written as a zone.
    pub fn parse(text: &str) -> Option<Timezone> {
        if text == "UTC" {
            return Some(Timezone::Utc);
        }
        let b = text.as_bytes();
        let offset = b.len() == 6
            && matches!(b[0], b'+' | b'-')
            && b[1..3].iter().all(u8::is_ascii_digit)
            && b[3] == b':'
            && b[4..6].iter().all(u8::is_ascii_digit)
            && text[1..3] <= *"15"
            && text[4..6] < *"60";
        if offset {
            return Some(Timezone::Offset(text.to_string()));
        }
        let named = text.split('/').all(|part| {
            !part.is_empty()
                && part.starts_with(|c: char| c.is_ascii_alphabetic())
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+'))
        });
        named.then(|| Timezone::Named(text.to_string()))
    }

    /// How the zone follows a timestamp in Postgres input.
    pub fn postgres(&self) -> &str {
        match self {
            Timezone::Utc => "UTC",
            Timezone::Offset(o) | Timezone::Named(o) => o,
        }
    }
}

/// The words a boolean column reads as true, by default.
pub const TRUE_VALUES: [&str; 4] = ["true", "t", "1", "yes"];
/// The words a boolean column reads as false, by default.
pub const FALSE_VALUES: [&str; 4] = ["false", "f", "0", "no"];

impl Column {
    /// How the column's dates or timestamps are written.
    pub fn time_format(&self) -> TimeFormat {
        TimeFormat::of(self.format.as_deref())
    }

    /// The column's time zone for timestamps without an offset (UTC by default).
    pub fn timezone(&self) -> Timezone {
        self.timezone
            .as_deref()
            .and_then(Timezone::parse)
            .unwrap_or(Timezone::Utc)
    }

    /// The words read as true, and those read as false (compared ignoring ASCII case).
    pub fn bool_words(&self) -> (Vec<&str>, Vec<&str>) {
        fn words<'a>(given: &'a Option<Vec<String>>, default: &[&'static str]) -> Vec<&'a str> {
            match given {
                Some(words) => words.iter().map(String::as_str).collect(),
                None => default.to_vec(),
            }
        }
        (
            words(&self.true_values, &TRUE_VALUES),
            words(&self.false_values, &FALSE_VALUES),
        )
    }

    /// A sentence on how the column's values are written, when that is not
    /// the API's own form; for documents and error messages.
    pub fn written_as(&self) -> Option<String> {
        let mut parts = Vec::new();
        match (self.kind, self.time_format()) {
            (_, TimeFormat::Iso) => {}
            (ColumnType::Date, TimeFormat::Pattern(p)) => {
                parts.push(format!("written as `{p}`, such as {}", example_date(&p)));
            }
            (_, TimeFormat::Pattern(p)) => {
                let zone = if pattern_has_offset(&p) {
                    String::new()
                } else {
                    format!(", in {}", self.timezone().postgres())
                };
                parts.push(format!(
                    "written as `{p}`, such as {}{zone}",
                    example_timestamp(&p)
                ));
            }
            (_, format) => parts.push(format!("written as {format}")),
        }
        if self.decimal == Some(DecimalMark::Comma) {
            parts.push("with a decimal comma, such as 1234,5".into());
        }
        if self.true_values.is_some() || self.false_values.is_some() {
            let (yes, no) = self.bool_words();
            parts.push(format!(
                "true as {}, false as {}",
                yes.join(" or "),
                no.join(" or ")
            ));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }

    /// Problems with the column's value options, with paths below the column.
    pub(crate) fn value_problems(&self) -> Vec<DatasetProblem> {
        let mut out = Vec::new();
        let mut problem = |key: &str, message: String, help: &str| {
            out.push(DatasetProblem {
                path: vec![key.to_string()],
                message,
                help: Some(help.to_string()),
            });
        };
        let name = &self.name;
        if let Some(default) = &self.default
            && let Some(why) = self.kind.query_value_problem(&default.to_string())
        {
            problem(
                "default",
                format!("column `{name}`: the default does not fit the column: {why}"),
                "write the default as the API answers values of the column's type",
            );
        }
        if let Some(format) = &self.format {
            match (self.kind, self.time_format()) {
                (ColumnType::Date | ColumnType::Timestamptz, TimeFormat::Pattern(p)) => {
                    if let Err(why) = check_pattern(self.kind, &p) {
                        problem(
                            "format",
                            format!("column `{name}`: the format `{p}` {why}"),
                            if self.kind == ColumnType::Date {
                                "a date format needs the year, month and day, such as `%Y/%m/%d` or `%d.%m.%Y`"
                            } else {
                                "a timestamp format needs a date and a time, such as `%Y-%m-%d %H:%M:%S`, or is `epoch_seconds` or `epoch_millis`"
                            },
                        );
                    }
                }
                (ColumnType::Timestamptz, _) => {}
                (ColumnType::Date, _) => problem(
                    "format",
                    format!("column `{name}`: `{format}` is for timestamps, not dates"),
                    "write the date's pattern, such as `%Y/%m/%d`, or make the column a timestamptz",
                ),
                (kind, _) => problem(
                    "format",
                    format!(
                        "column `{name}` is {}: only date and timestamptz columns take a `format`",
                        kind.postgres()
                    ),
                    "remove `format`",
                ),
            }
        }
        if let Some(zone) = &self.timezone {
            let takes_zone = self.kind == ColumnType::Timestamptz
                && match self.time_format() {
                    TimeFormat::Pattern(p) => !pattern_has_offset(&p),
                    _ => false,
                };
            if Timezone::parse(zone).is_none() {
                problem(
                    "timezone",
                    format!("column `{name}`: `{zone}` is not a time zone"),
                    "write `UTC`, an offset such as `+01:00`, or a name such as `Europe/Paris`",
                );
            } else if !takes_zone {
                problem(
                    "timezone",
                    format!(
                        "column `{name}`: `timezone` applies only to a timestamptz whose `format` has no offset"
                    ),
                    "remove `timezone`, or give the column a `format` such as `%Y-%m-%d %H:%M`",
                );
            }
        }
        if self.decimal.is_some() && !matches!(self.kind, ColumnType::Numeric | ColumnType::Float) {
            problem(
                "decimal",
                format!("column `{name}`: only numeric and float columns take a `decimal` mark"),
                "remove `decimal`",
            );
        }
        for (key, words) in [
            ("true_values", &self.true_values),
            ("false_values", &self.false_values),
        ] {
            let Some(words) = words else { continue };
            if self.kind != ColumnType::Bool {
                problem(
                    key,
                    format!("column `{name}`: only bool columns take `{key}`"),
                    &format!("remove `{key}`"),
                );
            } else if words.is_empty() || words.iter().any(|w| w.trim().is_empty()) {
                problem(
                    key,
                    format!("column `{name}`: `{key}` lists no word, or an empty one"),
                    "list the words, such as [Y, yes]; nulls are the CSV dialect's `null_values`",
                );
            }
        }
        if self.kind == ColumnType::Bool {
            let (yes, no) = self.bool_words();
            if let Some(both) = yes
                .iter()
                .find(|y| no.iter().any(|n| n.eq_ignore_ascii_case(y)))
            {
                problem(
                    if self.true_values.is_some() {
                        "true_values"
                    } else {
                        "false_values"
                    },
                    format!("column `{name}`: `{both}` would be read as both true and false"),
                    "give `true_values` and `false_values` no word in common",
                );
            }
        }
        out
    }
}

/// Checks that a pattern parses back what it writes, for a date or a timestamp.
fn check_pattern(kind: ColumnType, pattern: &str) -> Result<(), String> {
    let items = StrftimeItems::new(pattern)
        .parse()
        .map_err(|_| "is not a valid strftime pattern".to_string())?;
    if items.is_empty() {
        return Err("is empty".into());
    }
    let sample = sample();
    let mut written = String::new();
    use std::fmt::Write as _;
    if kind == ColumnType::Date {
        write!(written, "{}", sample.date().format_with_items(items.iter()))
            .map_err(|_| "cannot write a date".to_string())?;
        match NaiveDate::parse_from_str(&written, pattern) {
            Ok(date) if date == sample.date() => Ok(()),
            _ => Err("does not give a whole date".into()),
        }
    } else {
        let offset = pattern_has_offset(pattern);
        let at = sample.and_utc().fixed_offset();
        write!(written, "{}", at.format_with_items(items.iter()))
            .map_err(|_| "cannot write a timestamp".to_string())?;
        let read = if offset {
            chrono::DateTime::parse_from_str(&written, pattern).map(|t| t.naive_utc())
        } else {
            NaiveDateTime::parse_from_str(&written, pattern)
        };
        match read {
            // Minutes are enough: `%H:%M` formats are common.
            Ok(t) if t.date() == sample.date() && t.format("%H%M").to_string() == "1345" => Ok(()),
            _ => Err("does not give a whole date and time".into()),
        }
    }
}

fn sample() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2024, 1, 31)
        .and_then(|d| d.and_hms_opt(13, 45, 30))
        .unwrap_or_default()
}

fn example_date(pattern: &str) -> String {
    let mut s = String::new();
    use std::fmt::Write as _;
    match StrftimeItems::new(pattern).parse() {
        Ok(items) => {
            let _ = write!(s, "{}", sample().date().format_with_items(items.iter()));
            s
        }
        Err(_) => pattern.to_string(),
    }
}

fn example_timestamp(pattern: &str) -> String {
    let mut s = String::new();
    use std::fmt::Write as _;
    match StrftimeItems::new(pattern).parse() {
        Ok(items) => {
            let at = sample().and_utc().fixed_offset();
            let _ = write!(s, "{}", at.format_with_items(items.iter()));
            s
        }
        Err(_) => pattern.to_string(),
    }
}

/// A sample date or timestamp (2024-01-31 13:45:30 UTC) as the column's
/// `format` writes it; `None` for ISO values and other types.
pub fn sample_value(column: &Column) -> Option<String> {
    let at = sample();
    Some(match (column.kind, column.time_format()) {
        (ColumnType::Date, TimeFormat::Pattern(p)) => example_date(&p),
        (ColumnType::Timestamptz, TimeFormat::Pattern(p)) => example_timestamp(&p),
        (ColumnType::Timestamptz, TimeFormat::EpochSeconds) => at.and_utc().timestamp().to_string(),
        (ColumnType::Timestamptz, TimeFormat::EpochMillis) => {
            at.and_utc().timestamp_millis().to_string()
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
