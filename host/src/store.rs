//! The embedded SQLite store: mailbox cursors, Maildir UIDs and the run journal, with
//! schema migrations.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};

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
];

/// Where a message stands with a workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handling {
    /// A run for it has started and not finished; after a crash it counts as a failure.
    Running,
    /// A run failed; it is tried again at `next_attempt`.
    Pending,
    /// A run succeeded. It never runs again, even under a new UIDVALIDITY.
    Done,
    /// It failed every attempt and went to the dead letters.
    Dead,
}

impl Handling {
    fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Pending => "pending",
            Self::Done => "done",
            Self::Dead => "dead",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "running" => Self::Running,
            "done" => Self::Done,
            "dead" => Self::Dead,
            _ => Self::Pending,
        }
    }
}

/// One message's record with one workflow, keyed by its Message-ID (or a digest when it
/// has none), so that it survives a UIDVALIDITY change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandledRow {
    pub key: String,
    pub uid_validity: u32,
    pub uid: u32,
    pub status: Handling,
    pub attempts: u32,
    pub first_seen: i64,
    pub next_attempt: i64,
    pub last_error: Option<String>,
}

/// What `flowmail serve` last reported of one trigger, for `flowmail status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchRow {
    pub workflow: String,
    pub account: String,
    /// `idle`, `poll`, or `starting`.
    pub mode: String,
    pub pid: u32,
    pub started_at: i64,
    /// The end of the last successful IDLE or poll.
    pub last_ok: Option<i64>,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
    /// Since when the oldest message not yet handled has been waiting.
    pub unhandled_since: Option<i64>,
    pub alerts: u32,
    pub last_alert: Option<String>,
    /// Seconds of silence after which the trigger is reconnected and an alert logged.
    pub silence_after: i64,
    pub updated_at: i64,
}

/// Counts of a trigger's messages by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandledCounts {
    pub done: u64,
    pub pending: u64,
    pub running: u64,
    pub dead: u64,
}

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

/// An account's OAuth2 tokens as stored: the tokens sealed, the rest plain.
#[derive(Debug, Clone)]
pub struct TokenRow {
    pub version: i64,
    pub access_token: Vec<u8>,
    pub refresh_token: Option<Vec<u8>>,
    pub expires_at: i64,
    pub scope: String,
    pub username: String,
    /// Why the account needs authorizing again, when it does.
    pub needs_reauth: Option<String>,
    pub refreshed_at: i64,
}

/// A cursor as kept in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredCursor {
    pub uid_validity: u32,
    pub last_uid: u32,
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
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
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
        match file.try_lock() {
            Ok(()) => Ok(WorkflowLock(file)),
            Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Busy {
                workflow: workflow.to_owned(),
            }),
            Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
        }
    }

    /// Where `workflow` stopped reading `account`.
    pub fn cursor(&self, workflow: &str, account: &str) -> Result<Option<StoredCursor>> {
        self.conn()?
            .query_row(
                "SELECT uid_validity, last_uid FROM cursors WHERE workflow = ?1 AND account = ?2",
                params![workflow, account],
                |r| {
                    Ok(StoredCursor {
                        uid_validity: r.get(0)?,
                        last_uid: r.get(1)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Moves `workflow`'s cursor for `account`, after its run succeeded.
    pub fn set_cursor(&self, workflow: &str, account: &str, cursor: StoredCursor) -> Result<()> {
        self.conn()?
            .execute(
                "INSERT INTO cursors (workflow, account, uid_validity, last_uid, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (workflow, account) DO UPDATE SET
                   uid_validity = excluded.uid_validity, last_uid = excluded.last_uid,
                   updated_at = excluded.updated_at",
                params![
                    workflow,
                    account,
                    cursor.uid_validity,
                    cursor.last_uid,
                    crate::unix_now()
                ],
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

    /// Whether any OAuth2 tokens are stored (then the key that sealed them is needed).
    pub fn has_sealed_tokens(&self) -> Result<bool> {
        self.conn()?
            .query_row("SELECT EXISTS (SELECT 1 FROM oauth_tokens)", [], |r| {
                r.get(0)
            })
            .map_err(|e| self.err(e))
    }

    /// The sealed OAuth2 tokens of `account`.
    pub fn tokens(&self, account: &str) -> Result<Option<TokenRow>> {
        self.conn()?
            .query_row(
                "SELECT version, access_token, refresh_token, expires_at, scope, username, needs_reauth, refreshed_at
                 FROM oauth_tokens WHERE account = ?1",
                [account],
                |r| {
                    Ok(TokenRow {
                        version: r.get(0)?,
                        access_token: r.get(1)?,
                        refresh_token: r.get(2)?,
                        expires_at: r.get(3)?,
                        scope: r.get(4)?,
                        username: r.get(5)?,
                        needs_reauth: r.get(6)?,
                        refreshed_at: r.get(7)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Writes `row` for `account` if the stored version is still `expected` (`None`: a new
    /// authorization, which replaces whatever is there). Returns whether it was written.
    pub fn put_tokens(&self, account: &str, expected: Option<i64>, row: &TokenRow) -> Result<bool> {
        let conn = self.conn()?;
        let changed = match expected {
            Some(version) => conn.execute(
                "UPDATE oauth_tokens SET version = ?3, access_token = ?4, refresh_token = ?5, expires_at = ?6,
                   scope = ?7, username = ?8, needs_reauth = ?9, refreshed_at = ?10
                 WHERE account = ?1 AND version = ?2",
                params![
                    account, version, row.version, row.access_token, row.refresh_token, row.expires_at,
                    row.scope, row.username, row.needs_reauth, row.refreshed_at
                ],
            ),
            None => conn.execute(
                "INSERT INTO oauth_tokens (account, version, access_token, refresh_token, expires_at, scope, username,
                   needs_reauth, refreshed_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (account) DO UPDATE SET version = excluded.version, access_token = excluded.access_token,
                   refresh_token = excluded.refresh_token, expires_at = excluded.expires_at, scope = excluded.scope,
                   username = excluded.username, needs_reauth = excluded.needs_reauth,
                   refreshed_at = excluded.refreshed_at",
                params![
                    account, row.version, row.access_token, row.refresh_token, row.expires_at, row.scope,
                    row.username, row.needs_reauth, row.refreshed_at
                ],
            ),
        }
        .map_err(|e| self.err(e))?;
        Ok(changed == 1)
    }

    /// The record of message `key` with `workflow`.
    pub fn handled(&self, workflow: &str, account: &str, key: &str) -> Result<Option<HandledRow>> {
        self.conn()?
            .query_row(
                "SELECT key, uid_validity, uid, status, attempts, first_seen, next_attempt, last_error
                 FROM handled WHERE workflow = ?1 AND account = ?2 AND key = ?3",
                params![workflow, account, key],
                handled_row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Writes the record of one message.
    pub fn put_handled(&self, workflow: &str, account: &str, row: &HandledRow) -> Result<()> {
        self.conn()?
            .execute(
                "INSERT INTO handled (workflow, account, key, uid_validity, uid, status, attempts,
                    first_seen, next_attempt, last_error, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (workflow, account, key) DO UPDATE SET
                    uid_validity = excluded.uid_validity, uid = excluded.uid,
                    status = excluded.status, attempts = excluded.attempts,
                    next_attempt = excluded.next_attempt, last_error = excluded.last_error,
                    updated_at = excluded.updated_at",
                params![
                    workflow,
                    account,
                    row.key,
                    row.uid_validity,
                    row.uid,
                    row.status.as_str(),
                    row.attempts,
                    row.first_seen,
                    row.next_attempt,
                    row.last_error,
                    crate::unix_now()
                ],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Messages of `workflow` in `status`, oldest first; with `due_by`, only those whose
    /// next attempt is due by then.
    pub fn handled_in(
        &self,
        workflow: &str,
        account: &str,
        status: Handling,
        due_by: Option<i64>,
    ) -> Result<Vec<HandledRow>> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare(
                "SELECT key, uid_validity, uid, status, attempts, first_seen, next_attempt, last_error
                 FROM handled WHERE workflow = ?1 AND account = ?2 AND status = ?3
                   AND next_attempt <= ?4
                 ORDER BY uid_validity, uid",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(
                params![
                    workflow,
                    account,
                    status.as_str(),
                    due_by.unwrap_or(i64::MAX)
                ],
                handled_row,
            )
            .map_err(|e| self.err(e))?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))
    }

    /// How many messages of `workflow` are in each state.
    pub fn handled_counts(&self, workflow: &str, account: &str) -> Result<HandledCounts> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare(
                "SELECT status, COUNT(*) FROM handled WHERE workflow = ?1 AND account = ?2
                 GROUP BY status",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![workflow, account], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })
            .map_err(|e| self.err(e))?;
        let mut counts = HandledCounts::default();
        for row in rows {
            let (status, n) = row.map_err(|e| self.err(e))?;
            let n = n.max(0) as u64;
            match Handling::parse(&status) {
                Handling::Done => counts.done = n,
                Handling::Pending => counts.pending = n,
                Handling::Running => counts.running = n,
                Handling::Dead => counts.dead = n,
            }
        }
        Ok(counts)
    }

    /// Writes a trigger's watchdog state.
    pub fn put_watch(&self, row: &WatchRow) -> Result<()> {
        self.conn()?
            .execute(
                "INSERT OR REPLACE INTO watch (workflow, account, mode, pid, started_at, last_ok,
                    last_error, last_error_at, unhandled_since, alerts, last_alert, silence_after,
                    updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                params![
                    row.workflow,
                    row.account,
                    row.mode,
                    row.pid,
                    row.started_at,
                    row.last_ok,
                    row.last_error,
                    row.last_error_at,
                    row.unhandled_since,
                    row.alerts,
                    row.last_alert,
                    row.silence_after,
                    crate::unix_now()
                ],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Every trigger's watchdog state, by workflow and account.
    pub fn watches(&self) -> Result<Vec<WatchRow>> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare(
                "SELECT workflow, account, mode, pid, started_at, last_ok, last_error,
                    last_error_at, unhandled_since, alerts, last_alert, silence_after, updated_at
                 FROM watch ORDER BY workflow, account",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(WatchRow {
                    workflow: r.get(0)?,
                    account: r.get(1)?,
                    mode: r.get(2)?,
                    pid: r.get(3)?,
                    started_at: r.get(4)?,
                    last_ok: r.get(5)?,
                    last_error: r.get(6)?,
                    last_error_at: r.get(7)?,
                    unhandled_since: r.get(8)?,
                    alerts: r.get(9)?,
                    last_alert: r.get(10)?,
                    silence_after: r.get(11)?,
                    updated_at: r.get(12)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))
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

fn handled_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<HandledRow> {
    Ok(HandledRow {
        key: r.get(0)?,
        uid_validity: r.get(1)?,
        uid: r.get(2)?,
        status: Handling::parse(&r.get::<_, String>(3)?),
        attempts: r.get(4)?,
        first_seen: r.get(5)?,
        next_attempt: r.get(6)?,
        last_error: r.get(7)?,
    })
}

fn migrate(conn: &mut Connection, path: &str) -> Result<()> {
    let err = |source| StoreError::Sqlite {
        path: path.to_owned(),
        source,
    };
    let version: i64 = conn
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
        let tx = conn.transaction().map_err(err)?;
        tx.execute_batch(sql).map_err(err)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(err)?;
        tx.commit().map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_and_uids_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let keys = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (validity, uids) = {
            let s = Store::open(&path).unwrap();
            assert_eq!(s.cursor("wf", "a").unwrap(), None);
            s.set_cursor(
                "wf",
                "a",
                StoredCursor {
                    uid_validity: 9,
                    last_uid: 3,
                },
            )
            .unwrap();
            s.maildir_uids("/m", &keys(&["x", "y"])).unwrap()
        };
        assert_eq!((uids["x"], uids["y"]), (1, 2));
        let s = Store::open(&path).unwrap();
        assert_eq!(
            s.cursor("wf", "a").unwrap(),
            Some(StoredCursor {
                uid_validity: 9,
                last_uid: 3
            })
        );
        let (v2, uids) = s.maildir_uids("/m", &keys(&["z", "y"])).unwrap();
        assert_eq!(v2, validity);
        assert_eq!((uids["z"], uids["y"]), (3, 2));
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        drop(Store::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        assert!(matches!(
            Store::open(&path),
            Err(StoreError::TooNew { found: 99, .. })
        ));
    }
}
