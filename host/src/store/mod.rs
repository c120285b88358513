//! The embedded SQLite store: mailbox cursors, Maildir UIDs and the run journal, with
//! schema migrations; OAuth2 tokens and the trigger records live in submodules.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};

mod tokens;
mod triggers;
mod web;

pub use self::tokens::TokenRow;
pub use self::triggers::{HandledCounts, HandledRow, Handling, WatchRow};
pub use self::web::{PageAccountRow, SessionRow, UserRow};

/// Each entry migrates the schema from version N to N+1. Never edit one; append.
const MIGRATIONS: &[&str] = &[
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
];

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {source}")]
    Sqlite {
        path: String,
        source: rusqlite::Error,
    },
    #[error(
        "store {path}: the schema is version {found}, newer than this flowmail knows ({known}); upgrade flowmail"
    )]
    TooNew {
        path: String,
        found: i64,
        known: usize,
    },
    #[error("store lock poisoned")]
    Poisoned,
    #[error(
        "workflow `{workflow}` is being run by another flowmail process (serve or run); stop that one first, or see `flowmail status`"
    )]
    Busy { workflow: String },
    #[error("store {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Held while one process runs a mailbox-triggered workflow; dropping it lets go.
#[derive(Debug)]
pub struct WorkflowLock(#[allow(dead_code)] std::fs::File);

pub type Result<T> = std::result::Result<T, StoreError>;

/// The store, safe to share between steps.
pub struct Store {
    path: String,
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens (creating if needed) the store at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Self> {
        let name = path.display().to_string();
        let err = |source| StoreError::Sqlite {
            path: name.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let mut conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        // Switching to WAL takes a lock that the busy timeout does not wait for, so a store
        // that another process is creating right now is waited for here.
        let mut tries = 0;
        loop {
            let mode: rusqlite::Result<String> =
                conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0));
            match mode {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy && tries < 100 =>
                {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => {
                    other.map_err(err)?;
                    break;
                }
            }
        }
        migrate(&mut conn, &name)?;
        Ok(Self {
            path: name,
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> Result<MutexGuard<'_, Connection>> {
        self.conn.lock().map_err(|_| StoreError::Poisoned)
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Claims `workflow` for this process, so that two processes never handle the same
    /// trigger at once. The claim is an OS file lock beside the store: it ends with the
    /// process, however that ends.
    pub fn lock_workflow(&self, workflow: &str) -> Result<WorkflowLock> {
        let dir = Path::new(&self.path)
            .parent()
            .map(|p| p.join("locks"))
            .unwrap_or_else(|| Path::new("locks").to_path_buf());
        let io = |source| StoreError::Io {
            path: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let name: String = workflow
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                    (b as char).to_string()
                } else {
                    format!("%{b:02x}")
                }
            })
            .collect();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!("{name}.lock")))
            .map_err(io)?;
        // A lock just released can look held for a moment: a process being spawned
        // elsewhere in this one holds a copy of the descriptor until it execs. Only a lock
        // still held after a second belongs to another flowmail.
        let mut tries = 0;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(WorkflowLock(file)),
                Err(std::fs::TryLockError::WouldBlock) if tries < 20 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(StoreError::Busy {
                        workflow: workflow.to_owned(),
                    });
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
            }
        }
    }

    /// Where `workflow` stopped reading `account`: the mailbox backend's cursor.
    pub fn cursor(&self, workflow: &str, account: &str) -> Result<Option<String>> {
        self.conn()?
            .query_row(
                "SELECT cursor FROM cursors WHERE workflow = ?1 AND account = ?2",
                params![workflow, account],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Moves `workflow`'s cursor for `account`, after its run succeeded.
    pub fn set_cursor(&self, workflow: &str, account: &str, cursor: &str) -> Result<()> {
        self.conn()?
            .execute(
                "INSERT INTO cursors (workflow, account, cursor, updated_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (workflow, account) DO UPDATE SET
                   cursor = excluded.cursor, updated_at = excluded.updated_at",
                params![workflow, account, cursor, crate::unix_now()],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// The UIDVALIDITY of the Maildir at `path` and the UIDs of `keys`, assigning new UIDs,
    /// in the order given, to keys not seen before.
    pub fn maildir_uids(&self, path: &str, keys: &[String]) -> Result<(u32, HashMap<String, u32>)> {
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let state: Option<(u32, u32)> = tx
            .query_row(
                "SELECT uid_validity, next_uid FROM maildirs WHERE path = ?1",
                [path],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let (validity, mut next) = match state {
            Some(s) => s,
            None => {
                let validity = (crate::unix_now() as u64 & 0x7fff_ffff) as u32;
                tx.execute(
                    "INSERT INTO maildirs (path, uid_validity, next_uid) VALUES (?1, ?2, 1)",
                    params![path, validity],
                )
                .map_err(|e| self.err(e))?;
                (validity, 1)
            }
        };
        let mut uids = HashMap::with_capacity(keys.len());
        {
            let mut get = tx
                .prepare_cached("SELECT uid FROM maildir_uids WHERE path = ?1 AND key = ?2")
                .map_err(|e| self.err(e))?;
            let mut put = tx
                .prepare_cached("INSERT INTO maildir_uids (path, key, uid) VALUES (?1, ?2, ?3)")
                .map_err(|e| self.err(e))?;
            for key in keys {
                let uid: Option<u32> = get
                    .query_row(params![path, key], |r| r.get(0))
                    .optional()
                    .map_err(|e| self.err(e))?;
                let uid = match uid {
                    Some(uid) => uid,
                    None => {
                        put.execute(params![path, key, next])
                            .map_err(|e| self.err(e))?;
                        next += 1;
                        next - 1
                    }
                };
                uids.insert(key.clone(), uid);
            }
        }
        tx.execute(
            "UPDATE maildirs SET next_uid = ?2 WHERE path = ?1",
            params![path, next],
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok((validity, uids))
    }

    /// How many runs of `workflow` ended with `outcome`.
    pub fn run_count(&self, workflow: &str, outcome: &str) -> Result<u64> {
        self.conn()?
            .query_row(
                "SELECT COUNT(*) FROM runs WHERE workflow = ?1 AND outcome = ?2",
                params![workflow, outcome],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n.max(0) as u64)
            .map_err(|e| self.err(e))
    }

    /// The latest `limit` runs, newest first: (workflow, finished_at, outcome, detail).
    pub fn recent_runs(&self, limit: u32) -> Result<Vec<(String, i64, String, String)>> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare(
                "SELECT workflow, finished_at, outcome, detail FROM runs
                 ORDER BY id DESC LIMIT ?1",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([limit], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))
    }

    /// Records how a run ended.
    pub fn record_run(
        &self,
        workflow: &str,
        started_at: i64,
        outcome: &str,
        detail: &str,
    ) -> Result<()> {
        self.conn()?
            .execute(
                "INSERT INTO runs (workflow, started_at, finished_at, outcome, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![workflow, started_at, crate::unix_now(), outcome, detail],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }
}

fn migrate(conn: &mut Connection, path: &str) -> Result<()> {
    let err = |source| StoreError::Sqlite {
        path: path.to_owned(),
        source,
    };
    // Processes may open a new store at the same moment (`serve` and `status`): the
    // version is read under the write lock, so exactly one of them migrates and the others
    // wait for it (the busy timeout) and then find nothing left to do.
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(err)?;
    let version: i64 = tx
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(err)?;
    if version as usize > MIGRATIONS.len() {
        return Err(StoreError::TooNew {
            path: path.to_owned(),
            found: version,
            known: MIGRATIONS.len(),
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(sql).map_err(err)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(err)?;
    }
    tx.commit().map_err(err)
}

#[cfg(test)]
mod tests;
