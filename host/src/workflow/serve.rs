//! `flowmail serve`: keeps every mailbox-triggered workflow running. Each trigger catches
//! up from its cursor, then waits in IDLE (or polls), and catches up again. Lost
//! connections are retried with exponential backoff and jitter. A watchdog reconnects a
//! trigger that stays silent too long and raises an alert. What each trigger last did is
//! written to the store for `flowmail status`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::watch;

use super::Workflow;
use super::catchup::CatchUp;
use super::events::{Alert, AlertKind, Events};
use super::runner::{RunOptions, RunReport, Runner};
use super::trigger::{MailboxTrigger, jitter};
use crate::app::App;
use crate::bindings::Recovery;
use crate::caps::mailbox::WaitPlan;
use crate::store::{Handling, Store, StoreError, WatchRow};

/// The first wait after a failure; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The wait after `failures` failures in a row, with jitter.
pub fn reconnect_delay(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    jitter(FIRST_BACKOFF.saturating_mul(1 << exp).min(MAX_BACKOFF))
}

/// What every trigger runs with. It is owned, so that each trigger runs as a task of its
/// own on the multi-threaded runtime: a slow commit, a send or a plugin call of one
/// trigger holds up none of the others.
#[derive(Clone)]
pub struct Serving {
    pub app: Arc<App>,
    pub events: Arc<dyn Events>,
}

impl Serving {
    fn runner(&self) -> anyhow::Result<Runner<'_>> {
        Ok(Runner::new(&self.app)?.with_events(&*self.events))
    }
}

/// Serves `workflows` (those with a mailbox trigger) until `stop` turns true, each
/// trigger in a task of its own. On a SQLite store it fails at once, serving nothing,
/// when another process already runs one of them. On a shared store each trigger runs on
/// one node at a time: a node that finds it claimed stands by and takes it over when its
/// holder stops or dies.
pub async fn serve(
    serving: Serving,
    workflows: Vec<Workflow>,
    stop: watch::Receiver<bool>,
) -> Result<(), StoreError> {
    let workflows: Vec<Arc<Workflow>> = workflows
        .into_iter()
        .filter(|wf| wf.trigger.mailbox.is_some())
        .map(Arc::new)
        .collect();
    let shared = serving.app.store().is_shared();
    let mut claims = Vec::with_capacity(workflows.len());
    if !shared {
        for wf in &workflows {
            claims.push(serving.app.store().lock_workflow(&wf.name)?);
        }
    }
    let tasks = workflows
        .into_iter()
        .map(|wf| supervise(serving.clone(), wf, shared, stop.clone()));
    join_all(tasks).await;
    drop(claims);
    Ok(())
}

/// Runs one trigger in a task of its own until `stop`. A task that ends abnormally (a
/// panic in a dependency) is logged, shown in `status` and started again after a backoff,
/// while the other triggers go on.
async fn supervise(
    serving: Serving,
    wf: Arc<Workflow>,
    shared: bool,
    mut stop: watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    loop {
        let task = tokio::spawn(trigger_task(
            serving.clone(),
            wf.clone(),
            shared,
            stop.clone(),
        ));
        let ended = match task.await {
            Ok(()) => return,
            Err(e) if e.is_cancelled() => return,
            Err(e) => e,
        };
        failures += 1;
        let delay = reconnect_delay(failures);
        let why = format!(
            "the trigger's task ended abnormally ({}); started again in {delay:?}",
            panic_text(ended)
        );
        tracing::error!("workflow `{}`: {why}", wf.name);
        record_crash(serving.app.store(), &wf, &why);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stopped(&mut stop) => return,
        }
    }
}

/// One trigger: claimed first on a shared store, then watched.
async fn trigger_task(
    serving: Serving,
    wf: Arc<Workflow>,
    shared: bool,
    stop: watch::Receiver<bool>,
) {
    let Some(trigger) = wf.trigger.mailbox.as_ref() else {
        return;
    };
    let runner = match serving.runner() {
        Ok(runner) => runner,
        Err(e) => {
            tracing::error!("workflow `{}`: not served: {e:#}", wf.name);
            return;
        }
    };
    if shared {
        claim_then_watch(&runner, &wf, trigger, stop).await;
    } else {
        watch_one(&runner, &wf, trigger, stop).await;
    }
}

/// What a task's panic said, for the log and `status`.
fn panic_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into()),
        Err(e) => e.to_string(),
    }
}

/// Records a crashed trigger task as the trigger's last error.
fn record_crash(store: &Store, wf: &Workflow, why: &str) {
    let Some(trigger) = wf.trigger.mailbox.as_ref() else {
        return;
    };
    let mut row = store
        .watches()
        .ok()
        .and_then(|rows| rows.into_iter().find(|r| r.workflow == wf.name))
        .unwrap_or_else(|| WatchRow {
            workflow: wf.name.clone(),
            account: trigger.account.clone(),
            pid: std::process::id(),
            started_at: crate::unix_now(),
            ..WatchRow::default()
        });
    row.mode = "restarting".into();
    row.last_error = Some(why.to_owned());
    row.last_error_at = Some(crate::unix_now());
    put(store, &row);
}

/// How often a standby node tries to take a trigger over.
const STANDBY_PROBE: Duration = Duration::from_secs(2);

/// Claims `wf`'s trigger on the shared store, standing by while another node holds it,
/// then serves it until `stop`.
async fn claim_then_watch(
    runner: &Runner<'_>,
    wf: &Workflow,
    trigger: &MailboxTrigger,
    mut stop: watch::Receiver<bool>,
) {
    let mut told = false;
    loop {
        if *stop.borrow() {
            return;
        }
        match runner.store.try_lock_workflow(&wf.name) {
            Ok(Some(claim)) => {
                if told {
                    tracing::warn!("workflow `{}`: taken over by this node", wf.name);
                }
                let (stand_down, serving) = watch::channel(false);
                let served = watch_one(runner, wf, trigger, serving);
                tokio::pin!(served);
                let lost = tokio::select! {
                    () = &mut served => false,
                    lost = stopped_or_lost(&mut stop, claim.lost()) => {
                        let _ = stand_down.send(true);
                        served.await;
                        lost
                    }
                };
                drop(claim);
                if !lost {
                    return;
                }
                // Paused past its lease, this node found the trigger taken: it stands by.
                told = true;
                continue;
            }
            Ok(None) => {
                if !told {
                    tracing::warn!(
                        "workflow `{}` runs on another node; this one stands by and takes it over when that one stops",
                        wf.name
                    );
                    told = true;
                }
            }
            Err(e) => tracing::warn!("workflow `{}`: claiming its trigger failed: {e}", wf.name),
        }
        tokio::select! {
            () = tokio::time::sleep(STANDBY_PROBE) => {}
            () = stopped(&mut stop) => return,
        }
    }
}

/// Waits until `stop` is true (then `false`) or the claim is `lost` (then `true`).
async fn stopped_or_lost(
    stop: &mut watch::Receiver<bool>,
    lost: Option<watch::Receiver<bool>>,
) -> bool {
    let lost = async {
        match lost {
            Some(mut lost) => {
                if lost.wait_for(|l| *l).await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = stopped(stop) => false,
        () = lost => true,
    }
}

/// Waits until `stop` is true; a closed channel counts as a stop.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn put(store: &Store, row: &WatchRow) {
    if let Err(e) = store.put_watch(row) {
        tracing::warn!("could not record the state of `{}`: {e}", row.workflow);
    }
}

/// One trigger's loop.
async fn watch_one(
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
