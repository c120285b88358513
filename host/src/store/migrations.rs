//! Schema migrations, versioned and applied at open, one list per dialect. The SQLite
//! list is the embedded store's history since its first release, so any earlier store
//! upgrades in place; PostgreSQL starts at today's schema. A new migration is appended to
//! both lists. Several processes may open a new store at the same moment (`serve` and
//! `status`): the version is read under a lock that only one of them gets (SQLite's write
//! lock, taken by `BEGIN IMMEDIATE`; a PostgreSQL advisory lock), so exactly one migrates
//! and the others then find nothing left to do.

use sqlx::Row as _;

use super::db::{Db, Dialect};
use super::{Result, StoreError};

/// SQLite: each entry migrates the schema from version N to N+1 (`PRAGMA user_version`).
/// Never edit one; append.
pub(super) const SQLITE: &[&str] = &[
    "CREATE TABLE cursors (
        workflow TEXT NOT NULL,
        account TEXT NOT NULL,
        uid_validity INTEGER NOT NULL,
        last_uid INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (workflow, account)
    );
    CREATE TABLE maildirs (
        path TEXT PRIMARY KEY,
        uid_validity INTEGER NOT NULL,
        next_uid INTEGER NOT NULL
    );
    CREATE TABLE maildir_uids (
        path TEXT NOT NULL,
        key TEXT NOT NULL,
        uid INTEGER NOT NULL,
        PRIMARY KEY (path, key)
    );
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        workflow TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        finished_at INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        detail TEXT NOT NULL
    );",
    "CREATE TABLE oauth_tokens (
        account TEXT PRIMARY KEY,
        version INTEGER NOT NULL,
        access_token BLOB NOT NULL,
        refresh_token BLOB,
        expires_at INTEGER NOT NULL,
        scope TEXT NOT NULL,
        username TEXT NOT NULL,
        needs_reauth TEXT,
        refreshed_at INTEGER NOT NULL
    );",
    "CREATE TABLE handled (
        workflow TEXT NOT NULL,
        account TEXT NOT NULL,
        key TEXT NOT NULL,
        uid_validity INTEGER NOT NULL,
        uid INTEGER NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        first_seen INTEGER NOT NULL,
        next_attempt INTEGER NOT NULL,
        last_error TEXT,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (workflow, account, key)
    );
    CREATE INDEX handled_by_status ON handled (workflow, account, status, next_attempt);
    CREATE TABLE watch (
        workflow TEXT NOT NULL,
        account TEXT NOT NULL,
        mode TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started_at INTEGER NOT NULL,
        last_ok INTEGER,
        last_error TEXT,
        last_error_at INTEGER,
        unhandled_since INTEGER,
        alerts INTEGER NOT NULL,
        last_alert TEXT,
        silence_after INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (workflow, account)
    );",
    // The mailbox contract became backend-neutral: cursors and message ids are the
    // backend's own text. The UID backends write `<uidvalidity>:<uid>`, so old rows keep
    // their meaning.
    "CREATE TABLE cursors_v2 (
        workflow TEXT NOT NULL,
        account TEXT NOT NULL,
        cursor TEXT NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (workflow, account)
    );
    INSERT INTO cursors_v2 (workflow, account, cursor, updated_at)
        SELECT workflow, account, uid_validity || ':' || last_uid, updated_at FROM cursors;
    DROP TABLE cursors;
    ALTER TABLE cursors_v2 RENAME TO cursors;
    CREATE TABLE handled_v2 (
        workflow TEXT NOT NULL,
        account TEXT NOT NULL,
        key TEXT NOT NULL,
        message TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        first_seen INTEGER NOT NULL,
        next_attempt INTEGER NOT NULL,
        last_error TEXT,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (workflow, account, key)
    );
    INSERT INTO handled_v2 (workflow, account, key, message, status, attempts, first_seen,
            next_attempt, last_error, updated_at)
        SELECT workflow, account, key, uid_validity || ':' || uid, status, attempts,
            first_seen, next_attempt, last_error, updated_at
        FROM handled ORDER BY uid_validity, uid;
    DROP TABLE handled;
    ALTER TABLE handled_v2 RENAME TO handled;
    CREATE INDEX handled_by_status ON handled (workflow, account, status, next_attempt);",
    // A trigger pauses when its account's credentials fail, and says why.
    "ALTER TABLE watch ADD COLUMN paused TEXT;",
    // A post-action is recorded with the run's success and cleared once it took effect.
    "ALTER TABLE handled ADD COLUMN post_pending INTEGER NOT NULL DEFAULT 0;",
    // The settings page: its users, their sessions (by the hash of the cookie's token),
    // and the accounts made on it (secrets sealed).
    "CREATE TABLE users (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        login TEXT NOT NULL UNIQUE,
        email TEXT,
        name TEXT,
        password_hash TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE sessions (
        token_hash TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        csrf TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    );
    CREATE TABLE page_accounts (
        name TEXT PRIMARY KEY,
        settings TEXT NOT NULL,
        secrets BLOB,
        state TEXT NOT NULL,
        updated_by TEXT NOT NULL,
        updated_at INTEGER NOT NULL
    );",
    // The nodes of a cluster: each `serve` registers and keeps a heartbeat.
    "CREATE TABLE nodes (
        name TEXT PRIMARY KEY,
        data_center TEXT NOT NULL,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started_at INTEGER NOT NULL,
        heartbeat_at INTEGER NOT NULL,
        heartbeat_secs INTEGER NOT NULL,
        triggers INTEGER NOT NULL,
        stopped_at INTEGER
    );",
    // A refresh under way, so that nodes sharing the store refresh one at a time.
    "ALTER TABLE oauth_tokens ADD COLUMN refreshing_until INTEGER;",
    // The durable outbox: messages of accounts with delivery = "queued", waiting for a
    // delivery worker of their data center, with their attempts and leases.
    "CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        account TEXT NOT NULL,
        data_center TEXT NOT NULL,
        sender TEXT NOT NULL,
        recipients TEXT NOT NULL,
        message BLOB NOT NULL,
        message_id TEXT,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        next_attempt INTEGER NOT NULL,
        lease_owner TEXT,
        lease_until INTEGER,
        last_error TEXT,
        reply TEXT,
        node TEXT,
        sent_at INTEGER
    );
    CREATE INDEX outbox_due ON outbox (data_center, status, next_attempt);",
    // What the server said of a sent message, and the kind of a failure, for a step
    // that waits for the outcome.
    "ALTER TABLE outbox ADD COLUMN server_status TEXT;
    ALTER TABLE outbox ADD COLUMN error_kind TEXT;",
    // The lease of each mailbox trigger on a shared store, with the epoch that fences
    // the writes of a node that lost it.
    "CREATE TABLE trigger_leases (
        workflow TEXT PRIMARY KEY,
        epoch INTEGER NOT NULL,
        owner TEXT,
        lease_until INTEGER NOT NULL
    );",
    // The node that leased an outbox message and when, so that a dead or restarted
    // node's messages are taken back at once.
    "ALTER TABLE outbox ADD COLUMN lease_node TEXT;
    ALTER TABLE outbox ADD COLUMN leased_at INTEGER;",
    // Test Mail and Validate-and-Save asked of a node of another data center.
    "CREATE TABLE probes (
        id INTEGER PRIMARY KEY,
        data_center TEXT NOT NULL,
        account TEXT NOT NULL,
        recipient TEXT NOT NULL,
        settings TEXT,
        secrets TEXT,
        status TEXT NOT NULL,
        node TEXT,
        report TEXT,
        created_at INTEGER NOT NULL,
        claimed_at INTEGER
    );",
    // The plugin each node serves, and its last reload that failed (`serve` on SIGHUP).
    "ALTER TABLE nodes ADD COLUMN plugin TEXT;
    ALTER TABLE nodes ADD COLUMN plugin_error TEXT;
    ALTER TABLE nodes ADD COLUMN plugin_at INTEGER;",
];

/// PostgreSQL: each entry migrates from version N to N+1 (the `flowmail_schema` table).
const POSTGRES: &[&str] = &[
    // Today's schema, as the SQLite list builds it. `seq` keeps the handled records'
    // insertion order, as SQLite's rowid does.
    "CREATE TABLE cursors (
        workflow TEXT NOT NULL,
        account TEXT NOT NULL,
        cursor TEXT NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (workflow, account)
    );
    CREATE TABLE maildirs (
        path TEXT PRIMARY KEY,
        uid_validity BIGINT NOT NULL,
        next_uid BIGINT NOT NULL
    );
    CREATE TABLE maildir_uids (
        path TEXT NOT NULL,
        key TEXT NOT NULL,
        uid BIGINT NOT NULL,
        PRIMARY KEY (path, key)
    );
    CREATE TABLE runs (
        id BIGSERIAL PRIMARY KEY,
        workflow TEXT NOT NULL,
        started_at BIGINT NOT NULL,
        finished_at BIGINT NOT NULL,
        outcome TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE TABLE oauth_tokens (
        account TEXT PRIMARY KEY,
        version BIGINT NOT NULL,
        access_token BYTEA NOT NULL,
        refresh_token BYTEA,
        expires_at BIGINT NOT NULL,
        scope TEXT NOT NULL,
        username TEXT NOT NULL,
        needs_reauth TEXT,
        refreshed_at BIGINT NOT NULL
    );
    CREATE TABLE handled (
        workflow TEXT NOT NULL,
        account TEXT NOT NULL,
        key TEXT NOT NULL,
        message TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts BIGINT NOT NULL,
        first_seen BIGINT NOT NULL,
        next_attempt BIGINT NOT NULL,
        last_error TEXT,
        updated_at BIGINT NOT NULL,
        post_pending BIGINT NOT NULL DEFAULT 0,
        seq BIGSERIAL,
        PRIMARY KEY (workflow, account, key)
    );
    CREATE INDEX handled_by_status ON handled (workflow, account, status, next_attempt);
    CREATE TABLE watch (
        workflow TEXT NOT NULL,
        account TEXT NOT NULL,
        mode TEXT NOT NULL,
        pid BIGINT NOT NULL,
        started_at BIGINT NOT NULL,
        last_ok BIGINT,
        last_error TEXT,
        last_error_at BIGINT,
        unhandled_since BIGINT,
        alerts BIGINT NOT NULL,
        last_alert TEXT,
        silence_after BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        paused TEXT,
        PRIMARY KEY (workflow, account)
    );
    CREATE TABLE users (
        id BIGSERIAL PRIMARY KEY,
        login TEXT NOT NULL UNIQUE,
        email TEXT,
        name TEXT,
        password_hash TEXT NOT NULL,
        created_at BIGINT NOT NULL
    );
    CREATE TABLE sessions (
        token_hash TEXT PRIMARY KEY,
        user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        csrf TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL
    );
    CREATE TABLE page_accounts (
        name TEXT PRIMARY KEY,
        settings TEXT NOT NULL,
        secrets BYTEA,
        state TEXT NOT NULL,
        updated_by TEXT NOT NULL,
        updated_at BIGINT NOT NULL
    );",
    // The nodes of a cluster: each `serve` registers and keeps a heartbeat.
    "CREATE TABLE nodes (
        name TEXT PRIMARY KEY,
        data_center TEXT NOT NULL,
        host TEXT NOT NULL,
        pid BIGINT NOT NULL,
        started_at BIGINT NOT NULL,
        heartbeat_at BIGINT NOT NULL,
        heartbeat_secs BIGINT NOT NULL,
        triggers BIGINT NOT NULL,
        stopped_at BIGINT
    );",
    // A refresh under way, so that nodes sharing the store refresh one at a time.
    "ALTER TABLE oauth_tokens ADD COLUMN refreshing_until BIGINT;",
    // The durable outbox: messages of accounts with delivery = "queued", waiting for a
    // delivery worker of their data center, with their attempts and leases.
    "CREATE TABLE outbox (
        id BIGSERIAL PRIMARY KEY,
        account TEXT NOT NULL,
        data_center TEXT NOT NULL,
        sender TEXT NOT NULL,
        recipients TEXT NOT NULL,
        message BYTEA NOT NULL,
        message_id TEXT,
        status TEXT NOT NULL,
        attempts BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        next_attempt BIGINT NOT NULL,
        lease_owner TEXT,
        lease_until BIGINT,
        last_error TEXT,
        reply TEXT,
        node TEXT,
        sent_at BIGINT
    );
    CREATE INDEX outbox_due ON outbox (data_center, status, next_attempt);",
    // What the server said of a sent message, and the kind of a failure, for a step
    // that waits for the outcome.
    "ALTER TABLE outbox ADD COLUMN server_status TEXT;
    ALTER TABLE outbox ADD COLUMN error_kind TEXT;",
    // The lease of each mailbox trigger on a shared store, with the epoch that fences
    // the writes of a node that lost it.
    "CREATE TABLE trigger_leases (
        workflow TEXT PRIMARY KEY,
        epoch BIGINT NOT NULL,
        owner TEXT,
        lease_until BIGINT NOT NULL
    );",
    // The node that leased an outbox message and when, so that a dead or restarted
    // node's messages are taken back at once.
    "ALTER TABLE outbox ADD COLUMN lease_node TEXT;
    ALTER TABLE outbox ADD COLUMN leased_at BIGINT;",
    // Test Mail and Validate-and-Save asked of a node of another data center.
    "CREATE TABLE probes (
        id BIGSERIAL PRIMARY KEY,
        data_center TEXT NOT NULL,
        account TEXT NOT NULL,
        recipient TEXT NOT NULL,
        settings TEXT,
        secrets TEXT,
        status TEXT NOT NULL,
        node TEXT,
        report TEXT,
        created_at BIGINT NOT NULL,
        claimed_at BIGINT
    );",
    // The plugin each node serves, and its last reload that failed (`serve` on SIGHUP).
    "ALTER TABLE nodes ADD COLUMN plugin TEXT;
    ALTER TABLE nodes ADD COLUMN plugin_error TEXT;
    ALTER TABLE nodes ADD COLUMN plugin_at BIGINT;",
];

/// The advisory lock key that serialises PostgreSQL migrations.
const PG_MIGRATION_LOCK: i64 = 0x666c_6f77_6d61;

/// Brings the schema of `db` up to date.
pub async fn migrate(db: &Db, name: &str) -> Result<()> {
    let err = |source| StoreError::Sql {
        path: name.to_owned(),
        source,
    };
    let (list, begin) = match db.dialect {
        Dialect::Sqlite => (SQLITE, "BEGIN IMMEDIATE"),
        Dialect::Postgres => (POSTGRES, "BEGIN"),
    };
    let mut conn = db.writer().await.map_err(err)?;
    sqlx::raw_sql(begin)
        .execute(&mut *conn)
        .await
        .map_err(err)?;
    let result = async {
        let version: i64 = match db.dialect {
            Dialect::Sqlite => sqlx::query("PRAGMA user_version")
                .fetch_one(&mut *conn)
                .await?
                .try_get(0)?,
            Dialect::Postgres => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT 1 FROM (SELECT pg_advisory_xact_lock({PG_MIGRATION_LOCK})) AS locked"
                )))
                .fetch_one(&mut *conn)
                .await?;
                sqlx::raw_sql(
                    "CREATE TABLE IF NOT EXISTS flowmail_schema (version BIGINT NOT NULL)",
                )
                .execute(&mut *conn)
                .await?;
                sqlx::query("SELECT COALESCE(MAX(version), 0) FROM flowmail_schema")
                    .fetch_one(&mut *conn)
                    .await?
                    .try_get(0)?
            }
        };
        if version as usize > list.len() {
            return Ok(Err(StoreError::TooNew {
                path: name.to_owned(),
                found: version,
                known: list.len(),
            }));
        }
        for (i, sql) in list.iter().enumerate().skip(version as usize) {
            sqlx::raw_sql(*sql).execute(&mut *conn).await?;
            let next = (i + 1) as i64;
            let record = match db.dialect {
                Dialect::Sqlite => format!("PRAGMA user_version = {next}"),
                Dialect::Postgres => {
                    format!(
                        "DELETE FROM flowmail_schema; INSERT INTO flowmail_schema VALUES ({next})"
                    )
                }
            };
            sqlx::raw_sql(sqlx::AssertSqlSafe(record))
                .execute(&mut *conn)
                .await?;
        }
        Ok(Ok(()))
    }
    .await;
    let end = match &result {
        Ok(Ok(())) => "COMMIT",
        _ => "ROLLBACK",
    };
    let ended = sqlx::raw_sql(end).execute(&mut *conn).await;
    result.map_err(err)??;
    ended.map(drop).map_err(err)
}
