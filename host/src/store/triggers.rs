//! What mailbox triggers keep: each message's record with a workflow (done, waiting for a
//! retry, dead), and each trigger's watchdog state for `flowmail status`.

use rusqlite::{OptionalExtension, params};

use super::{Result, Store};

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
    /// Its id in the mailbox, as the backend wrote it (it changes when the mailbox
    /// restarts and the message is met again).
    pub message: String,
    pub status: Handling,
    pub attempts: u32,
    pub first_seen: i64,
    pub next_attempt: i64,
    pub last_error: Option<String>,
    /// The trigger's post-action (seen, move, delete) is still to be done for this
    /// message: recorded with the run's success, cleared once it took effect.
    pub post_pending: bool,
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
    /// Set while runs fail on the account's credentials: why, and the fix.
    pub paused: Option<String>,
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

impl Store {
    /// The record of message `key` with `workflow`.
    pub fn handled(&self, workflow: &str, account: &str, key: &str) -> Result<Option<HandledRow>> {
        self.conn()?
            .query_row(
                "SELECT key, message, status, attempts, first_seen, next_attempt, last_error,
                    post_pending
                 FROM handled WHERE workflow = ?1 AND account = ?2 AND key = ?3",
                params![workflow, account, key],
                handled_row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Messages of `workflow` whose run succeeded but whose post-action has not yet taken
    /// effect (it failed, or the process died before it).
    pub fn post_actions_pending(&self, workflow: &str, account: &str) -> Result<Vec<HandledRow>> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare(
                "SELECT key, message, status, attempts, first_seen, next_attempt, last_error,
                    post_pending
                 FROM handled WHERE workflow = ?1 AND account = ?2 AND status = 'done'
                   AND post_pending != 0
                 ORDER BY first_seen, rowid",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![workflow, account], handled_row)
            .map_err(|e| self.err(e))?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))
    }

    /// Writes the record of one message.
    pub fn put_handled(&self, workflow: &str, account: &str, row: &HandledRow) -> Result<()> {
        self.conn()?
            .execute(
                "INSERT INTO handled (workflow, account, key, message, status, attempts,
                    first_seen, next_attempt, last_error, updated_at, post_pending)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (workflow, account, key) DO UPDATE SET
                    message = excluded.message, post_pending = excluded.post_pending,
                    status = excluded.status, attempts = excluded.attempts,
                    next_attempt = excluded.next_attempt, last_error = excluded.last_error,
                    updated_at = excluded.updated_at",
                params![
                    workflow,
                    account,
                    row.key,
                    row.message,
                    row.status.as_str(),
                    row.attempts,
                    row.first_seen,
                    row.next_attempt,
                    row.last_error,
                    crate::unix_now(),
                    row.post_pending
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
                "SELECT key, message, status, attempts, first_seen, next_attempt, last_error,
                    post_pending
                 FROM handled WHERE workflow = ?1 AND account = ?2 AND status = ?3
                   AND next_attempt <= ?4
                 ORDER BY first_seen, rowid",
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

    /// Every dead letter, of `workflow` or of all workflows, as (workflow, account, row).
    pub fn dead_letters(
        &self,
        workflow: Option<&str>,
    ) -> Result<Vec<(String, String, HandledRow)>> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare(
                "SELECT key, message, status, attempts, first_seen, next_attempt, last_error,
                    post_pending, workflow, account
                 FROM handled WHERE status = 'dead' AND (?1 IS NULL OR workflow = ?1)
                 ORDER BY workflow, account, first_seen, rowid",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![workflow], |r| {
                Ok((r.get(8)?, r.get(9)?, handled_row(r)?))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))
    }

    /// Puts the dead letters of `workflow` (or of all workflows) back to waiting, with
    /// fresh attempts and due now, so that the next catch-up runs each once. Returns how
    /// many there were. Run twice, the second finds none: each comes back once.
    pub fn retry_dead_letters(&self, workflow: Option<&str>) -> Result<usize> {
        self.conn()?
            .execute(
                "UPDATE handled SET status = 'pending', attempts = 0, next_attempt = ?2,
                    last_error = 'retry requested after: ' || COALESCE(last_error, 'no reason'),
                    updated_at = ?2
                 WHERE status = 'dead' AND (?1 IS NULL OR workflow = ?1)",
                params![workflow, crate::unix_now()],
            )
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
                    updated_at, paused)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
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
                    crate::unix_now(),
                    row.paused
                ],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Every (workflow, account) that has read a mailbox, by `serve` or `flowmail run`,
    /// with when it last moved its cursor or recorded a message.
    pub fn triggers_read(&self) -> Result<Vec<(String, String, i64)>> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare(
                "SELECT workflow, account, MAX(at) FROM (
                    SELECT workflow, account, updated_at AS at FROM cursors
                    UNION ALL
                    SELECT workflow, account, updated_at AS at FROM handled
                 ) GROUP BY workflow, account ORDER BY workflow, account",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(|e| self.err(e))?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))
    }

    /// Every trigger's watchdog state, by workflow and account.
    pub fn watches(&self) -> Result<Vec<WatchRow>> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare(
                "SELECT workflow, account, mode, pid, started_at, last_ok, last_error,
                    last_error_at, unhandled_since, alerts, last_alert, silence_after, updated_at,
                    paused
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
                    paused: r.get(13)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))
    }
}

fn handled_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<HandledRow> {
    Ok(HandledRow {
        key: r.get(0)?,
        message: r.get(1)?,
        status: Handling::parse(&r.get::<_, String>(2)?),
        attempts: r.get(3)?,
        first_seen: r.get(4)?,
        next_attempt: r.get(5)?,
        last_error: r.get(6)?,
        post_pending: r.get(7)?,
    })
}
