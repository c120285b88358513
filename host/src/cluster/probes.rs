//! Test Mail and the validation mail of Validate and Save leave from the account's data
//! center, as its mail does: only there is its server reachable through the firewalls.
//! A process of another data center asks a live node of that one through the store and
//! waits for its report; with no live node there, it says so with the last heartbeat
//! seen.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::caps::transport::smtp::test_mail::Report;
use crate::store::{NodeRow, ProbeJob, Store};

/// How long a probe waits for a node to take it.
pub const CLAIM_WITHIN: Duration = Duration::from_secs(15);
/// How long a taken probe may take: the stages' own timeouts end well before.
pub const FINISH_WITHIN: Duration = Duration::from_secs(120);

/// Where a test runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// In this process: the account is of this node's data center.
    Here,
    /// On a node of the account's data center, which has at least one alive.
    There(String),
}

/// Where a test of an account of `data_center` runs, seen from a process of node data
/// center `here`; an error naming the last heartbeat when no node there is alive.
pub fn route(store: &Store, here: &str, data_center: &str) -> anyhow::Result<Route> {
    if here == data_center {
        return Ok(Route::Here);
    }
    match unserved(store, data_center)? {
        None => Ok(Route::There(data_center.to_owned())),
        Some(why) => bail!("{why}"),
    }
}

/// Why nothing leaves from `data_center` now (no node of it alive, with the last
/// heartbeat seen), or `None` while a node of it is alive.
pub fn unserved(store: &Store, data_center: &str) -> anyhow::Result<Option<String>> {
    let now = crate::unix_now();
    let nodes: Vec<NodeRow> = store
        .nodes()?
        .into_iter()
        .filter(|n| n.data_center == data_center)
        .collect();
    Ok((!nodes.iter().any(|n| n.alive(now))).then(|| no_live_node(data_center, &nodes, now)))
}

/// Why nothing can leave from `data_center` now, with the last heartbeat seen there.
pub fn no_live_node(data_center: &str, nodes: &[NodeRow], now: i64) -> String {
    let fix = format!(
        "mail of its accounts leaves only from there, so start a node of it (`flowmail serve` with [node] data_center = \"{data_center}\")"
    );
    match nodes.iter().max_by_key(|n| n.heartbeat_at) {
        Some(n) => format!(
            "no node of data center `{data_center}` is alive: the last heartbeat came from `{}` {} ago{}; {fix}",
            n.name,
            ago(now - n.heartbeat_at),
            if n.stopped_at.is_some() {
                ", and it stopped"
            } else {
                ""
            }
        ),
        None => format!("no node of data center `{data_center}` has ever run; {fix}"),
    }
}

fn ago(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// Asks a node of `data_center` to send the test of `account` to `to` (with the settings
/// page's form and its sealed secrets when the test is of unsaved settings) and waits
/// for its report.
pub async fn run_there(
    store: &Arc<Store>,
    data_center: &str,
    account: &str,
    to: &str,
    page: Option<(&str, &str)>,
) -> anyhow::Result<Report> {
    let id = store.put_probe(data_center, account, to, page)?;
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Some((status, report)) = store.probe(id)? else {
            bail!("the test request {id} vanished from the store; try again");
        };
        match (status.as_str(), report) {
            ("done", Some(report)) => return Ok(serde_json::from_str(&report)?),
            // Withdrawn only if still waiting: a node may take it at the last moment.
            ("queued", _) if started.elapsed() > CLAIM_WITHIN && store.cancel_probe(id)? => {
                bail!(
                    "no node of data center `{data_center}` took the test within {}s, though one beat recently; see `flowmail nodes` and the nodes' logs",
                    CLAIM_WITHIN.as_secs()
                );
            }
            ("running", _) if started.elapsed() > CLAIM_WITHIN + FINISH_WITHIN => bail!(
                "a node of data center `{data_center}` took the test but sent no report within {}s; see its log",
                FINISH_WITHIN.as_secs()
            ),
            _ => {}
        }
    }
}

/// Runs the probes of `data_center` on node `node` until `stop`: `send` runs each, and
/// its report goes back to the asker.
pub async fn serve<F, Fut>(
    store: Arc<Store>,
    node: &str,
    data_center: &str,
    send: F,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    F: Fn(ProbeJob) -> Fut,
    Fut: Future<Output = anyhow::Result<Report>>,
{
    let mut pruned = Instant::now() - Duration::from_secs(3600);
    // Requests come from other data centers' nodes, through the store; the asker waits,
    // so an idle node looks at least once a second.
    let mut backoff = super::IdleBackoff::new(Duration::from_secs(1));
    loop {
        if *stop.borrow() {
            return;
        }
        if pruned.elapsed() >= Duration::from_secs(3600) {
            pruned = Instant::now();
            if let Err(e) = store.prune_probes(86_400) {
                tracing::warn!("forgetting old test requests failed: {e}");
            }
        }
        match store.claim_probe(data_center, node, CLAIM_WITHIN.as_secs() as i64) {
            Ok(Some(job)) => {
                backoff.worked();
                let (id, account) = (job.id, job.account.clone());
                tracing::info!("sending a test mail of `{account}` for another data center");
                let report = match send(job).await {
                    Ok(mut report) => {
                        report.node = Some(node.to_owned());
                        report.data_center = Some(data_center.to_owned());
                        report
                    }
                    Err(e) => failed(&account, node, data_center, &format!("{e:#}")),
                };
                let written = serde_json::to_string(&report)
                    .map_err(anyhow::Error::from)
                    .and_then(|json| Ok(store.finish_probe(id, &json)?));
                if let Err(e) = written {
                    tracing::warn!("the report of test request {id} was not recorded: {e:#}");
                }
            }
            Ok(None) => {
                tokio::select! {
                    () = tokio::time::sleep(backoff.idle()) => {}
                    _ = stop.changed() => {}
                }
            }
            Err(e) => {
                tracing::warn!("taking a test request failed: {e}; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// The report of a test that could not even start on this node.
fn failed(account: &str, node: &str, data_center: &str, why: &str) -> Report {
    Report {
        account: account.to_owned(),
        server: String::new(),
        ok: false,
        stages: vec![crate::caps::transport::smtp::test_mail::StageReport {
            stage: crate::caps::transport::smtp::session::Stage::Dns,
            title: "settings".into(),
            ok: false,
            millis: 0.0,
            detail: why.to_owned(),
        }],
        error_kind: Some("invalid-input".into()),
        queue_id: None,
        node: Some(node.to_owned()),
        data_center: Some(data_center.to_owned()),
    }
}
