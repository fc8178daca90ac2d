//! Reading records: filters and keyset pages.

use super::*;

/// A filter of the records endpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Eq(String, String),
    Gte(String, String),
    Lt(String, String),
}

/// One page of records, as JSON objects, and the key of the last one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page {
    pub records: Vec<serde_json::Value>,
    /// Key values of the last record when more may follow.
    #[serde(skip)]
    pub last_key: Option<Vec<serde_json::Value>>,
}

/// The Postgres type a text parameter is cast to for comparison.
fn cast(kind: ColumnType) -> &'static str {
    kind.postgres()
}

/// Reads a page of records in key order, after `after` (the previous page's
/// last key), with equality and range filters. Values travel as text
/// parameters cast to the column's type: never spliced into the SQL.
pub async fn records(
    client: &impl GenericClient,
    name: &str,
    dataset: &Dataset,
    filters: &[Filter],
    after: Option<&[String]>,
    limit: u32,
) -> Result<Page, DbError> {
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
    let key_cols: Vec<&crate::dataset::Column> = dataset
        .primary_key
        .iter()
        .filter_map(|k| dataset.column(k))
        .collect();
    if let Some(after) = after {
        let mut placeholders = Vec::new();
        for (col, value) in key_cols.iter().zip(after) {
            params.push(value.clone());
            placeholders.push(format!("${}::text::{}", params.len(), cast(col.kind)));
        }
        let key: Vec<String> = key_cols.iter().map(|c| ident(&c.name)).collect();
        clauses.push(format!(
            "({}) > ({})",
            key.join(", "),
            placeholders.join(", ")
        ));
    }
    let where_sql = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    let order: Vec<String> = key_cols.iter().map(|c| ident(&c.name)).collect();
    params.push((limit + 1).to_string());
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
        "SELECT row_to_json(t)::text FROM (SELECT {} FROM {} {where_sql} ORDER BY {} LIMIT ${}::text::bigint) t",
        select.join(", "),
        table(name),
        order.join(", "),
        params.len()
    );
    let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
        .iter()
        .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect();
    let rows = client.query(&sql, &refs).await?;
    let mut records: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| serde_json::from_str(r.get::<_, &str>(0)).unwrap_or(serde_json::Value::Null))
        .collect();
    let more = records.len() > limit as usize;
    records.truncate(limit as usize);
    let last_key = if more {
        records
            .last()
            .map(|r| key_cols.iter().map(|c| r[&c.name].clone()).collect())
    } else {
        None
    };
    Ok(Page { records, last_key })
}

/// Whether the database answers.
pub async fn ping(client: &impl GenericClient) -> Result<(), DbError> {
    client.query_one("SELECT 1", &[]).await?;
    Ok(())
}
