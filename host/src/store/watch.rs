//! Each trigger's watchdog state, as `flowmail serve` last reported it: what `flowmail
//! status` shows. Not a promise: a write of it does not wait for the disk.

use super::values::{args, get};
use super::{Result, Store, StoreError};

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

impl Store {
    /// Writes a trigger's watchdog state. It is what `status` shows, not a promise: it
    /// does not wait for the disk (a crash of the machine may lose the last states).
    pub fn put_watch(&self, row: &WatchRow) -> Result<()> {
        let written = self.fenced_write_as(
            &row.workflow,
            "INSERT INTO watch (workflow, account, mode, pid, started_at, last_ok,
                    last_error, last_error_at, unhandled_since, alerts, last_alert, silence_after,
                    updated_at, paused)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
                 ON CONFLICT (workflow, account) DO UPDATE SET mode = excluded.mode,
                    pid = excluded.pid, started_at = excluded.started_at,
                    last_ok = excluded.last_ok, last_error = excluded.last_error,
                    last_error_at = excluded.last_error_at,
                    unhandled_since = excluded.unhandled_since, alerts = excluded.alerts,
                    last_alert = excluded.last_alert, silence_after = excluded.silence_after,
                    updated_at = excluded.updated_at, paused = excluded.paused",
            args![
                &row.workflow,
                &row.account,
                &row.mode,
                row.pid,
                row.started_at,
                row.last_ok,
                &row.last_error,
                row.last_error_at,
                row.unhandled_since,
                row.alerts,
                &row.last_alert,
                row.silence_after,
                crate::unix_now(),
                &row.paused
            ],
            false,
        );
        // A node that lost the trigger leaves its row to the node that took it.
        match written {
            Err(StoreError::Fenced { .. }) => Ok(()),
            other => other,
        }
    }

    /// Every trigger's watchdog state, by workflow and account.
    pub fn watches(&self) -> Result<Vec<WatchRow>> {
        self.conn.rows(
            "SELECT workflow, account, mode, pid, started_at, last_ok, last_error,
                last_error_at, unhandled_since, alerts, last_alert, silence_after, updated_at,
                paused
             FROM watch ORDER BY workflow, account",
            args![],
            |r| {
                Ok(WatchRow {
                    workflow: get(r, 0)?,
                    account: get(r, 1)?,
                    mode: get(r, 2)?,
                    pid: get::<i64>(r, 3)? as u32,
                    started_at: get(r, 4)?,
                    last_ok: get(r, 5)?,
                    last_error: get(r, 6)?,
                    last_error_at: get(r, 7)?,
                    unhandled_since: get(r, 8)?,
                    alerts: get::<i64>(r, 9)? as u32,
                    last_alert: get(r, 10)?,
                    silence_after: get(r, 11)?,
                    updated_at: get(r, 12)?,
                    paused: get(r, 13)?,
                })
            },
        )
    }
}
