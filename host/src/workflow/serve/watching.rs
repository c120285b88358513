//! One trigger's loop while this node holds it: catch up, record the state `status`
//! shows, wait for news (IDLE or a poll) up to the next retry, and again; failures back
//! off and reconnect, a pause on refused credentials ends when they change, and the
//! watchdog raises an alert when the trigger stays silent too long.

use std::time::Duration;

use tokio::sync::watch;

use super::{reconnect_delay, stopped};
use crate::bindings::Recovery;
use crate::caps::mailbox::WaitPlan;
use crate::store::{Handling, Store, WatchRow};
use crate::workflow::Workflow;
use crate::workflow::catchup::CatchUp;
use crate::workflow::events::{Alert, AlertKind, Events};
use crate::workflow::runner::{RunOptions, RunReport, Runner};
use crate::workflow::trigger::MailboxTrigger;

pub(super) fn put(store: &Store, row: &WatchRow) {
    if let Err(e) = store.put_watch(row) {
        tracing::warn!("could not record the state of `{}`: {e}", row.workflow);
    }
}

/// One trigger's loop.
pub(super) async fn watch_one(
    runner: &Runner<'_>,
    wf: &Workflow,
    trigger: &MailboxTrigger,
    mut stop: watch::Receiver<bool>,
) {
    let store = runner.store;
    let events = runner.events;
    let name = wf.name.as_str();
    let account = trigger.account.as_str();
    let mut row = WatchRow {
        workflow: name.to_owned(),
        account: account.to_owned(),
        mode: "starting".into(),
        pid: std::process::id(),
        started_at: crate::unix_now(),
        silence_after: trigger.silence().as_secs() as i64,
        ..WatchRow::default()
    };
    put(store, &row);
    let Some(mailbox) = runner.mailboxes.mailbox(account) else {
        row.last_error = Some(format!("account `{account}` has no mailbox"));
        row.last_error_at = Some(crate::unix_now());
        put(store, &row);
        tracing::error!("workflow `{name}`: account `{account}` has no mailbox; not served");
        return;
    };
    let catch_up = CatchUp::new(*runner);
    let silence = trigger.silence();
    let mut failures = 0u32;
    let mut last_alert: Option<i64> = None;
    // Whether the pause came from reading the mailbox rather than from a run.
    let mut paused_reading = false;
    events.line(name, &format!("watching `{account}`"));
    loop {
        if *stop.borrow() {
            break;
        }
        // Catch up from the cursor, then run the retries that are due.
        let mut report = RunReport::default();
        let options = RunOptions {
            retry_now: false,
            progress: true,
        };
        let result = catch_up
            .catch_up(wf, trigger, options, &mut report, Some(&stop))
            .await;
        // The credentials as they were before the catch-up's runs, so that a change
        // during them is not missed (read here only if the catch-up ended before it
        // read the store).
        let credentials = report
            .credentials
            .take()
            .or_else(|| store.credentials_fingerprint().ok());
        let waiting = match result {
            Ok(()) => {
                failures = 0;
                row.last_ok = Some(crate::unix_now());
                let waiting = match report.waiting.take() {
                    Some(waiting) => waiting,
                    None => store.waiting(name, account).unwrap_or_default(),
                };
                row.unhandled_since = waiting.oldest;
                // A pause lasts until a run succeeds: a catch-up with nothing due proves
                // nothing about the credentials.
                if paused_reading {
                    // Reading works again: the credentials that failed it do.
                    paused_reading = false;
                    row.paused = None;
                }
                if let Some(why) = report.paused.take() {
                    if row.paused.is_none() {
                        raise_alert(
                            events,
                            AlertKind::Credentials,
                            &mut row,
                            format!("runs fail on the credentials of `{account}`; paused: {why}"),
                            &mut last_alert,
                        );
                    }
                    row.paused = Some(why);
                } else if report.runs > 0 {
                    row.paused = None;
                }
                waiting
            }
            Err(e) => {
                failures += 1;
                let delay = reconnect_delay(failures);
                tracing::error!(
                    "workflow `{name}`: reading `{account}` failed ({failures} in a row): {e}; trying again in {delay:?}"
                );
                row.last_error = Some(e.to_string());
                row.last_error_at = Some(crate::unix_now());
                row.unhandled_since = row.unhandled_since.or(row.last_error_at);
                // Refused credentials pause the trigger, with the fix in `status`; a
                // change of credentials ends the wait at once.
                if e.recovery == Recovery::Pause {
                    paused_reading = true;
                    row.paused = Some(e.to_string());
                }
                alert_if_silent(events, &mut row, silence, &mut last_alert);
                put(store, &row);
                tokio::select! {
                    () = tokio::time::sleep(delay) => continue,
                    () = credentials_change(store, credentials.clone()), if row.paused.is_some() => continue,
                    () = stopped(&mut stop) => break,
                }
            }
        };
        put(store, &row);
        // Wait for news, but not past the next retry that falls due.
        let mut plan = plan_until(trigger, waiting.next_retry);
        plan.first = row.mode == "starting";
        let waited = tokio::select! {
            r = tokio::time::timeout(silence, mailbox.wait_for_change(plan)) => r,
            () = credentials_change(store, credentials.clone()), if row.paused.is_some() => {
                // A re-authorization or a new secret: what waits on the pause runs now.
                resume_waiting(store, name, account);
                continue;
            }
            () = stopped(&mut stop) => break,
        };
        match waited {
            Ok(Ok(wake)) => {
                failures = 0;
                row.mode = wake.mode.into();
                let now = crate::unix_now();
                // An IDLE that ended well heard from the server; a poll's wait is only a
                // timer, and counts once the read after it succeeds.
                if wake.mode == "idle" {
                    row.last_ok = Some(now);
                }
                if wake.changed {
                    // New mail is waiting from now until the catch-up handles it.
                    row.unhandled_since = row.unhandled_since.or(Some(now));
                    put(store, &row);
                }
                tracing::debug!("workflow `{name}`: `{account}` woke ({wake:?})");
            }
            Ok(Err(e)) => {
                failures += 1;
                let delay = reconnect_delay(failures);
                let text = e.describe().to_string();
                tracing::error!(
                    "workflow `{name}`: waiting on `{account}` failed ({failures} in a row): {text}; reconnecting in {delay:?}"
                );
                row.last_error = Some(text);
                row.last_error_at = Some(crate::unix_now());
                alert_if_silent(events, &mut row, silence, &mut last_alert);
                put(store, &row);
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stopped(&mut stop) => break,
                }
            }
            Err(_) => {
                // The wait should have ended by itself well before this: the connection
                // hangs. Dropping the wait dropped it; the next round reconnects.
                raise_alert(
                    events,
                    AlertKind::Silent,
                    &mut row,
                    format!(
                        "`{account}` was silent for {silence:?} (no IDLE answer and no poll); reconnected"
                    ),
                    &mut last_alert,
                );
                put(store, &row);
            }
        }
    }
    row.mode = "stopped".into();
    put(store, &row);
    events.line(name, "stopped");
}

/// How often a paused trigger looks whether the credentials changed.
const CREDENTIALS_CHECK: Duration = Duration::from_secs(1);

/// Returns once the stored credentials differ from `before` (a re-authorization, also by
/// `flowmail authorize` in another process, or a refresh).
async fn credentials_change(store: &Store, before: Option<String>) {
    loop {
        tokio::time::sleep(CREDENTIALS_CHECK).await;
        if store.credentials_fingerprint().ok() != before {
            return;
        }
    }
}

/// Makes every message that waits on `workflow`'s pause due now.
fn resume_waiting(store: &Store, workflow: &str, account: &str) {
    let now = crate::unix_now();
    let rows = match store.handled_in(workflow, account, Handling::Pending, None) {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!("could not read the messages waiting on `{workflow}`: {e}");
            return;
        }
    };
    for mut row in rows.into_iter().filter(|r| r.next_attempt > now) {
        row.next_attempt = now;
        if let Err(e) = store.put_handled(workflow, account, &row) {
            tracing::warn!("could not make a waiting message of `{workflow}` due: {e}");
        }
    }
}

/// Counts and logs an alert, and records it as the last error too.
fn raise_alert(
    events: &dyn Events,
    kind: AlertKind,
    row: &mut WatchRow,
    alert: String,
    last_alert: &mut Option<i64>,
) {
    let now = crate::unix_now();
    tracing::error!("ALERT: workflow `{}`: {alert}", row.workflow);
    events.alert(&Alert {
        kind,
        account: &row.account,
        workflow: &row.workflow,
        text: &alert,
    });
    row.alerts += 1;
    row.last_alert = Some(alert.clone());
    row.last_error = Some(alert);
    row.last_error_at = Some(now);
    *last_alert = Some(now);
}

/// Raises an alert when nothing has succeeded for `silence` (the failures go on, each
/// with its own reconnect), at most once per `silence`.
fn alert_if_silent(
    events: &dyn Events,
    row: &mut WatchRow,
    silence: Duration,
    last_alert: &mut Option<i64>,
) {
    let now = crate::unix_now();
    let limit = silence.as_secs().max(1) as i64;
    let quiet_since = row.last_ok.unwrap_or(row.started_at);
    let due = last_alert.is_none_or(|at| now - at >= limit);
    if now - quiet_since >= limit && due {
        let cause = row.last_error.clone().unwrap_or_default();
        raise_alert(
            events,
            AlertKind::Silent,
            row,
            format!(
                "`{}` has been silent for {}s (no successful IDLE or poll); reconnecting with backoff; last error: {cause}",
                row.account,
                now - quiet_since
            ),
            last_alert,
        );
    }
}

/// The trigger's wait plan, shortened so that the wait ends when the next retry, due at
/// `next_retry`, falls due.
fn plan_until(trigger: &MailboxTrigger, next_retry: Option<i64>) -> WaitPlan {
    let mut plan = trigger.wait_plan();
    if let Some(at) = next_retry {
        let until = Duration::from_secs((at - crate::unix_now()).max(1) as u64);
        plan.idle_refresh = plan.idle_refresh.min(until);
        plan.poll_interval = plan.poll_interval.min(until);
    }
    plan
}
