//! The schema and its migrations.
//!
//! Every table lives in the schema named by
//! [`PostgresOptions::schema`](crate::PostgresOptions::schema); the table
//! `schema_version` holds the version. Migrations run at connect in one
//! transaction that first takes a transaction-scoped advisory lock named
//! after the schema, so processes connecting at once migrate one after the
//! other and the later ones find the work done.

use crate::error::ConnectError;

/// One entry per schema version; entry `i` takes version `i` to `i + 1`.
///
/// Times are microseconds since the Unix epoch (UTC). `ready_at` is when an
/// instance next needs a worker: its earliest deliverable inbox message,
/// or, while leased, when the lease expires; NULL when there is nothing to
/// do. Activities use `visible_at` the same way. Instance ids compare
/// byte-wise (`COLLATE "C"`), so paging and prefix queries do not depend on
/// the database's locale. Payloads and events are JSON text exactly as on
/// the wire.
const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE instances (
        instance_id    text COLLATE "C" PRIMARY KEY,
        execution_id   text NOT NULL,
        status         text NOT NULL,
        created_at     bigint NOT NULL,
        meta           text NOT NULL,
        input          text,
        output         text,
        custom_status  text,
        history_len    integer NOT NULL DEFAULT 0,
        ready_at       bigint,
        lease_token    bigint,
        lease_expires  bigint,
        lease_owner    text
    );
    CREATE INDEX instances_ready ON instances (ready_at) WHERE ready_at IS NOT NULL;
    CREATE INDEX instances_status ON instances (status, created_at);

    CREATE TABLE history (
        instance_id   text COLLATE "C" NOT NULL,
        seq           integer NOT NULL,
        execution_id  text NOT NULL,
        event_type    text NOT NULL,
        event         text NOT NULL,
        PRIMARY KEY (instance_id, seq)
    );

    CREATE TABLE inbox (
        seq           bigserial PRIMARY KEY,
        instance_id   text COLLATE "C" NOT NULL,
        execution_id  text,
        visible_at    bigint NOT NULL,
        checked       boolean NOT NULL,
        lease_token   bigint,
        event         text NOT NULL
    );
    CREATE INDEX inbox_instance ON inbox (instance_id, visible_at, seq);

    CREATE TABLE activities (
        id            bigserial PRIMARY KEY,
        instance_id   text COLLATE "C" NOT NULL,
        execution_id  text NOT NULL,
        task_id       integer NOT NULL,
        name          text NOT NULL,
        version       text,
        input         text,
        visible_at    bigint NOT NULL,
        lease_token   bigint,
        lease_owner   text
    );
    CREATE INDEX activities_visible ON activities (visible_at, id);
    CREATE INDEX activities_instance ON activities (instance_id);
"#,
    // Version 2: a task's tags (the attempt number of a retried call).
    r#"
    ALTER TABLE activities ADD COLUMN tags text;
"#,
];

/// The schema version this build writes.
pub(crate) const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Creates the schema if needed and applies pending migrations, under an
/// advisory lock. Refuses a schema newer than this build.
pub(crate) async fn migrate(
    client: &mut deadpool_postgres::Client,
    schema: &str,
) -> Result<(), MigrateError> {
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        &[&format!("durable schema {schema}")],
    )
    .await?;
    // The name was checked (lower-case letters, digits, '_'), so it needs
    // no quoting.
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.schema_version (version integer NOT NULL);"
    ))
    .await?;
    let found: Option<i32> = tx
        .query_opt(
            &format!("SELECT max(version) FROM {schema}.schema_version"),
            &[],
        )
        .await?
        .and_then(|r| r.get(0));
    let found = found.unwrap_or(0);
    if found > SCHEMA_VERSION {
        return Err(MigrateError::Newer(ConnectError::NewerSchema {
            schema: schema.to_string(),
            found,
            supported: SCHEMA_VERSION,
        }));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
        tx.batch_execute(&format!("SET LOCAL search_path TO {schema}; {sql}"))
            .await?;
        tracing::info!(schema, version = i + 1, "migrated the durable schema");
    }
    if found < SCHEMA_VERSION {
        tx.batch_execute(&format!(
            "DELETE FROM {schema}.schema_version;
             INSERT INTO {schema}.schema_version (version) VALUES ({SCHEMA_VERSION});"
        ))
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// What migrating reported.
#[derive(Debug)]
pub(crate) enum MigrateError {
    Newer(ConnectError),
    Db(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for MigrateError {
    fn from(e: tokio_postgres::Error) -> Self {
        MigrateError::Db(e)
    }
}
