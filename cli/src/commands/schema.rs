//! `pipeline schema`: the JSON Schema of environment files.

use serde_json::Value;

use crate::spec::check::schema;
use crate::{Error, output::Ui};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the schema of a complete, merged environment (every required key
    /// present) instead of that of one file, which may set only some keys.
    #[arg(long)]
    pub merged: bool,
}

pub fn run(args: &Args, _ui: &Ui) -> Result<(), Error> {
    let mut value = schema().clone();
    if !args.merged {
        strip_required(&mut value);
    }
    if let Value::Object(map) = &mut value {
        map.insert("title".into(), Value::String("pipeline environment".into()));
    }
    let text = serde_json::to_string_pretty(&value).map_err(|e| Error::Render {
        what: "the schema".into(),
        message: e.to_string(),
    })?;
    println!("{text}");
    Ok(())
}

/// A single file only overrides what it needs, so no key is required in it.
fn strip_required(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("required");
            map.values_mut().for_each(strip_required);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_required),
        _ => {}
    }
}
