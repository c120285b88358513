//! This process as a node: `serve` registers it under its name and data center and keeps
//! its heartbeat; `flowmail nodes` lists the nodes that share the store.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use flowmail::config::Config;
use flowmail::store::{NodeRow, Store};

use super::out;

/// A node registered by this process.
pub struct Registered {
    store: Arc<Store>,
    name: String,
    host: String,
    pid: u32,
    every: Duration,
}

/// Registers this process as the node of `config`, serving `triggers` mailbox triggers.
pub fn register(
    store: &Arc<Store>,
    config: &Config,
    triggers: usize,
) -> anyhow::Result<Registered> {
    let node = NodeRow {
        name: config.node.name(),
        data_center: config.node_data_center(),
        host: flowmail::config::host_name(),
        pid: std::process::id(),
        started_at: flowmail::unix_now(),
        heartbeat_at: flowmail::unix_now(),
        heartbeat_secs: config.node.heartbeat_secs as i64,
        triggers: triggers as u32,
        stopped_at: None,
    };
    store.register_node(&node)?;
    eprintln!(
        "node `{}` in data center `{}` ({} trigger(s))",
        node.name, node.data_center, node.triggers
    );
    Ok(Registered {
        store: store.clone(),
        name: node.name,
        host: node.host,
        pid: node.pid,
        every: Duration::from_secs(config.node.heartbeat_secs),
    })
}

impl Registered {
    /// Beats until dropped. A store that fails for a while is logged, not fatal: the
    /// node's work goes on, and other nodes see it as dead until it beats again.
    pub async fn beat(&self) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let store = self.store.clone();
            let (name, host, pid) = (self.name.clone(), self.host.clone(), self.pid);
            let beat =
                tokio::task::spawn_blocking(move || store.heartbeat(&name, &host, pid)).await;
            match beat {
                Ok(beat) => self.beaten(beat),
                Err(e) => tracing::warn!("node `{}`: the heartbeat failed: {e}", self.name),
            }
        }
    }

    /// One beat now, on this thread. `serve` beats once the plugin is compiled, which can
    /// take longer than three beats, so that the node is not shown dead as its first
    /// steps run.
    pub fn beat_now(&self) {
        self.beaten(self.store.heartbeat(&self.name, &self.host, self.pid));
    }

    fn beaten(&self, beat: Result<bool, flowmail::store::StoreError>) {
        match beat {
            Ok(true) => {}
            Ok(false) => tracing::error!(
                "node `{}`: another process took over the node's name; give each node its own [node] name",
                self.name
            ),
            Err(e) => tracing::warn!("node `{}`: the heartbeat failed: {e}", self.name),
        }
    }

    /// Records a clean stop.
    pub fn stopped(&self) {
        if let Err(e) = self.store.node_stopped(&self.name, &self.host, self.pid) {
            tracing::warn!("node `{}`: recording the stop failed: {e}", self.name);
        }
    }
}

/// `flowmail nodes`: every node of the store, alive or not, by data center.
pub fn list(config: &Path, json: bool) -> anyhow::Result<()> {
    let config = Config::read(config)?;
    let store = config.open_store()?;
    let now = flowmail::unix_now();
    let nodes = store.nodes()?;
    let work = store.work_in_flight()?;
    let none = (Vec::new(), 0);
    if json {
        let rows: Vec<serde_json::Value> = nodes
            .iter()
            .map(|n| {
                serde_json::json!({
                    "name": n.name,
                    "data_center": n.data_center,
                    "alive": n.alive(now),
                    "state": n.state(now),
                    "host": n.host,
                    "pid": n.pid,
                    "started_at": n.started_at,
                    "heartbeat_at": n.heartbeat_at,
                    "heartbeat_age_secs": now - n.heartbeat_at,
                    "triggers": n.triggers,
                    "serving": work.get(&n.name).unwrap_or(&none).0,
                    "sending": work.get(&n.name).unwrap_or(&none).1,
                    "stopped_at": n.stopped_at,
                })
            })
            .collect();
        return out(&format!("{}\n", serde_json::to_string_pretty(&rows)?));
    }
    if nodes.is_empty() {
        return out("no node has registered; `flowmail serve` registers one\n");
    }
    let mut text = format!(
        "{:<20} {:<12} {:<8} {:>14} {:>8} {:>8} {:>8}  {}\n",
        "NODE",
        "DATA CENTER",
        "STATE",
        "LAST HEARTBEAT",
        "TRIGGERS",
        "SERVING",
        "SENDING",
        "PROCESS"
    );
    for n in &nodes {
        let (serving, sending) = work.get(&n.name).unwrap_or(&none);
        text.push_str(&format!(
            "{:<20} {:<12} {:<8} {:>14} {:>8} {:>8} {:>8}  {}@{}\n",
            n.name,
            n.data_center,
            n.state(now),
            format!("{}s ago", now - n.heartbeat_at),
            n.triggers,
            serving.len(),
            sending,
            n.pid,
            n.host
        ));
    }
    out(&text)
}
