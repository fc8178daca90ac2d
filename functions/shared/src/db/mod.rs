//! Postgres: the pipeline's own schema, migrations that follow the datasets,
//! batch bookkeeping, and loading a batch exactly once.
//!
//! Tables of datasets live in `public`, named after the dataset. The
//! pipeline's bookkeeping lives in the `pipeline` schema.

use std::collections::BTreeMap;
use std::future::Future;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, GenericClient, Transaction};

use crate::dataset::{ColumnType, Dataset, OnConflict, RESERVED_PREFIX};
use crate::records::{Decoder, RecordError};
use crate::store::{ByteStream, StoreError};

mod batches;
mod load;
mod read;
mod revisions;
mod schema;
mod slices;
mod undo;

pub use batches::*;
pub use load::*;
pub use read::*;
pub use revisions::*;
pub use schema::*;
pub use slices::*;
pub use undo::*;

/// Rows are sent to Postgres in pieces of about this size.
const COPY_PIECE: usize = 1024 * 1024;
/// Pieces decoded ahead of the COPY, at most.
const COPY_AHEAD: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database: {}", describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "migrating dataset `{dataset}` needs changes that can lose data: {changes}; set `datasets.{dataset}.allow_destructive_changes: true` to make them"
    )]
    Destructive { dataset: String, changes: String },
    #[error("table `{0}` exists but was not created by the pipeline")]
    Foreign(String),
    #[error("no batch {0}")]
    NoBatch(uuid::Uuid),
    #[error("the database pool: {0}")]
    Pool(String),
    /// The revision of a dataset that a batch was accepted under cannot be
    /// used here.
    #[error("batch of dataset `{dataset}` revision {revision}: {reason}")]
    Revision {
        dataset: String,
        revision: String,
        reason: String,
    },
    /// A records cursor from a read in another order (other range filters).
    #[error("the cursor belongs to a read with other range filters")]
    Cursor,
    /// A status the schema's CHECK constraint does not allow: the table was
    /// changed by hand.
    #[error("pipeline.batches holds {0}")]
    BadStatus(#[from] BatchStatusError),
}

pub use pipeline_contract::{BatchStatus, UnknownStatus as BatchStatusError};

/// A status column as the schema writes it.
pub(crate) fn status_of(text: &str) -> Result<BatchStatus, DbError> {
    Ok(text.parse()?)
}

/// A Postgres error with its cause: tokio-postgres shows only "db error"
/// for errors the server sends.
fn describe(e: &tokio_postgres::Error) -> String {
    match (e.as_db_error(), std::error::Error::source(e)) {
        (Some(db), _) => format!("{} ({})", db.message(), db.code().code()),
        (None, Some(cause)) => format!("{e}: {cause}"),
        (None, None) => e.to_string(),
    }
}

impl DbError {
    /// Whether trying again later may succeed (a lost connection, a deadlock),
    /// as opposed to a problem with the batch or the spec.
    pub fn is_retryable(&self) -> bool {
        match self {
            DbError::Postgres(e) => e.as_db_error().is_none_or(|db| {
                let code = db.code();
                *code == SqlState::T_R_DEADLOCK_DETECTED
                    || *code == SqlState::T_R_SERIALIZATION_FAILURE
                    || *code == SqlState::ADMIN_SHUTDOWN
                    || *code == SqlState::TOO_MANY_CONNECTIONS
            }),
            DbError::Revision { .. } => true,
            DbError::Store(StoreError::NotFound(_)) => false,
            DbError::Store(_) => true,
            _ => false,
        }
    }
}

/// Closes a pooled connection instead of returning it to the pool: after an
/// error its session may be anywhere (inside a COPY or a transaction, or in
/// a protocol state the client lost track of), so the next user of the pool
/// gets a new connection rather than this one.
pub fn discard(client: deadpool_postgres::Object) {
    drop(deadpool_postgres::Object::take(client));
}

/// How often a session checks that its client is still there while it
/// runs a statement (`client_connection_check_interval`, milliseconds): a
/// function stopped at its timeout leaves no statement running on, holding
/// its batch's lock.
pub const CLIENT_CHECK_MS: u32 = 1000;

/// A pooled connection held for one piece of work: returned to the pool
/// when released after a success, closed otherwise — after an error, and
/// when the work is dropped before it ends (an invocation stopped at its
/// deadline), so that its session ends with the connection instead of
/// running on in the pool (the server stops an orphaned statement within
/// `client_connection_check_interval`).
pub struct Held {
    /// Taken only by `release` and `drop`, which consume the value.
    object: Option<deadpool_postgres::Object>,
}

impl Held {
    pub fn new(object: deadpool_postgres::Object) -> Held {
        Held {
            object: Some(object),
        }
    }

    /// Back to the pool after a success, closed after an error.
    pub fn release<T, E>(mut self, result: &Result<T, E>) {
        if result.is_ok() {
            drop(self.object.take());
        }
    }

    fn client(&self) -> &deadpool_postgres::Object {
        self.object
            .as_ref()
            .expect("a connection is held until released")
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(object) = self.object.take() {
            discard(object);
        }
    }
}

impl std::ops::Deref for Held {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client()
    }
}

impl std::ops::DerefMut for Held {
    fn deref_mut(&mut self) -> &mut Client {
        self.object
            .as_mut()
            .expect("a connection is held until released")
    }
}

/// The staging table of a batch loaded in chunks.
pub(crate) fn staging(batch_id: uuid::Uuid) -> String {
    format!(
        "pipeline.{}",
        ident(&format!("stage_{}", batch_id.simple()))
    )
}

/// `"name"`: dataset and column names are validated identifiers
/// (lower case letters, digits and `_`), so quoting them is enough.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{name}\"")
}

fn table(dataset: &str) -> String {
    format!("public.{}", ident(dataset))
}

pub(crate) fn column_list(dataset: &Dataset) -> String {
    dataset
        .columns
        .iter()
        .map(|c| ident(&c.name))
        .collect::<Vec<_>>()
        .join(", ")
}
