//! The outbox's delivery workers. Each claims the oldest due message of its node's data
//! center with a lease, sends it through the account's own transport, and records the
//! outcome: sent (with the server's reply and the node), back to waiting with a backoff
//! and jitter after a transient failure, or failed for good (a permanent failure, or
//! transient ones past `give_up_hours`), which raises an alert. A node that dies holding
//! a lease loses it once the node counts as dead (three missed heartbeats), when it
//! starts again under its name, or at the latest when the lease runs out; another worker
//! then sends the message again, with the same bytes and so the same Message-ID.

use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::bindings::transport::Envelope;
use crate::config::OutboxConfig;
use crate::store::OutboxJob;
use crate::workflow::Events;
use crate::workflow::events::{Alert, AlertKind};

/// How long a claim lasts: longer than any one send may take.
pub const LEASE: Duration = Duration::from_secs(300);

/// The longest an idle worker waits before it looks again for due mail (retries falling
/// due, mail queued by another process or node); mail queued in this process wakes the
/// workers at once.
const IDLE_MAX: Duration = Duration::from_secs(2);

/// Rings when this process queues a message.
static QUEUED: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Wakes this process's idle workers: a message was just queued.
pub fn queued() {
    QUEUED.notify_waiters();
}

/// Where the workers run.
pub struct Workers<'a> {
    pub app: Arc<App>,
    pub node: String,
    pub data_center: String,
    pub config: OutboxConfig,
    pub events: &'a dyn Events,
}

impl Workers<'_> {
    /// Runs the workers until `stop` turns true; a send under way finishes first.
    pub async fn run(&self, stop: tokio::sync::watch::Receiver<bool>) {
        // Held by the one idle worker that looks again on a timer; the other idle
        // workers wait until it finds mail or this process queues some, so an idle
        // process wakes for one look at a time, not one per worker.
        let lead = tokio::sync::Mutex::new(());
        let workers = (0..self.config.workers.max(1)).map(|i| {
            let stop = stop.clone();
            let lead = &lead;
            async move { self.worker(i, lead, stop).await }
        });
        tokio::join!(
            futures_util::future::join_all(workers),
            self.prune(stop.clone())
        );
    }

    /// Forgets the records of messages sent longer ago than `keep_sent_days`, hourly.
    async fn prune(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            let store = self.app.store().clone();
            let days = self.config.keep_sent_days;
            match tokio::task::spawn_blocking(move || store.prune_outbox(days)).await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => {
                    tracing::info!("outbox: forgot {n} message(s) sent over {days} days ago")
                }
                Ok(Err(e)) => tracing::warn!("outbox: forgetting old sent messages failed: {e}"),
                Err(e) => tracing::warn!("outbox: forgetting old sent messages failed: {e}"),
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(3600)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    async fn worker(
        &self,
        index: usize,
        lead: &tokio::sync::Mutex<()>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let owner = format!("{}:{}:{index}", self.node, std::process::id());
        let mut backoff = super::IdleBackoff::new(IDLE_MAX);
        loop {
            if *stop.borrow() {
                return;
            }
            // Registered before the look, so that mail queued during it is not missed.
            let woken = QUEUED.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let store = self.app.store().clone();
            let (dc, who, node) = (self.data_center.clone(), owner.clone(), self.node.clone());
            let until = crate::unix_now() + LEASE.as_secs() as i64;
            let claimed =
                tokio::task::spawn_blocking(move || store.claim_outbox(&dc, (&who, &node), until))
                    .await;
            match claimed {
                Ok(Ok(Some(job))) => {
                    backoff.worked();
                    // More may be due: the idle workers look too.
                    queued();
                    self.deliver(&owner, job).await;
                }
                Ok(Ok(None)) => {
                    // Only the leading idle worker has a timer; the others are woken.
                    let leading = lead.try_lock().ok();
                    let wait = leading.as_ref().map(|_| backoff.idle());
                    let timer = async {
                        match wait {
                            Some(wait) => tokio::time::sleep(wait).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        () = timer => {}
                        () = &mut woken => backoff.worked(),
                        _ = stop.changed() => {}
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!("outbox: claiming a message failed: {e}; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => {
                    tracing::warn!("outbox: claiming a message failed: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn deliver(&self, owner: &str, job: OutboxJob) {
        let transport = self
            .app
            .capabilities()
            .transport
            .accounts
            .get(&job.account)
            .map(|a| a.direct.clone());
        let envelope = Envelope {
            sender: job.sender.clone(),
            recipients: job.recipients.clone(),
        };
        let result = match &transport {
            Some(t) => t.send(&envelope, &job.message).await,
            None => Err(crate::bindings::MailError::NotFound(format!(
                "the account `{}` is no longer configured on node `{}`",
                job.account, self.node
            ))),
        };
        let store = self.app.store();
        let outcome = match &result {
            Ok(d) => {
                let reply = d.reference.clone().unwrap_or_else(|| "accepted".into());
                crate::metrics::outbox_delivery(&job.account, &job.data_center, "sent");
                let said = match d.status {
                    crate::bindings::transport::DeliveryStatus::Delivered => "delivered",
                    crate::bindings::transport::DeliveryStatus::Queued => "queued",
                };
                store.outbox_sent(job.id, owner, &self.node, &reply, said)
            }
            Err(e) => {
                let age = crate::unix_now() - job.created_at;
                let give_up = (self.config.give_up_hours * 3600) as i64;
                let next = (e.is_retryable() && age < give_up)
                    .then(|| crate::unix_now() + self.backoff(job.attempts).as_secs() as i64);
                let text = e.describe().to_string();
                let outcome = if next.is_some() { "retry" } else { "failed" };
                crate::metrics::outbox_delivery(&job.account, &job.data_center, outcome);
                if next.is_none() {
                    let line = format!(
                        "outbox message {} of `{}` failed after {} attempt(s): {text}",
                        job.id, job.account, job.attempts
                    );
                    tracing::error!("{line}");
                    self.events.alert(&Alert {
                        kind: AlertKind::DeliveryFailures,
                        account: &job.account,
                        workflow: "outbox",
                        text: &line,
                    });
                } else {
                    tracing::warn!(
                        "outbox message {} of `{}` not sent (attempt {}): {text}; retrying",
                        job.id,
                        job.account,
                        job.attempts
                    );
                }
                store.outbox_not_sent(job.id, owner, (e.kind_name(), &text), next)
            }
        };
        match outcome {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                "outbox message {}: the lease ran out before the outcome was recorded; another worker may send it again",
                job.id
            ),
            Err(e) => tracing::error!(
                "outbox message {}: recording the outcome failed: {e}; it is sent again once its lease runs out",
                job.id
            ),
        }
    }

    /// The wait before attempt `attempts + 1`: doubling from the base, up to an hour,
    /// with ±25 % jitter so that a server coming back is not hit by everything at once.
    fn backoff(&self, attempts: u32) -> Duration {
        let base = self.config.retry_base_secs.max(1);
        let secs = base
            .saturating_mul(1u64 << attempts.saturating_sub(1).min(16))
            .min(3600);
        crate::workflow::jitter(Duration::from_secs(secs)).max(Duration::from_secs(1))
    }
}
