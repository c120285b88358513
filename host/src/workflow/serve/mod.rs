//! `flowmail serve`: keeps every mailbox-triggered workflow running. Each trigger catches
//! up from its cursor, then waits in IDLE (or polls), and catches up again. Lost
//! connections are retried with exponential backoff and jitter. A watchdog reconnects a
//! trigger that stays silent too long and raises an alert. What each trigger last did is
//! written to the store for `flowmail status`.

mod watching;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::watch;

use super::Workflow;
use super::events::Events;
use super::runner::Runner;
use super::trigger::{MailboxTrigger, jitter};
use crate::app::App;
use crate::store::{Store, StoreError, WatchRow};

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
        watching::watch_one(&runner, &wf, trigger, stop).await;
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
    watching::put(store, &row);
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
                let served = watching::watch_one(runner, wf, trigger, serving);
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
pub(super) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
