//! Reading records: filters and keyset pages.

use super::*;
use pipeline_contract::MAX_PAGE_BYTES;

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
    let rows = client.query_raw(&read.sql, read.params.iter()).await?;
    page(read, rows, limit).await
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
    let rows = client.query_raw(&statement, read.params.iter()).await?;
    page(read, rows, limit).await
}

/// A page from the rows of a [`Read`], taken as they come: up to `limit`
/// records, fewer when more would take over [`MAX_PAGE_BYTES`] in the
/// function's answer (the first record always goes in). The rows past the
/// page are not kept, so a page of large records holds a few of them in
/// memory, not `limit`.
async fn page(read: Read, rows: tokio_postgres::RowStream, limit: u32) -> Result<Page, DbError> {
    futures_util::pin_mut!(rows);
    let mut records: Vec<serde_json::Value> = Vec::new();
    let mut bytes = 0;
    let mut more = false;
    while let Some(row) = rows.next().await.transpose()? {
        let text: &str = row.try_get(0)?;
        bytes += answer_bytes(text);
        if records.len() == limit as usize || (bytes > MAX_PAGE_BYTES && !records.is_empty()) {
            more = true;
            break;
        }
        records.push(serde_json::from_str(text).unwrap_or(serde_json::Value::Null));
    }
    let next = match records.last() {
        Some(last) if more => Some(Cursor {
            after: read.by.iter().map(|c| text(&last[c])).collect(),
            by: read.by,
        }),
        _ => None,
    };
    Ok(Page { records, next })
}

/// The bytes a record's JSON takes in Lambda's answer, where the body is a
/// JSON string: a quote or backslash is escaped into two bytes, a control
/// character into up to six.
fn answer_bytes(json: &str) -> usize {
    json.bytes()
        .map(|b| match b {
            b'"' | b'\\' => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum::<usize>()
        + 1
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

/// The column whose order a read with range filters follows: of the
/// columns with a range filter, the one declared first in the dataset.
/// Never the first in the query string: API Gateway hands the parameters
/// to the function as a map, and lambda_http writes them back in the map's
/// order, which differs from request to request, so a cursor would belong
/// to one read and be refused by the next.
fn range_column<'a>(dataset: &'a Dataset, filters: &[Filter]) -> Option<&'a str> {
    dataset
        .columns
        .iter()
        .map(|c| c.name.as_str())
        .find(|name| {
            filters.iter().any(|f| match f {
                Filter::Gte(c, _) | Filter::Lt(c, _) => c == name,
                Filter::Eq(..) => false,
            })
        })
}

/// The statement [`records`] runs, so that its plan can be examined.
pub fn read(
    name: &str,
    dataset: &Dataset,
    filters: &[Filter],
    after: Option<&Cursor>,
    limit: u32,
) -> Result<Read, DbError> {
    let range = range_column(dataset, filters);
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
