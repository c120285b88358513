//! The store: mailbox cursors, Maildir UIDs and the run journal, with schema migrations;
//! OAuth2 tokens, the trigger records and the settings page's records live in
//! submodules. SQLite (a file) is the embedded default; a PostgreSQL URL puts everything
//! on a database that several nodes share ([`db`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

mod db;
mod migrations;
mod nodes;
mod outbox;
mod tokens;
mod triggers;
mod web;

pub use self::nodes::NodeRow;
pub use self::outbox::{OutboxCount, OutboxFailure, OutboxJob, OutboxState};
pub use self::tokens::TokenRow;
pub use self::triggers::{HandledCounts, HandledRow, Handling, WatchRow};
pub use self::web::{PageAccountRow, SessionRow, UserRow};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {source}")]
    Sql { path: String, source: sqlx::Error },
    #[error("the store was closed")]
    Closed,
    #[error(
        "node name `{name}` is in use by process {pid} on {host}, which is alive; give this node another [node] name, or stop that one first"
    )]
    NodeTaken {
        name: String,
        host: String,
        pid: u32,
    },
    #[error(
        "store {path}: the schema is version {found}, newer than this flowmail knows ({known}); upgrade flowmail"
    )]
    TooNew {
        path: String,
        found: i64,
        known: usize,
    },
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
pub struct WorkflowLock(#[allow(dead_code)] Held);

#[derive(Debug)]
enum Held {
    /// An OS file lock beside the SQLite file.
    File(#[allow(dead_code)] std::fs::File),
    /// A PostgreSQL session advisory lock, held by its own connection: it ends when the
    /// connection does, however the process ends.
    Postgres(#[allow(dead_code)] PgLock),
}

/// The connection that holds an advisory lock.
struct PgLock(#[allow(dead_code)] sqlx::AnyConnection);

impl std::fmt::Debug for PgLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgLock")
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The store, safe to share between steps.
pub struct Store {
    conn: db::Conn,
    /// The SQLite file, when the store is one.
    path: Option<PathBuf>,
}

impl Store {
    /// Opens (creating if needed) the SQLite store at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Self> {
        let name = path.display().to_string();
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let url = format!("sqlite://{}?mode=rwc", path.display());
        Ok(Self {
            conn: db::Conn::open(&url, name)?,
            path: Some(path.to_path_buf()),
        })
    }

    /// Opens the PostgreSQL store at `url` (`postgres://user:password@host:port/db`) and
    /// migrates it.
    pub fn open_url(url: &str) -> Result<Self> {
        Ok(Self {
            conn: db::Conn::open(url, redact_url(url))?,
            path: None,
        })
    }

    /// Whether the store is a shared PostgreSQL database.
    pub fn is_shared(&self) -> bool {
        self.conn.db.dialect == db::Dialect::Postgres
    }

    /// Where the store is: the SQLite file, or the URL without its password.
    pub fn location(&self) -> &str {
        &self.conn.name
    }

    /// Claims `workflow` for this process, so that two processes never handle the same
    /// trigger at once. The claim is an OS file lock beside the store: it ends with the
    /// process, however that ends.
    pub fn lock_workflow(&self, workflow: &str) -> Result<WorkflowLock> {
        let Some(path) = &self.path else {
            return self.lock_workflow_shared(workflow);
        };
        let dir = path
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
                Ok(()) => return Ok(WorkflowLock(Held::File(file))),
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

    /// One try at claiming `workflow`, without waiting: `None` while another process holds
    /// it. For a node that stands by to take a trigger over.
    pub fn try_lock_workflow(&self, workflow: &str) -> Result<Option<WorkflowLock>> {
        if self.path.is_some() {
            return match self.lock_workflow(workflow) {
                Ok(lock) => Ok(Some(lock)),
                Err(StoreError::Busy { .. }) => Ok(None),
                Err(e) => Err(e),
            };
        }
        self.try_lock_shared(&format!("flowmail workflow {workflow}"))
    }

    /// Claims `workflow` on a shared store: a session advisory lock, held by a connection
    /// of its own.
    fn lock_workflow_shared(&self, workflow: &str) -> Result<WorkflowLock> {
        let key = format!("flowmail workflow {workflow}");
        // A lock whose holder just went is released when its server notices the closed
        // connection, a moment later: only a lock still held after a second is taken.
        for _ in 0..20 {
            if let Some(lock) = self.try_lock_shared(&key)? {
                return Ok(lock);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Err(StoreError::Busy {
            workflow: workflow.to_owned(),
        })
    }

    fn try_lock_shared(&self, key: &str) -> Result<Option<WorkflowLock>> {
        let url_name = self.conn.name.clone();
        let err = move |source| StoreError::Sql {
            path: url_name.clone(),
            source,
        };
        let key = key.to_owned();
        let held = self.conn.run(move |db| async move {
            use sqlx::{Acquire as _, Row as _};
            let mut pooled = db.pool.acquire().await.map_err(&err)?;
            let got: i64 = sqlx::query(
                "SELECT CASE WHEN pg_try_advisory_lock(hashtextextended($1, 0)) THEN 1 ELSE 0 END::BIGINT",
            )
            .bind(key)
            .fetch_one(pooled.acquire().await.map_err(&err)?)
            .await
            .and_then(|r| r.try_get::<i64, _>(0))
            .map_err(&err)?;
            Ok((got == 1).then(|| pooled.detach()))
        })?;
        Ok(held.map(|conn| WorkflowLock(Held::Postgres(PgLock(conn)))))
    }

    /// Where `workflow` stopped reading `account`: the mailbox backend's cursor.
    pub fn cursor(&self, workflow: &str, account: &str) -> Result<Option<String>> {
        self.conn.row(
            "SELECT cursor FROM cursors WHERE workflow = $1 AND account = $2",
            db::args![workflow, account],
            |r| db::get(r, 0),
        )
    }

    /// Moves `workflow`'s cursor for `account`, after its run succeeded.
    pub fn set_cursor(&self, workflow: &str, account: &str, cursor: &str) -> Result<()> {
        self.conn
            .exec(
                "INSERT INTO cursors (workflow, account, cursor, updated_at)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (workflow, account) DO UPDATE SET
                   cursor = excluded.cursor, updated_at = excluded.updated_at",
                db::args![workflow, account, cursor, crate::unix_now()],
            )
            .map(drop)
    }

    /// The UIDVALIDITY of the Maildir at `path` and the UIDs of `keys`, assigning new UIDs,
    /// in the order given, to keys not seen before.
    pub fn maildir_uids(&self, path: &str, keys: &[String]) -> Result<(u32, HashMap<String, u32>)> {
        let name = self.conn.name.clone();
        let err = move |source| StoreError::Sql {
            path: name.clone(),
            source,
        };
        let path = path.to_owned();
        let keys = keys.to_vec();
        self.conn.transaction(move |db, mut tx| async move {
            use sqlx::Row as _;
            let state =
                sqlx::query(db.sql("SELECT uid_validity, next_uid FROM maildirs WHERE path = $1"))
                    .bind(path.clone())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(&err)?;
            let (validity, mut next) = match state {
                Some(r) => (
                    r.try_get::<i64, _>(0).map_err(&err)?,
                    r.try_get::<i64, _>(1).map_err(&err)?,
                ),
                None => {
                    let validity = crate::unix_now() & 0x7fff_ffff;
                    sqlx::query(db.sql(
                        "INSERT INTO maildirs (path, uid_validity, next_uid) VALUES ($1, $2, 1)",
                    ))
                    .bind(path.clone())
                    .bind(validity)
                    .execute(&mut *tx)
                    .await
                    .map_err(&err)?;
                    (validity, 1)
                }
            };
            let mut uids = HashMap::with_capacity(keys.len());
            let get = "SELECT uid FROM maildir_uids WHERE path = $1 AND key = $2";
            let put = "INSERT INTO maildir_uids (path, key, uid) VALUES ($1, $2, $3)";
            for key in keys {
                let uid = sqlx::query(db.sql(get))
                    .bind(path.clone())
                    .bind(key.clone())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(&err)?
                    .map(|r| r.try_get::<i64, _>(0))
                    .transpose()
                    .map_err(&err)?;
                let uid = match uid {
                    Some(uid) => uid,
                    None => {
                        sqlx::query(db.sql(put))
                            .bind(path.clone())
                            .bind(key.clone())
                            .bind(next)
                            .execute(&mut *tx)
                            .await
                            .map_err(&err)?;
                        next += 1;
                        next - 1
                    }
                };
                uids.insert(key, uid as u32);
            }
            sqlx::query(db.sql("UPDATE maildirs SET next_uid = $2 WHERE path = $1"))
                .bind(path)
                .bind(next)
                .execute(&mut *tx)
                .await
                .map_err(&err)?;
            Ok(((validity as u32, uids), tx))
        })
    }

    /// How many runs of `workflow` ended with `outcome`.
    pub fn run_count(&self, workflow: &str, outcome: &str) -> Result<u64> {
        self.conn
            .row(
                "SELECT COUNT(*) FROM runs WHERE workflow = $1 AND outcome = $2",
                db::args![workflow, outcome],
                |r| db::get::<i64>(r, 0),
            )
            .map(|n| n.unwrap_or_default().max(0) as u64)
    }

    /// The latest `limit` runs, newest first: (workflow, finished_at, outcome, detail).
    pub fn recent_runs(&self, limit: u32) -> Result<Vec<(String, i64, String, String)>> {
        self.conn.rows(
            "SELECT workflow, finished_at, outcome, detail FROM runs ORDER BY id DESC LIMIT $1",
            db::args![limit],
            |r| {
                Ok((
                    db::get(r, 0)?,
                    db::get(r, 1)?,
                    db::get(r, 2)?,
                    db::get(r, 3)?,
                ))
            },
        )
    }

    /// Records how a run ended.
    pub fn record_run(
        &self,
        workflow: &str,
        started_at: i64,
        outcome: &str,
        detail: &str,
    ) -> Result<()> {
        self.conn
            .exec(
                "INSERT INTO runs (workflow, started_at, finished_at, outcome, detail) VALUES ($1, $2, $3, $4, $5)",
                db::args![workflow, started_at, crate::unix_now(), outcome, detail],
            )
            .map(drop)
    }
}

/// `url` without its password, for messages.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests;
