//! Metrics in Prometheus text, served at `/metrics` on the web listener. Counters count
//! what this process did (sends by account, transport and outcome; alerts by kind and
//! account); gauges are read from the store at each scrape, so any node shows the whole
//! cluster: trigger lag and the age of the last successful IDLE or poll, paused
//! triggers, dead letters, token expiry, and nodes alive per data center.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::store::Store;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's recorder, installed on first use; `None` if another recorder was
/// installed first.
fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| PrometheusBuilder::new().install_recorder().ok())
        .as_ref()
}

/// Starts recording; call once at start so that counters count from then on.
pub fn install() {
    if handle().is_none() {
        tracing::warn!("another metrics recorder is installed; /metrics stays empty");
    }
}

/// Counts one send through `account`'s `transport`, with its outcome (`delivered`,
/// `queued`, or the error's kind).
pub fn send(account: &str, transport: &str, outcome: &str) {
    metrics::counter!(
        "flowmail_sends_total",
        "account" => account.to_owned(),
        "transport" => transport.to_owned(),
        "outcome" => outcome.to_owned()
    )
    .increment(1);
}

/// Counts one delivery attempt of the outbox: `sent`, `retry` or `failed`.
pub fn outbox_delivery(account: &str, data_center: &str, outcome: &str) {
    metrics::counter!(
        "flowmail_outbox_deliveries_total",
        "account" => account.to_owned(),
        "data_center" => data_center.to_owned(),
        "outcome" => outcome.to_owned()
    )
    .increment(1);
}

/// Counts one alert.
pub fn alert(kind: &str, account: &str) {
    metrics::counter!(
        "flowmail_alerts_total",
        "kind" => kind.to_owned(),
        "account" => account.to_owned()
    )
    .increment(1);
}

/// The metrics as Prometheus text, with the gauges read from `store` now.
pub fn render(store: &Store, data_centers: &[String]) -> String {
    let Some(handle) = handle() else {
        return String::new();
    };
    let now = crate::unix_now();
    match crate::status::collect(store) {
        Ok(triggers) => {
            for t in triggers {
                let labels = [
                    ("workflow", t.workflow.clone()),
                    ("account", t.account.clone()),
                ];
                metrics::gauge!("flowmail_trigger_lag_seconds", &labels)
                    .set(t.oldest_unhandled_secs.unwrap_or(0) as f64);
                if let Some(age) = t.last_ok_secs_ago {
                    metrics::gauge!("flowmail_trigger_last_ok_age_seconds", &labels)
                        .set(age as f64);
                }
                metrics::gauge!("flowmail_trigger_paused", &labels).set(if t.paused.is_some() {
                    1.0
                } else {
                    0.0
                });
                metrics::gauge!("flowmail_trigger_dead_letters", &labels)
                    .set(t.dead_letters as f64);
                metrics::gauge!("flowmail_trigger_waiting_for_retry", &labels)
                    .set(t.waiting_for_retry as f64);
            }
        }
        Err(e) => tracing::warn!("metrics: reading the triggers failed: {e}"),
    }
    match store.token_expiries() {
        Ok(tokens) => {
            for (account, expires_at, needs_reauth) in tokens {
                let labels = [("account", account)];
                metrics::gauge!("flowmail_token_expires_in_seconds", &labels)
                    .set((expires_at - now) as f64);
                metrics::gauge!("flowmail_token_needs_authorization", &labels)
                    .set(if needs_reauth { 1.0 } else { 0.0 });
            }
        }
        Err(e) => tracing::warn!("metrics: reading the tokens failed: {e}"),
    }
    match store.outbox_counts() {
        Ok(counts) => {
            for c in counts {
                let labels = [
                    ("data_center", c.data_center.clone()),
                    ("status", c.status.clone()),
                ];
                metrics::gauge!("flowmail_outbox_messages", &labels).set(c.count as f64);
                metrics::gauge!("flowmail_outbox_bytes", &labels).set(c.bytes as f64);
                if c.status == "queued" || c.status == "sending" {
                    metrics::gauge!("flowmail_outbox_oldest_age_seconds", &labels)
                        .set((now - c.oldest_created_at) as f64);
                }
            }
        }
        Err(e) => tracing::warn!("metrics: reading the outbox failed: {e}"),
    }
    // SQLite's writers share commits (group commit): the commits against the writes show
    // how much they share.
    if let Some((commits, writes)) = store.shared_commits() {
        metrics::counter!("flowmail_store_commits_total", "database" => "sqlite").absolute(commits);
        metrics::counter!("flowmail_store_writes_total", "database" => "sqlite").absolute(writes);
    }
    match store.nodes() {
        Ok(nodes) => {
            let mut centers: Vec<String> = data_centers.to_vec();
            centers.extend(nodes.iter().map(|n| n.data_center.clone()));
            centers.sort();
            centers.dedup();
            for dc in centers {
                let alive = nodes
                    .iter()
                    .filter(|n| n.data_center == dc && n.alive(now))
                    .count();
                metrics::gauge!("flowmail_nodes_alive", "data_center" => dc).set(alive as f64);
            }
        }
        Err(e) => tracing::warn!("metrics: reading the nodes failed: {e}"),
    }
    handle.render()
}
