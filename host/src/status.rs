//! `flowmail status`: what each mailbox trigger last did, read from the store, so that a
//! trigger that stopped or went silent shows even when its process is gone.

use std::fmt::Write as _;

use serde::Serialize;

use crate::store::{Handling, Store, StoreError};

/// The state of one trigger.
#[derive(Debug, Serialize)]
pub struct TriggerStatus {
    pub workflow: String,
    pub account: String,
    /// `idle`, `poll`, `starting` or `stopped` for a served trigger; `run` for one that
    /// only `flowmail run` has caught up.
    pub mode: String,
    /// `ok`; `paused` while runs fail on the account's credentials; `not connected` when
    /// a served trigger has not reached its mailbox once in its first minute (or its
    /// silence threshold); `silent`
    /// when no IDLE or poll succeeded within the silence threshold; `not running` when the serving
    /// process is gone; `stopped`; `not served` for a trigger only `flowmail run` reads.
    pub health: String,
    /// Why the trigger is paused, with the fix.
    pub paused: Option<String>,
    pub pid: u32,
    pub last_ok_at: Option<i64>,
    pub last_ok_secs_ago: Option<i64>,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
    /// The age of the oldest message still waiting to be handled, in seconds.
    pub oldest_unhandled_secs: Option<i64>,
    pub alerts: u32,
    pub last_alert: Option<String>,
    pub handled: u64,
    pub waiting_for_retry: u64,
    pub dead_letters: u64,
    pub cursor: Option<String>,
    /// The latest dead letters (at most ten), each with its attempts and reason.
    pub latest_dead_letters: Vec<DeadLetter>,
}

/// One message in the dead letters.
#[derive(Debug, Serialize)]
pub struct DeadLetter {
    /// Its id in the mailbox.
    pub message: String,
    /// Its Message-ID (`id:...`) or digest (`sha256:...`).
    pub key: String,
    pub attempts: u32,
    pub reason: Option<String>,
}

/// How long a served trigger may take to first reach its mailbox before `status` calls
/// it `not connected` (or its silence threshold, if shorter).
pub const CONNECT_GRACE: i64 = 60;

/// Every trigger's status.
pub fn collect(store: &Store) -> Result<Vec<TriggerStatus>, StoreError> {
    let now = crate::unix_now();
    let mut out = Vec::new();
    let mut watches = store.watches()?;
    // Triggers that only `flowmail run` caught up have no watchdog row: they show too,
    // so that their retries and dead letters are seen.
    for (workflow, account, at) in store.triggers_read()? {
        if !watches
            .iter()
            .any(|w| w.workflow == workflow && w.account == account)
        {
            watches.push(crate::store::WatchRow {
                workflow,
                account,
                mode: "run".into(),
                pid: 0,
                started_at: at,
                last_ok: Some(at),
                ..Default::default()
            });
        }
    }
    watches.sort_by(|a, b| (&a.workflow, &a.account).cmp(&(&b.workflow, &b.account)));
    for w in watches {
        let counts = store.handled_counts(&w.workflow, &w.account)?;
        let cursor = store.cursor(&w.workflow, &w.account)?;
        // On a shared store the serving process may be on another machine: it runs while
        // it holds the trigger's lease.
        let alive = if store.is_shared() {
            store.lease_holder(&w.workflow)?.is_some()
        } else {
            process_alive(w.pid)
        };
        let silent = w.last_ok.unwrap_or(w.started_at) + w.silence_after < now;
        let never_connected = w.mode == "starting"
            && w.last_ok.is_none()
            && w.started_at + CONNECT_GRACE.min(w.silence_after) < now;
        let health = if w.mode == "stopped" {
            "stopped"
        } else if w.mode == "run" {
            "not served"
        } else if !alive {
            "not running"
        } else if w.paused.is_some() {
            "paused"
        } else if w.mode == "restarting" {
            // Its task ended abnormally; `last_error` says why.
            "restarting"
        } else if never_connected {
            "not connected"
        } else if silent {
            "silent"
        } else {
            "ok"
        };
        out.push(TriggerStatus {
            health: health.into(),
            mode: w.mode,
            pid: w.pid,
            last_ok_at: w.last_ok,
            last_ok_secs_ago: w.last_ok.map(|t| now - t),
            last_error: w.last_error,
            last_error_at: w.last_error_at,
            oldest_unhandled_secs: w.unhandled_since.map(|t| now - t),
            alerts: w.alerts,
            last_alert: w.last_alert,
            handled: counts.done,
            waiting_for_retry: counts.pending + counts.running,
            dead_letters: counts.dead,
            cursor,
            paused: w.paused,
            latest_dead_letters: store
                .handled_in(&w.workflow, &w.account, Handling::Dead, None)?
                .into_iter()
                .rev()
                .take(10)
                .map(|r| DeadLetter {
                    message: r.message,
                    key: r.key,
                    attempts: r.attempts,
                    reason: r.last_error,
                })
                .collect(),
            workflow: w.workflow,
            account: w.account,
        });
    }
    Ok(out)
}

fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn ago(secs: Option<i64>) -> String {
    match secs {
        None => "never".into(),
        Some(s) if s < 120 => format!("{s}s ago"),
        Some(s) if s < 7200 => format!("{}m ago", s / 60),
        Some(s) => format!("{}h ago", s / 3600),
    }
}

/// The status as text for people.
pub fn render(all: &[TriggerStatus]) -> String {
    let mut out = String::new();
    if all.is_empty() {
        out.push_str(
            "no mailbox trigger has read a mailbox yet; start one with `flowmail serve` or `flowmail run`\n",
        );
        return out;
    }
    let now = crate::unix_now();
    for s in all {
        let _ = writeln!(
            out,
            "{} ({}): {} [{}], pid {}",
            s.workflow,
            s.account,
            s.health.to_uppercase(),
            s.mode,
            s.pid
        );
        if let Some(why) = &s.paused {
            let _ = writeln!(out, "  paused:            {why}");
        }
        if s.mode == "run" {
            let _ = writeln!(out, "  last read:         {}", ago(s.last_ok_secs_ago));
        } else {
            let _ = writeln!(out, "  last IDLE or poll: {}", ago(s.last_ok_secs_ago));
        }
        let _ = writeln!(
            out,
            "  last error:        {}",
            match (&s.last_error, s.last_error_at) {
                (Some(e), Some(at)) => format!("{} ({e})", ago(Some(now - at))),
                _ => "none".into(),
            }
        );
        let _ = writeln!(
            out,
            "  oldest unhandled:  {}",
            s.oldest_unhandled_secs
                .map(|a| format!("{a}s old"))
                .unwrap_or_else(|| "none waiting".into())
        );
        let _ = writeln!(
            out,
            "  messages:          {} handled, {} waiting for a retry, {} dead letters",
            s.handled, s.waiting_for_retry, s.dead_letters
        );
        if s.alerts > 0 {
            let _ = writeln!(
                out,
                "  alerts:            {} (last: {})",
                s.alerts,
                s.last_alert.as_deref().unwrap_or_default()
            );
        }
        for d in &s.latest_dead_letters {
            let _ = writeln!(
                out,
                "  dead letter:       {} after {} attempt(s): {}",
                d.message,
                d.attempts,
                d.reason.as_deref().unwrap_or("no reason recorded")
            );
        }
        if let Some(cursor) = &s.cursor {
            let _ = writeln!(out, "  cursor:            {cursor}");
        }
    }
    out
}

/// The durable outbox: one row per data center and state, and the latest failures.
#[derive(Debug, Serialize)]
pub struct OutboxReport {
    pub outbox: Vec<OutboxRow>,
    pub outbox_failures: Vec<crate::store::OutboxFailure>,
}

/// How many messages of a data center are in one state.
#[derive(Debug, Serialize)]
pub struct OutboxRow {
    pub data_center: String,
    /// `queued`, `sending`, `sent` or `failed`.
    pub status: String,
    pub count: u64,
    /// The age of the oldest message, for `queued` and `sending` only.
    pub oldest_secs: Option<i64>,
    /// The bytes of the messages held; a sent message's are dropped.
    pub bytes: u64,
}

/// The outbox by data center and state, with the latest five failures and their reasons.
/// Both lists are empty when nothing was ever queued.
pub fn outbox(store: &Store) -> Result<OutboxReport, StoreError> {
    let now = crate::unix_now();
    let outbox = store
        .outbox_counts()?
        .into_iter()
        .map(|c| {
            let waiting = c.status == "queued" || c.status == "sending";
            OutboxRow {
                oldest_secs: waiting.then(|| now - c.oldest_created_at),
                data_center: c.data_center,
                status: c.status,
                count: c.count,
                bytes: c.bytes,
            }
        })
        .collect();
    Ok(OutboxReport {
        outbox,
        outbox_failures: store.outbox_failures(5)?,
    })
}

/// The outbox as text, by data center: how many messages wait, are being sent, were sent
/// or failed, the oldest waiting one's age, and the latest failures with their reasons.
/// Empty when nothing was ever queued.
pub fn render_outbox(report: &OutboxReport) -> String {
    let counts = &report.outbox;
    if counts.is_empty() {
        return String::new();
    }
    let mut text = String::from("\noutbox:\n");
    let mut centers: Vec<&str> = counts.iter().map(|c| c.data_center.as_str()).collect();
    centers.dedup();
    for dc in centers {
        let of = |status: &str| {
            counts
                .iter()
                .find(|c| c.data_center == dc && c.status == status)
        };
        let n = |status: &str| of(status).map_or(0, |c| c.count);
        let oldest = of("queued")
            .and_then(|c| c.oldest_secs)
            .map(|secs| format!(", oldest waiting {secs}s"))
            .unwrap_or_default();
        let _ = writeln!(
            text,
            "  {dc}: {} queued, {} sending, {} sent, {} failed{oldest}",
            n("queued"),
            n("sending"),
            n("sent"),
            n("failed")
        );
    }
    for f in &report.outbox_failures {
        let _ = writeln!(
            text,
            "  failed: message {} of `{}` {} after {} attempt(s): {}",
            f.id,
            f.account,
            f.message_id.as_deref().unwrap_or("(no Message-ID)"),
            f.attempts,
            f.error
        );
    }
    text
}

/// The plugin each running node serves and, where its last reload on SIGHUP was refused,
/// why: the plugin named still serves. Empty when no running node recorded one.
pub fn render_plugins(store: &Store) -> Result<String, StoreError> {
    let now = crate::unix_now();
    let alive: Vec<String> = store
        .nodes()?
        .into_iter()
        .filter(|n| n.alive(now))
        .map(|n| n.name)
        .collect();
    let mut text = String::new();
    for p in store.node_plugins()? {
        if !alive.contains(&p.node) {
            continue;
        }
        if text.is_empty() {
            text.push_str("\nplugin:\n");
        }
        text.push_str(&format!("  node {}: {}\n", p.node, p.plugin));
        if let Some(error) = &p.error {
            text.push_str(&format!(
                "    RELOAD FAILED {}: {error}; the plugin above keeps serving\n",
                ago(Some(now - p.at))
            ));
        }
    }
    Ok(text)
}
