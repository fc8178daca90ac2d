//! Reading records: filters and keyset pages.

use super::*;

/// A filter of the records endpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Eq(String, String),
    Gte(String, String),
    Lt(String, String),
}

/// Where a page of records ended: the columns the records were read in
/// ([`Dataset::read_order`]) and the last record's values of them, as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Cursor {
    pub by: Vec<String>,
    pub after: Vec<String>,
}

/// One page of records, as JSON objects, and where it ended when more may
/// follow.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page {
    pub records: Vec<serde_json::Value>,
    #[serde(skip)]
    pub next: Option<Cursor>,
}

/// The Postgres type a text parameter is cast to for comparison.
fn cast(kind: ColumnType) -> &'static str {
    kind.postgres()
}

/// A value of a record as JSON gives it, as the text Postgres reads back.
fn text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Reads a page of records after `after` (where the previous page ended),
/// with equality and range filters. Records come in key order, or, with a
/// range filter, in its column's order and then the key's, so that the
/// page is one range scan of the filter's index and never a walk that
/// discards rows until the page is full. Values travel as text parameters
/// cast to the column's type: never spliced into the SQL.
pub async fn records(
    client: &impl GenericClient,
    name: &str,
    dataset: &Dataset,
    filters: &[Filter],
    after: Option<&Cursor>,
    limit: u32,
) -> Result<Page, DbError> {
    let read = read(name, dataset, filters, after, limit)?;
    let rows = client.query(&read.sql, &read.refs()).await?;
    Ok(page(read, &rows, limit))
}

/// [`records`] on a pooled connection, whose prepared statements are kept:
/// a read of a shape seen before on the connection is one round trip, not
/// two, and is not parsed and planned again.
pub async fn records_cached(
    client: &deadpool_postgres::ClientWrapper,
    name: &str,
    dataset: &Dataset,
    filters: &[Filter],
    after: Option<&Cursor>,
    limit: u32,
) -> Result<Page, DbError> {
    let read = read(name, dataset, filters, after, limit)?;
    let statement = client.prepare_cached(&read.sql).await?;
    let rows = client.query(&statement, &read.refs()).await?;
    Ok(page(read, &rows, limit))
}

/// A page from the rows of a [`Read`].
fn page(read: Read, rows: &[tokio_postgres::Row], limit: u32) -> Page {
    let mut records: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| serde_json::from_str(r.get::<_, &str>(0)).unwrap_or(serde_json::Value::Null))
        .collect();
    let more = records.len() > limit as usize;
    records.truncate(limit as usize);
    let next = match records.last() {
        Some(last) if more => Some(Cursor {
            after: read.by.iter().map(|c| text(&last[c])).collect(),
            by: read.by,
        }),
        _ => None,
    };
    Page { records, next }
}

/// The statement that reads a page of records, and its parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Read {
    pub sql: String,
    /// Each travels as text, cast in the statement.
    pub params: Vec<String>,
    /// The columns the records come in.
    pub by: Vec<String>,
}

impl Read {
    fn refs(&self) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect()
    }
}

/// The statement [`records`] runs, so that its plan can be examined.
pub fn read(
    name: &str,
    dataset: &Dataset,
    filters: &[Filter],
    after: Option<&Cursor>,
    limit: u32,
) -> Result<Read, DbError> {
    let range = filters.iter().find_map(|f| match f {
        Filter::Gte(c, _) | Filter::Lt(c, _) => Some(c.as_str()),
        Filter::Eq(..) => None,
    });
    let order: Vec<&crate::dataset::Column> = dataset
        .read_order(range)
        .into_iter()
        .filter_map(|c| dataset.column(c))
        .collect();
    let mut clauses = Vec::new();
    let mut params: Vec<String> = Vec::new();
    for filter in filters {
        let (column, op, value) = match filter {
            Filter::Eq(c, v) => (c, "=", v),
            Filter::Gte(c, v) => (c, ">=", v),
            Filter::Lt(c, v) => (c, "<", v),
        };
        let Some(col) = dataset.column(column) else {
            continue;
        };
        params.push(value.clone());
        clauses.push(format!(
            "{} {op} ${}::text::{}",
            ident(column),
            params.len(),
            cast(col.kind)
        ));
    }
    let columns: Vec<String> = order.iter().map(|c| ident(&c.name)).collect();
    if let Some(after) = after {
        let by: Vec<&str> = order.iter().map(|c| c.name.as_str()).collect();
        if after.by != by || after.after.len() != order.len() {
            return Err(DbError::Cursor);
        }
        let mut placeholders = Vec::new();
        for (col, value) in order.iter().zip(&after.after) {
            params.push(value.clone());
            placeholders.push(format!("${}::text::{}", params.len(), cast(col.kind)));
        }
        clauses.push(format!(
            "({}) > ({})",
            columns.join(", "),
            placeholders.join(", ")
        ));
    }
    clauses.push(shown());
    let where_sql = format!("WHERE {}", clauses.join(" AND "));
    // The limit is written out, not a parameter: a generic plan of a
    // cached statement would otherwise be costed for an unknown limit
    // (a tenth of the table) and might sort instead of reading in order.
    // Numerics travel as strings so that no precision is lost in JSON.
    let select: Vec<String> = dataset
        .columns
        .iter()
        .map(|c| match c.kind {
            ColumnType::Numeric => format!("{0}::text AS {0}", ident(&c.name)),
            _ => ident(&c.name),
        })
        .collect();
    let sql = format!(
        "SELECT row_to_json(t)::text FROM (SELECT {} FROM {} {where_sql} ORDER BY {} LIMIT {}) t",
        select.join(", "),
        visible(name),
        columns.join(", "),
        u64::from(limit) + 1
    );
    Ok(Read {
        sql,
        params,
        by: order.iter().map(|c| c.name.clone()).collect(),
    })
}

/// Whether the database answers.
pub async fn ping(client: &impl GenericClient) -> Result<(), DbError> {
    client.query_one("SELECT 1", &[]).await?;
    Ok(())
}
