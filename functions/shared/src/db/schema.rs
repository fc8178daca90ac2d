//! The pipeline's own schema, and migrations that follow the datasets.

use super::*;

const BOOKKEEPING: &str = r#"
CREATE SCHEMA IF NOT EXISTS pipeline;
CREATE TABLE IF NOT EXISTS pipeline.datasets (
    name text PRIMARY KEY,
    definition jsonb NOT NULL,
    version integer NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS pipeline.migrations (
    id bigserial PRIMARY KEY,
    dataset text NOT NULL,
    version integer NOT NULL,
    statement text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS pipeline.batches (
    batch_id uuid PRIMARY KEY,
    dataset text NOT NULL,
    object_key text NOT NULL,
    status text NOT NULL CHECK (status IN ('received', 'loading', 'loaded', 'failed')),
    idempotency_key text,
    records bigint,
    inserted bigint,
    duplicates bigint,
    sha256 text,
    size_bytes bigint,
    error_line bigint,
    error_column text,
    error_reason text,
    received_at timestamptz NOT NULL DEFAULT now(),
    loaded_at timestamptz,
    UNIQUE (dataset, idempotency_key)
);
CREATE TABLE IF NOT EXISTS pipeline.batch_chunks (
    batch_id uuid NOT NULL REFERENCES pipeline.batches ON DELETE CASCADE,
    chunk integer NOT NULL,
    start_byte bigint NOT NULL,
    end_byte bigint NOT NULL,
    status text NOT NULL CHECK (status IN ('pending', 'loaded', 'failed', 'skipped')),
    records bigint,
    error_line bigint,
    error_column text,
    error_reason text,
    PRIMARY KEY (batch_id, chunk)
);
-- A large object is cut into chunks as it is read (see `chunks::plan`): the
-- row of its unplanned rest is `pending` but not `planned` (every version
-- then waits for it before merging), and each cut turns it `split`, with
-- the piece cut and the new rest in the two rows after it. `lines` counts a
-- loaded chunk's line breaks, so that an error's line in the whole object
-- needs no reading; `header` is the CSV header its message carries.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = 'pipeline' AND table_name = 'batch_chunks' AND column_name = 'planned') THEN
        ALTER TABLE pipeline.batch_chunks
            ADD COLUMN planned boolean NOT NULL DEFAULT true,
            ADD COLUMN lines bigint,
            ADD COLUMN header text,
            DROP CONSTRAINT IF EXISTS batch_chunks_status_check,
            ADD CONSTRAINT batch_chunks_status_check CHECK (status IN ('pending', 'loaded', 'failed', 'skipped', 'split'));
    END IF;
END $$;
CREATE INDEX IF NOT EXISTS batches_status_idx ON pipeline.batches (status) WHERE status IN ('received', 'loading');
-- Every definition a migration moved a dataset to, by revision (see
-- `revisions`), and the revision each batch was accepted under.
CREATE TABLE IF NOT EXISTS pipeline.dataset_revisions (
    dataset text NOT NULL,
    revision text NOT NULL,
    definition jsonb NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dataset, revision)
);
ALTER TABLE pipeline.batches ADD COLUMN IF NOT EXISTS dataset_revision text;
-- A batch merged in slices (see `merge`): its rows carry its load number in
-- `pipeline_load` and stay hidden from reads while the load is listed here;
-- the rows it replaced are kept in `shadows` meanwhile. A load leaves the
-- list when its batch is `loaded` (all its rows appear at once), whichever
-- version of the loader marks it so; a failed batch's load stays, abandoned.
CREATE TABLE IF NOT EXISTS pipeline.hidden_loads (
    load bigserial PRIMARY KEY,
    batch_id uuid NOT NULL UNIQUE REFERENCES pipeline.batches ON DELETE CASCADE,
    merged_chunk integer NOT NULL DEFAULT -1,
    merged_line bigint NOT NULL DEFAULT 0,
    inserted bigint NOT NULL DEFAULT 0,
    abandoned boolean NOT NULL DEFAULT false,
    handoffs integer NOT NULL DEFAULT 0
);
-- A failed batch's merged slices are undone in slices too (see `undo`),
-- from the start of its staging table up to where its merge reached.
-- Only when missing: every read reads this table, and ALTER TABLE locks it.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = 'pipeline' AND table_name = 'hidden_loads' AND column_name = 'undone_chunk') THEN
        ALTER TABLE pipeline.hidden_loads
            ADD COLUMN undone_chunk integer NOT NULL DEFAULT -1,
            ADD COLUMN undone_line bigint NOT NULL DEFAULT 0;
    END IF;
    -- A load whose staging table is gone is undone by a sweep of its table's
    -- pages (see `undo`): the next page to sweep.
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = 'pipeline' AND table_name = 'hidden_loads' AND column_name = 'undone_page') THEN
        ALTER TABLE pipeline.hidden_loads ADD COLUMN undone_page bigint NOT NULL DEFAULT 0;
    END IF;
END $$;
CREATE TABLE IF NOT EXISTS pipeline.shadows (
    load bigint NOT NULL,
    dataset text NOT NULL,
    key jsonb NOT NULL,
    row jsonb NOT NULL,
    PRIMARY KEY (load, dataset, key)
);
CREATE OR REPLACE FUNCTION pipeline.batch_done() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'loaded' THEN
        DELETE FROM pipeline.hidden_loads WHERE batch_id = NEW.batch_id;
    ELSE
        UPDATE pipeline.hidden_loads SET abandoned = true WHERE batch_id = NEW.batch_id;
    END IF;
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS batch_done ON pipeline.batches;
CREATE TRIGGER batch_done AFTER UPDATE OF status ON pipeline.batches FOR EACH ROW
    WHEN (NEW.status IN ('loaded', 'failed') AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION pipeline.batch_done();
"#;

/// What a migration did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MigrationReport {
    /// Statements run, in order.
    pub statements: Vec<String>,
    /// The changes among them that the dataset allowed although they can
    /// lose data (a retype, a dropped column): batches of the previous
    /// definition may no longer load, so a deploy moves all traffic at once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destructive: Vec<String>,
}

fn create_table(name: &str, dataset: &Dataset) -> Vec<String> {
    let columns: Vec<String> = dataset
        .columns
        .iter()
        .map(|c| {
            format!(
                "{} {}{}{}",
                ident(&c.name),
                c.kind.postgres(),
                default_clause(c),
                if c.nullable { "" } else { " NOT NULL" }
            )
        })
        .collect();
    let key: Vec<String> = dataset.primary_key.iter().map(|k| ident(k)).collect();
    vec![
        format!(
            "CREATE TABLE {} ({}, {LOAD_COLUMN} bigint, PRIMARY KEY ({}))",
            table(name),
            columns.join(", "),
            key.join(", ")
        ),
        load_column_statistics(name),
    ]
}

/// Tells the planner to take the load column's values for distinct. A
/// large batch leaves one load number on most rows; estimated from such
/// statistics, the readers' "not a hidden load" condition keeps almost no
/// row, and a page of records was read with a scan of the whole table and
/// a sort (460 ms for a million rows) instead of an index range (0.4 ms).
fn load_column_statistics(name: &str) -> String {
    format!(
        "ALTER TABLE {} ALTER COLUMN {LOAD_COLUMN} SET (n_distinct = -1)",
        table(name)
    )
}

/// Whether a table's load column has the statistics setting above.
async fn load_statistics_set(tx: &Transaction<'_>, name: &str) -> Result<bool, DbError> {
    Ok(tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_attribute
             WHERE attrelid = to_regclass($1) AND attname = $2 AND 'n_distinct=-1' = ANY (attoptions))",
            &[&table(name), &LOAD_COLUMN],
        )
        .await?
        .get(0))
}

fn index_name(dataset: &str, suffix: &str) -> String {
    let name = format!("{dataset}_{suffix}_idx");
    name.chars().take(63).collect()
}

/// The index that serves the filters on `column`: its name and the
/// statement that makes it, over the columns records are read in with such
/// a filter (see [`Dataset::read_order`]), so that a page is one range scan
/// whether the filter is an equality or a range; `None` when the primary
/// key's index is in that order already.
fn filter_index(name: &str, dataset: &Dataset, column: &str) -> Option<(String, String)> {
    let order = dataset.read_order(Some(column));
    if order
        .iter()
        .copied()
        .eq(dataset.primary_key.iter().map(String::as_str))
    {
        return None;
    }
    let index = index_name(name, &format!("{column}_key"));
    let columns: Vec<String> = order.iter().map(|c| ident(c)).collect();
    let sql = format!(
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} ({})",
        ident(&index),
        table(name),
        columns.join(", ")
    );
    Some((index, sql))
}

/// The statements that give the table the filter indexes of `new` and drop
/// the pipeline's other indexes on it: those of filters `old` had, and the
/// one-column indexes of earlier versions. `existing` names the table's
/// valid indexes, so that nothing is made or dropped twice; `invalid` those
/// a build that was stopped left unusable (`CREATE INDEX CONCURRENTLY`
/// leaves its index behind, invalid), which are dropped and built again.
/// Every statement runs outside a transaction, without blocking writes.
fn index_statements(
    name: &str,
    old: Option<&Dataset>,
    new: &Dataset,
    existing: &[String],
    invalid: &[String],
) -> Vec<String> {
    let wanted: Vec<(String, String)> = new
        .filterable
        .iter()
        .filter_map(|c| filter_index(name, new, c))
        .collect();
    let mut ours: Vec<String> = Vec::new();
    let filters = old
        .into_iter()
        .flat_map(|o| &o.filterable)
        .chain(&new.filterable);
    for column in filters {
        for index in [
            index_name(name, column),
            index_name(name, &format!("{column}_key")),
        ] {
            if !ours.contains(&index) {
                ours.push(index);
            }
        }
    }
    let drop = |index: &str| format!("DROP INDEX CONCURRENTLY IF EXISTS public.{}", ident(index));
    let mut statements = Vec::new();
    for index in invalid {
        if ours.contains(index) || wanted.iter().any(|(w, _)| w == index) {
            statements.push(drop(index));
        }
    }
    for index in ours {
        if existing.contains(&index) && !wanted.iter().any(|(w, _)| *w == index) {
            statements.push(drop(&index));
        }
    }
    for (index, sql) in wanted {
        if !existing.contains(&index) {
            statements.push(sql);
        }
    }
    statements
}

/// ` DEFAULT '<value>'` for a column with a default, else nothing.
fn default_clause(column: &crate::dataset::Column) -> String {
    match &column.default {
        Some(value) => format!(" DEFAULT {}", literal(&value.to_string())),
        None => String::new(),
    }
}

/// A string literal of SQL.
fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// The statements that take a table from `old` to `new`, and the changes
/// among them that can lose data.
/// `physical` names the table's columns, those retired before included.
fn diff(
    name: &str,
    old: &Dataset,
    new: &Dataset,
    physical: &[String],
) -> (Vec<String>, Vec<String>) {
    let t = table(name);
    let mut statements = Vec::new();
    let mut destructive = Vec::new();
    for column in physical {
        if new.column(column).is_some() || column.starts_with(RESERVED_PREFIX) {
            continue;
        }
        let c = ident(column);
        if new.allow_destructive_changes {
            destructive.push(format!("drop column `{column}`"));
            statements.push(format!("ALTER TABLE {t} DROP COLUMN {c}"));
        } else if old.column(column).is_some_and(|o| !o.nullable) {
            // Retired, not dropped: batches of the revisions that have it
            // still load into it, and new ones leave it empty.
            statements.push(format!("ALTER TABLE {t} ALTER COLUMN {c} DROP NOT NULL"));
        }
    }
    for column in &new.columns {
        let c = ident(&column.name);
        match old.column(&column.name) {
            None => {
                // Rows there already, and rows loaded by versions that do
                // not know the column, take its default.
                if !column.nullable && column.default.is_none() {
                    destructive.push(format!("add column `{}` that is not nullable", column.name));
                }
                // A column retired before may still be there.
                statements.push(format!(
                    "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {c} {}{}{}",
                    column.kind.postgres(),
                    default_clause(column),
                    if column.nullable { "" } else { " NOT NULL" }
                ));
            }
            Some(before) => {
                if before.kind != column.kind {
                    destructive.push(format!(
                        "change column `{}` from {} to {}",
                        column.name,
                        before.kind.postgres(),
                        column.kind.postgres()
                    ));
                    statements.push(format!(
                        "ALTER TABLE {t} ALTER COLUMN {c} TYPE {} USING {c}::{}",
                        column.kind.postgres(),
                        column.kind.postgres()
                    ));
                }
                if before.nullable && !column.nullable {
                    destructive.push(format!("make column `{}` not nullable", column.name));
                    statements.push(format!("ALTER TABLE {t} ALTER COLUMN {c} SET NOT NULL"));
                } else if !before.nullable && column.nullable {
                    statements.push(format!("ALTER TABLE {t} ALTER COLUMN {c} DROP NOT NULL"));
                }
                if before.default != column.default {
                    statements.push(match &column.default {
                        Some(value) => format!(
                            "ALTER TABLE {t} ALTER COLUMN {c} SET DEFAULT {}",
                            literal(&value.to_string())
                        ),
                        None => format!("ALTER TABLE {t} ALTER COLUMN {c} DROP DEFAULT"),
                    });
                }
            }
        }
    }
    if old.primary_key != new.primary_key {
        destructive.push(format!(
            "change the primary key from ({}) to ({})",
            old.primary_key.join(", "),
            new.primary_key.join(", ")
        ));
        let key: Vec<String> = new.primary_key.iter().map(|k| ident(k)).collect();
        statements.push(format!(
            "ALTER TABLE {t} DROP CONSTRAINT {}",
            ident(&format!("{name}_pkey"))
        ));
        statements.push(format!(
            "ALTER TABLE {t} ADD PRIMARY KEY ({})",
            key.join(", ")
        ));
    }
    (statements, destructive)
}

/// The functions' database users: each may do what its function does and no
/// more. In RDS they log in with IAM tokens (the `rds_iam` role); the
/// statements are safe to run again.
fn grants(datasets: &BTreeMap<String, Dataset>) -> String {
    const USERS: [&str; 3] = ["pipeline_ingest", "pipeline_loader", "pipeline_query"];
    let mut sql = String::from("DO $$ BEGIN\n");
    for user in USERS {
        sql.push_str(&format!(
            "  BEGIN CREATE ROLE {user} LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END;\n"
        ));
    }
    sql.push_str(&format!(
        "  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rds_iam') THEN GRANT rds_iam TO {}; END IF;\nEND $$;\n",
        USERS.join(", ")
    ));
    // Reads run as pipeline_query, on the primary or a replica (roles'
    // settings replicate), each statement bounded by the server. Set for
    // this database only, so that the environments one server holds do not
    // update one catalog row at once.
    sql.push_str(&format!(
        "DO $$ BEGIN EXECUTE format('ALTER ROLE pipeline_query IN DATABASE %I SET statement_timeout = {}', current_database()); END $$;\n",
        pipeline_contract::READ_TIMEOUT_MS
    ));
    sql.push_str(&format!(
        "DO $$ BEGIN EXECUTE format('ALTER ROLE pipeline_loader IN DATABASE %I SET client_connection_check_interval = {}', current_database()); END $$;\n",
        super::CLIENT_CHECK_MS
    ));
    sql.push_str(&format!(
        "GRANT USAGE ON SCHEMA pipeline, public TO {};\n",
        USERS.join(", ")
    ));
    sql.push_str(
        "GRANT SELECT, INSERT, DELETE ON pipeline.batches TO pipeline_ingest;
         GRANT SELECT ON pipeline.datasets TO pipeline_ingest;
         GRANT SELECT, UPDATE ON pipeline.batches TO pipeline_loader;
         GRANT SELECT, INSERT, UPDATE ON pipeline.batch_chunks TO pipeline_loader;
         GRANT SELECT ON pipeline.dataset_revisions TO pipeline_loader;
         GRANT CREATE ON SCHEMA pipeline TO pipeline_loader;
         GRANT SELECT ON pipeline.batches TO pipeline_query;
         GRANT SELECT, INSERT, UPDATE, DELETE ON pipeline.hidden_loads, pipeline.shadows TO pipeline_loader;
         GRANT USAGE ON SEQUENCE pipeline.hidden_loads_load_seq TO pipeline_loader;
         GRANT SELECT ON pipeline.hidden_loads, pipeline.shadows TO pipeline_query;\n",
    );
    for name in datasets.keys() {
        let t = table(name);
        sql.push_str(&format!(
            "GRANT SELECT, INSERT, UPDATE ON {t} TO pipeline_loader;\nGRANT SELECT ON {t} TO pipeline_query;\n"
        ));
    }
    sql
}

/// Brings the database in line with the datasets, under an advisory lock
/// so that concurrent migrations wait for each other: the tables' changes in
/// one transaction, then the indexes, each built or dropped `CONCURRENTLY`
/// (outside a transaction), so that loads go on meanwhile. Additive changes
/// apply; changes that can lose data are refused unless the dataset allows
/// them. A migration stopped halfway is completed by the next one: tables
/// changed or not at all, indexes left invalid dropped and built again.
pub async fn migrate(
    client: &mut Client,
    datasets: &BTreeMap<String, Dataset>,
) -> Result<MigrationReport, DbError> {
    client
        .execute("SELECT pg_advisory_lock(hashtext('pipeline.migrate'))", &[])
        .await?;
    let migrated = migrate_locked(client, datasets).await;
    // After an error the pool closes the connection, which ends the lock
    // with its session if this cannot.
    let _ = client
        .execute(
            "SELECT pg_advisory_unlock(hashtext('pipeline.migrate'))",
            &[],
        )
        .await;
    migrated
}

/// How long a migration's table change waits for a lock before it gives
/// up and tries again: a change queued behind a long load would otherwise
/// hold up every write behind it (Postgres queues lock requests in order).
const MIGRATION_LOCK_TIMEOUT: &str = "2s";
/// How many times the tables' changes are tried while loads hold their
/// tables (about 5 minutes with the waits between).
const MIGRATION_ATTEMPTS: u32 = 60;

/// The pipeline's own tables, functions and triggers, brought up to date
/// in a transaction of their own, and only when they changed (a hash of
/// [`BOOKKEEPING`] is kept, with the trigger it made) or another version
/// ran its own since: their statements lock `pipeline.batches`, which every
/// load and every accepted batch writes.
async fn bookkeeping(client: &mut Client) -> Result<(), DbError> {
    use sha2::Digest;
    let hash = crate::store::hex(&sha2::Sha256::digest(BOOKKEEPING.as_bytes()));
    let known: bool = client
        .query_one(
            "SELECT to_regclass('pipeline.bookkeeping') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    if known {
        // The trigger it made is still the one there: every version's
        // bookkeeping makes it anew, so a previous version's migration (a
        // rollback) since then is seen, and this one runs again.
        let current: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pipeline.bookkeeping k JOIN pg_trigger t ON t.oid = k.trigger
                                WHERE k.hash = $1 AND t.tgname = 'batch_done')",
                &[&hash],
            )
            .await?
            .get(0);
        if current {
            return Ok(());
        }
    }
    let tx = client.transaction().await?;
    tx.batch_execute(BOOKKEEPING).await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS pipeline.bookkeeping (hash text PRIMARY KEY, trigger oid);
         ALTER TABLE pipeline.bookkeeping ADD COLUMN IF NOT EXISTS trigger oid;
         DELETE FROM pipeline.bookkeeping;",
    )
    .await?;
    tx.execute(
        "INSERT INTO pipeline.bookkeeping (hash, trigger)
         SELECT $1, oid FROM pg_trigger WHERE tgname = 'batch_done' AND tgrelid = 'pipeline.batches'::regclass",
        &[&hash],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

async fn migrate_locked(
    client: &mut Client,
    datasets: &BTreeMap<String, Dataset>,
) -> Result<MigrationReport, DbError> {
    bookkeeping(client).await?;
    let mut attempt = 1;
    let (mut report, indexes) = loop {
        match migrate_tables(client, datasets).await {
            Err(DbError::Postgres(e))
                if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE)
                    && attempt < MIGRATION_ATTEMPTS =>
            {
                tracing::info!(
                    attempt,
                    "a table is busy with a load; the migration tries again"
                );
                tokio::time::sleep(std::time::Duration::from_secs(3)).await;
                attempt += 1;
            }
            migrated => break migrated?,
        }
    };
    for (name, version, statement) in indexes {
        client.batch_execute(&statement).await?;
        client
            .execute(
                "INSERT INTO pipeline.migrations (dataset, version, statement) VALUES ($1, $2, $3)",
                &[&name, &version, &statement],
            )
            .await?;
        report.statements.push(statement);
    }
    Ok(report)
}

/// A dataset's table's indexes: the valid ones and those left invalid.
async fn indexes(tx: &Transaction<'_>, name: &str) -> Result<(Vec<String>, Vec<String>), DbError> {
    let rows = tx
        .query(
            "SELECT c.relname::text, i.indisvalid FROM pg_index i
             JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid
             JOIN pg_namespace n ON n.oid = t.relnamespace
             WHERE n.nspname = 'public' AND t.relname = $1",
            &[&name],
        )
        .await?;
    let (valid, invalid): (Vec<_>, Vec<_>) = rows.iter().partition(|r| r.get::<_, bool>(1));
    let names = |rows: Vec<&tokio_postgres::Row>| rows.iter().map(|r| r.get(0)).collect();
    Ok((names(valid), names(invalid)))
}

/// An index statement to run once the tables' transaction is committed:
/// the dataset, its definition's version, the statement.
type IndexStatement = (String, i32, String);

/// The tables' changes, in one transaction; the index statements to run
/// after it.
async fn migrate_tables(
    client: &mut Client,
    datasets: &BTreeMap<String, Dataset>,
) -> Result<(MigrationReport, Vec<IndexStatement>), DbError> {
    let tx = client.transaction().await?;
    tx.batch_execute(&format!(
        "SET LOCAL lock_timeout = '{MIGRATION_LOCK_TIMEOUT}'"
    ))
    .await?;
    let mut report = MigrationReport::default();
    let mut pending = Vec::new();
    for (name, dataset) in datasets {
        let stored = tx
            .query_opt(
                "SELECT definition, version FROM pipeline.datasets WHERE name = $1",
                &[name],
            )
            .await?;
        let (existing, invalid) = indexes(&tx, name).await?;
        let (statements, version, old) = match stored {
            None => {
                let exists: bool = tx
                    .query_one(
                        "SELECT to_regclass($1) IS NOT NULL",
                        &[&format!("public.{}", ident(name))],
                    )
                    .await?
                    .get(0);
                if exists {
                    return Err(DbError::Foreign(name.clone()));
                }
                (create_table(name, dataset), 1, None)
            }
            Some(row) => {
                let definition: serde_json::Value = row.get(0);
                let version: i32 = row.get(1);
                let old: Dataset = serde_json::from_value(definition)
                    .map_err(|_| DbError::Foreign(name.clone()))?;
                let physical: Vec<String> = tx
                    .query(
                        "SELECT column_name::text FROM information_schema.columns
                         WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
                        &[name],
                    )
                    .await?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                let (mut statements, destructive) = diff(name, &old, dataset, &physical);
                if !physical.iter().any(|c| c == LOAD_COLUMN) {
                    // Made before loads merged in slices (at once: a
                    // nullable column without a default rewrites nothing).
                    statements.push(format!(
                        "ALTER TABLE {} ADD COLUMN {LOAD_COLUMN} bigint",
                        table(name)
                    ));
                }
                if !load_statistics_set(&tx, name).await? {
                    statements.push(load_column_statistics(name));
                }
                if !destructive.is_empty() && !dataset.allow_destructive_changes {
                    return Err(DbError::Destructive {
                        dataset: name.clone(),
                        changes: destructive.join("; "),
                    });
                }
                report.destructive.extend(
                    destructive
                        .into_iter()
                        .map(|change| format!("dataset `{name}`: {change}")),
                );
                (statements, version + 1, Some(old))
            }
        };
        let index = index_statements(name, old.as_ref(), dataset, &existing, &invalid);
        record_revision(&tx, name, dataset).await?;
        // A change of formats alone changes no table, but is the current
        // definition from now on.
        if statements.is_empty() && index.is_empty() && old.as_ref() == Some(dataset) {
            continue;
        }
        for statement in &statements {
            tx.batch_execute(statement).await?;
            tx.execute(
                "INSERT INTO pipeline.migrations (dataset, version, statement) VALUES ($1, $2, $3)",
                &[name, &version, statement],
            )
            .await?;
        }
        let definition = serde_json::to_value(dataset).unwrap_or_default();
        tx.execute(
            "INSERT INTO pipeline.datasets (name, definition, version) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET definition = EXCLUDED.definition, version = EXCLUDED.version, updated_at = now()",
            &[name, &definition, &version],
        )
        .await?;
        report.statements.extend(statements);
        pending.extend(index.into_iter().map(|sql| (name.clone(), version, sql)));
    }
    tx.batch_execute(&grants(datasets)).await?;
    tx.commit().await?;
    Ok((report, pending))
}
