//! The store: mailbox cursors, Maildir UIDs and the run journal, with schema migrations;
//! OAuth2 tokens, the trigger records and the settings page's records live in
//! submodules. SQLite (a file) is the embedded default; a PostgreSQL URL puts everything
//! on a database that several nodes share ([`db`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod batch;
mod db;
mod locks;
mod migrations;
mod nodes;
mod outbox;
mod probes;
mod tokens;
mod triggers;
mod values;
mod watch;
mod web;

pub use self::locks::{LEASE_TTL, WorkflowLock};
pub use self::nodes::{NodePlugin, NodeRow};
pub use self::outbox::{OutboxCount, OutboxFailure, OutboxJob, OutboxState};
pub use self::probes::ProbeJob;
pub use self::tokens::TokenRow;
pub use self::triggers::{HandledCounts, HandledRow, Handling, Outset, Owed, Waiting};
pub use self::watch::WatchRow;
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
    #[error(
        "workflow `{workflow}`: this node lost its claim on the trigger (its lease ran out, and another node took it over); nothing was written, and this node stands down"
    )]
    Fenced { workflow: String },
    #[error("store {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The store, safe to share between steps.
pub struct Store {
    conn: Arc<db::Conn>,
    /// The SQLite file, when the store is one.
    path: Option<PathBuf>,
    /// The trigger leases this store holds, on a shared store.
    leases: Arc<locks::Leases>,
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
            conn: Arc::new(db::Conn::open(&url, name)?),
            path: Some(path.to_path_buf()),
            leases: Arc::new(locks::Leases::new()),
        })
    }

    /// Opens the PostgreSQL store at `url` (`postgres://user:password@host:port/db`) and
    /// migrates it.
    pub fn open_url(url: &str) -> Result<Self> {
        Ok(Self {
            conn: Arc::new(db::Conn::open(url, redact_url(url))?),
            path: None,
            leases: Arc::new(locks::Leases::new()),
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

    /// On SQLite, how many commits its writer made so far, and how many callers' writes
    /// they held: writers that meet share a commit.
    pub fn shared_commits(&self) -> Option<(u64, u64)> {
        (!self.is_shared()).then(|| self.conn.group.counts())
    }

    /// Where `workflow` stopped reading `account`: the mailbox backend's cursor.
    pub fn cursor(&self, workflow: &str, account: &str) -> Result<Option<String>> {
        self.conn
            .row(CURSOR_READ, values::args![workflow, account], |r| {
                values::get(r, 0)
            })
    }

    /// Moves `workflow`'s cursor for `account`, after its run succeeded.
    pub fn set_cursor(&self, workflow: &str, account: &str, cursor: &str) -> Result<()> {
        self.fenced_write(
            workflow,
            CURSOR_WRITE,
            cursor_args(workflow, account, cursor),
        )
    }

    /// The end of one run of a mailbox trigger, in one transaction: the run's record, the
    /// records of the messages it ran for (`rows`), and the cursor past them when given.
    /// A crash leaves all or none of it, and a run of one message costs one commit here
    /// (one flush to disk) instead of three. Fenced like each write alone: when this
    /// process no longer holds `workflow`'s lease, nothing is written
    /// ([`StoreError::Fenced`]).
    pub fn finish_unit(
        &self,
        workflow: &str,
        account: &str,
        run: &RunRecord,
        rows: &[HandledRow],
        cursor: Option<&str>,
    ) -> Result<()> {
        let epoch = self.leases.epoch(workflow);
        let fence = |insert: &str, args| fenced_statement(epoch, insert, args);
        let mut writes = vec![(RUN_WRITE.to_owned(), run_args(workflow, run), false)];
        writes.extend(rows.iter().map(|row| {
            fence(
                triggers::HANDLED_WRITE,
                triggers::handled_args(workflow, account, row),
            )
        }));
        if let Some(cursor) = cursor {
            writes.push(fence(CURSOR_WRITE, cursor_args(workflow, account, cursor)));
        }
        fenced(workflow, self.conn.write(writes)?)
    }

    /// Runs `insert` (whose `$1` is `workflow`): as it is when this process holds no lease
    /// of `workflow`; with a lease, only while that lease is still this process's, and
    /// [`StoreError::Fenced`] when it no longer is.
    fn fenced_write(&self, workflow: &str, insert: &str, args: Vec<values::Arg>) -> Result<()> {
        self.fenced_write_as(workflow, insert, args, true)
    }

    /// Like [`Store::fenced_write`]; not `durable`, the write is kept on a crash of the
    /// process but may be lost on one of the machine (see `batch`).
    fn fenced_write_as(
        &self,
        workflow: &str,
        insert: &str,
        args: Vec<values::Arg>,
        durable: bool,
    ) -> Result<()> {
        let write = fenced_statement(self.leases.epoch(workflow), insert, args);
        fenced(workflow, self.conn.write_as(vec![write], durable)?)
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
                values::args![workflow, outcome],
                |r| values::get::<i64>(r, 0),
            )
            .map(|n| n.unwrap_or_default().max(0) as u64)
    }

    /// The latest `limit` runs, newest first: (workflow, finished_at, outcome, detail).
    pub fn recent_runs(&self, limit: u32) -> Result<Vec<(String, i64, String, String)>> {
        self.conn.rows(
            "SELECT workflow, finished_at, outcome, detail FROM runs ORDER BY id DESC LIMIT $1",
            values::args![limit],
            |r| {
                Ok((
                    values::get(r, 0)?,
                    values::get(r, 1)?,
                    values::get(r, 2)?,
                    values::get(r, 3)?,
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
        let run = RunRecord {
            started_at,
            outcome: outcome.to_owned(),
            detail: detail.to_owned(),
        };
        self.conn
            .exec(RUN_WRITE, run_args(workflow, &run))
            .map(drop)
    }
}

/// How a run ended, as [`Store::record_run`] and [`Store::finish_unit`] keep it.
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub started_at: i64,
    /// `ok` or `failed`.
    pub outcome: String,
    /// The run's report, or its error.
    pub detail: String,
}

const RUN_WRITE: &str = "INSERT INTO runs (workflow, started_at, finished_at, outcome, detail) VALUES ($1, $2, $3, $4, $5)";

/// `insert` (whose `$1` is the workflow) for a write in one transaction, and whether it
/// must change a row: with the `epoch` of this process's lease, it writes only while
/// the lease is still this process's.
fn fenced_statement(
    epoch: Option<i64>,
    insert: &str,
    mut args: Vec<values::Arg>,
) -> (String, Vec<values::Arg>, bool) {
    match epoch {
        Some(epoch) => {
            args.push(values::Arg::from(epoch));
            (locks::fenced(insert, args.len()), args, true)
        }
        None => (insert.to_owned(), args, false),
    }
}

/// A fenced write's outcome: a required statement that changed nothing met a lease that
/// is no longer this process's.
fn fenced(workflow: &str, written: batch::Written) -> Result<()> {
    match written {
        batch::Written::Rows(_) => Ok(()),
        batch::Written::Unchanged(_) => Err(StoreError::Fenced {
            workflow: workflow.to_owned(),
        }),
    }
}

fn run_args(workflow: &str, run: &RunRecord) -> Vec<values::Arg> {
    values::args![
        workflow,
        run.started_at,
        crate::unix_now(),
        &run.outcome,
        &run.detail
    ]
}

const CURSOR_READ: &str = "SELECT cursor FROM cursors WHERE workflow = $1 AND account = $2";

const CURSOR_WRITE: &str = "INSERT INTO cursors (workflow, account, cursor, updated_at)
     VALUES ($1, $2, $3, $4)
     ON CONFLICT (workflow, account) DO UPDATE SET
       cursor = excluded.cursor, updated_at = excluded.updated_at";

fn cursor_args(workflow: &str, account: &str, cursor: &str) -> Vec<values::Arg> {
    values::args![workflow, account, cursor, crate::unix_now()]
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
