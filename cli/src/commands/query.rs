//! `pipeline query`: read records of a dataset through the API.

use std::fmt;

use pipeline_contract::RecordsPage;
use serde::Serialize;
use serde_json::Value;

use super::Cli;
use crate::client::{Api, Target, client_error};
use crate::{Error, output::Ui};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    /// Dataset to read.
    #[arg(short, long)]
    pub dataset: String,
    /// A filter on a filterable column: `col=value`, `col>=value` or `col<value` (repeatable).
    #[arg(short = 'w', long = "where", value_name = "FILTER")]
    pub filters: Vec<String>,
    /// Most records to read (1 to 1000).
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Continue after a previous page (its `next_cursor`).
    #[arg(long)]
    pub cursor: Option<String>,
}

/// A page of records: one JSON object a line, or the API's answer as is.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct Page(pub RecordsPage<Value>);

impl fmt::Display for Page {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for record in &self.0.records {
            writeln!(f, "{record}")?;
        }
        Ok(())
    }
}

/// `col>=v` -> (`col.gte`, v); `col<v` -> (`col.lt`, v); `col=v` -> (`col`, v).
fn parse_filter(filter: &str) -> Option<(String, String)> {
    for (op, suffix) in [(">=", ".gte"), ("<", ".lt"), ("=", "")] {
        if let Some((column, value)) = filter.split_once(op)
            && !column.is_empty()
        {
            return Some((format!("{}{suffix}", column.trim()), value.to_string()));
        }
    }
    None
}

pub fn run(cli: &Cli, args: &Args, ui: &Ui) -> Result<(), Error> {
    let mut query: Vec<(String, String)> = Vec::new();
    for filter in &args.filters {
        let pair = parse_filter(filter).ok_or_else(|| Error::Rejected {
            message: format!(
                "`{filter}` is not a filter: write `col=value`, `col>=value` or `col<value`"
            ),
        })?;
        query.push(pair);
    }
    query.push(("limit".into(), args.limit.to_string()));
    if let Some(cursor) = &args.cursor {
        query.push(("cursor".into(), cursor.clone()));
    }
    let mut api = Api::new(&args.target)?;
    // The environment's spec, when there is one here, says how to sign.
    if let Ok(env) = crate::spec::load::Loader::new(cli.environments.clone()).load(&args.target.env)
    {
        api = api.with_auth(env.spec.api.auth, &env.spec.region);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| client_error(format!("cannot start the async runtime: {e}")))?;
    let page: RecordsPage<Value> = runtime.block_on(async {
        let request = api
            .request(
                reqwest::Method::GET,
                &format!("/v1/datasets/{}/records", args.dataset),
            )
            .query(&query);
        api.call(request, 200).await
    })?;
    let page = Page(page);
    ui.result(&page);
    if let (Some(cursor), false) = (&page.0.next_cursor, ui.json()) {
        eprintln!("more records follow: --cursor {cursor}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_filter;

    #[test]
    fn filters() {
        assert_eq!(
            parse_filter("kind=click"),
            Some(("kind".into(), "click".into()))
        );
        assert_eq!(
            parse_filter("at>=2024-01-01"),
            Some(("at.gte".into(), "2024-01-01".into()))
        );
        assert_eq!(parse_filter("n<5"), Some(("n.lt".into(), "5".into())));
        assert_eq!(parse_filter("a=b=c"), Some(("a".into(), "b=c".into())));
        assert_eq!(parse_filter("nothing"), None);
    }
}
