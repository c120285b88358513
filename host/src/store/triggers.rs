//! What mailbox triggers keep: each message's record with a workflow (done, waiting for a
//! retry, dead), what a catch-up owes and what waits.

use sqlx::any::AnyRow;

use super::values::{args, get};
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

/// Counts of a trigger's messages by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandledCounts {
    pub done: u64,
    pub pending: u64,
    pub running: u64,
    pub dead: u64,
}

/// What a catch-up owes before it reads on: the runs that were cut short (records still
/// `running`), and the post-actions and dead-letter actions not yet taken, each oldest
/// first.
#[derive(Debug, Default)]
pub struct Owed {
    /// Records left `running` by a run that was cut short.
    pub interrupted: Vec<HandledRow>,
    /// Records whose post-action or dead-letter action has not taken effect yet.
    pub post_actions: Vec<HandledRow>,
}

impl Owed {
    fn of(rows: Vec<HandledRow>) -> Self {
        let (interrupted, post_actions) = rows
            .into_iter()
            .partition(|row| row.status == Handling::Running);
        Self {
            interrupted,
            post_actions,
        }
    }
}

/// What a trigger's catch-up reads before it looks at the mailbox ([`Store::outset`]).
#[derive(Debug, Default)]
pub struct Outset {
    /// The stored credentials' fingerprint ([`Store::credentials_fingerprint`]), as it
    /// was before the catch-up's runs.
    pub credentials: String,
    pub owed: Owed,
    /// Where the trigger stopped reading ([`Store::cursor`]).
    pub cursor: Option<String>,
}

/// What of a trigger's messages still waits for a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Waiting {
    /// When the oldest message still waiting for a (re)try, or running, was first seen.
    pub oldest: Option<i64>,
    /// When the next retry falls due.
    pub next_retry: Option<i64>,
}

/// The columns [`handled_row`] reads, in its order.
const HANDLED_COLUMNS: &str =
    "key, message, status, attempts, first_seen, next_attempt, last_error, post_pending";

/// The records a catch-up owes work on: runs cut short, post-actions not yet taken.
fn owed_sql() -> String {
    format!(
        "SELECT {HANDLED_COLUMNS} FROM handled WHERE workflow = $1 AND account = $2
           AND (status = 'running' OR (status IN ('done', 'dead') AND post_pending != 0))
         ORDER BY first_seen, {{seq}}"
    )
}

/// The records in one state, due by a time ([`Store::handled_in`]).
fn handled_in_sql() -> String {
    format!(
        "SELECT {HANDLED_COLUMNS} FROM handled WHERE workflow = $1 AND account = $2
           AND status = $3 AND next_attempt <= $4
         ORDER BY first_seen, {{seq}}"
    )
}

/// What waits for a run ([`Store::waiting`]).
const WAITING_READ: &str =
    "SELECT MIN(first_seen), MIN(CASE WHEN status = 'pending' THEN next_attempt END)
       FROM handled WHERE workflow = $1 AND account = $2 AND status IN ('pending', 'running')";

fn waiting_row(r: &AnyRow) -> std::result::Result<Waiting, sqlx::Error> {
    Ok(Waiting {
        oldest: get::<Option<i64>>(r, 0)?,
        next_retry: get::<Option<i64>>(r, 1)?,
    })
}

impl Store {
    /// The record of message `key` with `workflow`.
    pub fn handled(&self, workflow: &str, account: &str, key: &str) -> Result<Option<HandledRow>> {
        self.conn.row(
            &format!(
                "SELECT {HANDLED_COLUMNS} FROM handled WHERE workflow = $1 AND account = $2 AND key = $3"
            ),
            args![workflow, account, key],
            handled_row,
        )
    }

    /// Messages of `workflow` whose run succeeded but whose post-action has not yet taken
    /// effect (it failed, or the process died before it).
    pub fn post_actions_pending(&self, workflow: &str, account: &str) -> Result<Vec<HandledRow>> {
        let rows = self
            .conn
            .rows(&owed_sql(), args![workflow, account], handled_row)?;
        Ok(Owed::of(rows).post_actions)
    }

    /// What a trigger's catch-up reads before it looks at the mailbox, in one visit to
    /// the store: the credentials' fingerprint, what it owes, and its cursor.
    pub fn outset(&self, workflow: &str, account: &str) -> Result<Outset> {
        let err = self.conn.sql_err();
        let owed = owed_sql();
        let read = self.conn.reads(vec![
            (self.fingerprint_sql(), args![]),
            (&owed, args![workflow, account]),
            (super::CURSOR_READ, args![workflow, account]),
        ])?;
        // One set of rows per query, in their order.
        let mut sets = read.into_iter();
        let (credentials, owed, cursor) = (
            sets.next().unwrap_or_default(),
            sets.next().unwrap_or_default(),
            sets.next().unwrap_or_default(),
        );
        let first = |rows: &[AnyRow]| -> Result<Option<String>> {
            rows.first()
                .map(|r| get::<Option<String>>(r, 0).map_err(&err))
                .transpose()
                .map(Option::flatten)
        };
        Ok(Outset {
            credentials: first(&credentials)?.unwrap_or_default(),
            owed: Owed::of(handled_rows(&owed).map_err(&err)?),
            cursor: first(&cursor)?,
        })
    }

    /// Writes the record of one message.
    pub fn put_handled(&self, workflow: &str, account: &str, row: &HandledRow) -> Result<()> {
        self.fenced_write(
            workflow,
            HANDLED_WRITE,
            handled_args(workflow, account, row),
        )
    }

    /// Marks the records of a unit's messages as running, before its run starts, in one
    /// write, fenced like [`Store::put_handled`]. The mark makes a run cut short by a
    /// crash of the process count as an attempt, so that a message that crashes it
    /// each time ends in the dead letters. It does not wait for the disk: after a crash
    /// of the machine, a mark lost with it only means that the message runs again as if
    /// for the first time, as it would have run again anyway; the run's outcome is
    /// written durably ([`Store::finish_unit`]).
    pub fn start_unit(&self, workflow: &str, account: &str, rows: &[HandledRow]) -> Result<()> {
        let epoch = self.leases.epoch(workflow);
        let writes: Vec<_> = rows
            .iter()
            .map(|row| {
                super::fenced_statement(epoch, HANDLED_WRITE, handled_args(workflow, account, row))
            })
            .collect();
        if writes.is_empty() {
            return Ok(());
        }
        super::fenced(workflow, self.conn.write_as(writes, false)?)
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
        self.conn.rows(
            &handled_in_sql(),
            args![
                workflow,
                account,
                status.as_str(),
                due_by.unwrap_or(i64::MAX)
            ],
            handled_row,
        )
    }

    /// Every dead letter, of `workflow` or of all workflows, as (workflow, account, row).
    pub fn dead_letters(
        &self,
        workflow: Option<&str>,
    ) -> Result<Vec<(String, String, HandledRow)>> {
        self.conn.rows(
            &format!(
                "SELECT {HANDLED_COLUMNS}, workflow, account
                 FROM handled WHERE status = 'dead' AND ($1 = '' OR workflow = $1)
                 ORDER BY workflow, account, first_seen, {{seq}}"
            ),
            args![workflow.unwrap_or_default()],
            |r| Ok((get(r, 8)?, get(r, 9)?, handled_row(r)?)),
        )
    }

    /// Puts the dead letters of `workflow` (or of all workflows) back to waiting, with
    /// fresh attempts and due now, so that the next catch-up runs each once. Returns how
    /// many there were. Run twice, the second finds none: each comes back once.
    pub fn retry_dead_letters(&self, workflow: Option<&str>) -> Result<usize> {
        self.conn
            .exec(
                "UPDATE handled SET status = 'pending', attempts = 0, next_attempt = $2,
                    last_error = 'retry requested after: ' || COALESCE(last_error, 'no reason'),
                    updated_at = $2
                 WHERE status = 'dead' AND ($1 = '' OR workflow = $1)",
                args![workflow.unwrap_or_default(), crate::unix_now()],
            )
            .map(|n| n as usize)
    }

    /// How many messages of `workflow` are in each state.
    pub fn handled_counts(&self, workflow: &str, account: &str) -> Result<HandledCounts> {
        let rows = self.conn.rows(
            "SELECT status, COUNT(*) FROM handled WHERE workflow = $1 AND account = $2
             GROUP BY status",
            args![workflow, account],
            |r| Ok((get::<String>(r, 0)?, get::<i64>(r, 1)?)),
        )?;
        let mut counts = HandledCounts::default();
        for (status, n) in rows {
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

    /// What of `workflow`'s messages in `account` waits for a run, in one query: the
    /// trigger asks after every look.
    pub fn waiting(&self, workflow: &str, account: &str) -> Result<Waiting> {
        let row = self
            .conn
            .row(WAITING_READ, args![workflow, account], waiting_row)?;
        Ok(row.unwrap_or_default())
    }

    /// The messages of `workflow` waiting for a retry that is due by `due_by` (all of
    /// them without it), oldest first, and what waits for a run ([`Store::waiting`]),
    /// in one visit to the store.
    pub fn due_and_waiting(
        &self,
        workflow: &str,
        account: &str,
        due_by: Option<i64>,
    ) -> Result<(Vec<HandledRow>, Waiting)> {
        let err = self.conn.sql_err();
        let due = handled_in_sql();
        let read = self.conn.reads(vec![
            (
                &due,
                args![
                    workflow,
                    account,
                    Handling::Pending.as_str(),
                    due_by.unwrap_or(i64::MAX)
                ],
            ),
            (WAITING_READ, args![workflow, account]),
        ])?;
        let mut sets = read.into_iter();
        let (due, waiting) = (
            sets.next().unwrap_or_default(),
            sets.next().unwrap_or_default(),
        );
        let due = handled_rows(&due).map_err(&err)?;
        let waiting = waiting
            .first()
            .map(waiting_row)
            .transpose()
            .map_err(&err)?
            .unwrap_or_default();
        Ok((due, waiting))
    }

    /// Every (workflow, account) that has read a mailbox, by `serve` or `flowmail run`,
    /// with when it last moved its cursor or recorded a message.
    pub fn triggers_read(&self) -> Result<Vec<(String, String, i64)>> {
        self.conn.rows(
            "SELECT workflow, account, MAX(at) FROM (
                SELECT workflow, account, updated_at AS at FROM cursors
                UNION ALL
                SELECT workflow, account, updated_at AS at FROM handled
             ) AS read GROUP BY workflow, account ORDER BY workflow, account",
            args![],
            |r| Ok((get(r, 0)?, get(r, 1)?, get(r, 2)?)),
        )
    }
}

fn handled_rows(rows: &[AnyRow]) -> std::result::Result<Vec<HandledRow>, sqlx::Error> {
    rows.iter().map(handled_row).collect()
}

fn handled_row(r: &AnyRow) -> std::result::Result<HandledRow, sqlx::Error> {
    Ok(HandledRow {
        key: get(r, 0)?,
        message: get(r, 1)?,
        status: Handling::parse(&get::<String>(r, 2)?),
        attempts: get::<i64>(r, 3)? as u32,
        first_seen: get(r, 4)?,
        next_attempt: get(r, 5)?,
        last_error: get(r, 6)?,
        post_pending: get::<i64>(r, 7)? != 0,
    })
}

/// The write of one message's record, `$1` the workflow (fenced by the caller).
pub(super) const HANDLED_WRITE: &str =
    "INSERT INTO handled (workflow, account, key, message, status, attempts,
        first_seen, next_attempt, last_error, updated_at, post_pending)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
     ON CONFLICT (workflow, account, key) DO UPDATE SET
        message = excluded.message, post_pending = excluded.post_pending,
        status = excluded.status, attempts = excluded.attempts,
        next_attempt = excluded.next_attempt, last_error = excluded.last_error,
        updated_at = excluded.updated_at";

pub(super) fn handled_args(
    workflow: &str,
    account: &str,
    row: &HandledRow,
) -> Vec<super::values::Arg> {
    args![
        workflow,
        account,
        &row.key,
        &row.message,
        row.status.as_str(),
        row.attempts,
        row.first_seen,
        row.next_attempt,
        &row.last_error,
        crate::unix_now(),
        row.post_pending
    ]
}
