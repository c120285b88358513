//! The nodes of a cluster: every `flowmail serve` registers under its name and data
//! center and keeps a heartbeat, so that `flowmail nodes` (and, next, the routing of mail
//! by data center) knows which nodes are alive.

use std::collections::HashMap;

use super::values::{args, get};
use super::{Result, Store, StoreError};

/// A node as registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    pub name: String,
    pub data_center: String,
    pub host: String,
    pub pid: u32,
    pub started_at: i64,
    pub heartbeat_at: i64,
    /// How often the node beats; it counts as dead after three beats missed.
    pub heartbeat_secs: i64,
    /// The mailbox triggers it serves.
    pub triggers: u32,
    /// Set when it stopped cleanly.
    pub stopped_at: Option<i64>,
}

impl NodeRow {
    /// Whether the node is running: not stopped, and heard from within three beats.
    pub fn alive(&self, now: i64) -> bool {
        self.stopped_at.is_none() && now - self.heartbeat_at <= 3 * self.heartbeat_secs.max(1)
    }

    /// `stopped` after a clean stop, `alive`, or `dead` after three missed beats.
    pub fn state(&self, now: i64) -> &'static str {
        if self.stopped_at.is_some() {
            "stopped"
        } else if self.alive(now) {
            "alive"
        } else {
            "dead"
        }
    }
}

/// The plugin a node serves, as `serve` records it at start and at each reload.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodePlugin {
    pub node: String,
    /// The plugin in force: its file and the start of its SHA-256.
    pub plugin: String,
    /// Why the last reload was refused, when it was; the plugin above kept serving.
    pub error: Option<String>,
    /// When the plugin was loaded, or the reload refused.
    pub at: i64,
}

/// Whether process `pid` runs on this machine.
fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

impl Store {
    /// Registers `node` (a restart under the same name takes over its row). Refused while
    /// another live process holds the name.
    pub fn register_node(&self, node: &NodeRow) -> Result<()> {
        let now = crate::unix_now();
        // A holder on this host whose process is gone (killed, say) is dead now, not
        // three beats from now: a restart takes its name over at once.
        let gone_here = self
            .nodes()?
            .into_iter()
            .find(|n| n.name == node.name)
            .is_some_and(|n| n.host == node.host && !process_exists(n.pid));
        // One statement, so that two processes starting under one name cannot both win.
        let written = self.conn.exec(
            "INSERT INTO nodes (name, data_center, host, pid, started_at, heartbeat_at,
                heartbeat_secs, triggers, stopped_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL)
             ON CONFLICT (name) DO UPDATE SET data_center = excluded.data_center,
                host = excluded.host, pid = excluded.pid, started_at = excluded.started_at,
                heartbeat_at = excluded.heartbeat_at, heartbeat_secs = excluded.heartbeat_secs,
                triggers = excluded.triggers, stopped_at = NULL
             WHERE nodes.stopped_at IS NOT NULL
                OR nodes.heartbeat_at < $6 - 3 * nodes.heartbeat_secs
                OR (nodes.host = excluded.host AND nodes.pid = excluded.pid)
                OR $9 = 1",
            args![
                &node.name,
                &node.data_center,
                &node.host,
                node.pid,
                node.started_at,
                now,
                node.heartbeat_secs,
                node.triggers,
                gone_here
            ],
        )?;
        if written == 1 {
            return Ok(());
        }
        let other = self.nodes()?.into_iter().find(|n| n.name == node.name);
        Err(StoreError::NodeTaken {
            name: node.name.clone(),
            host: other.as_ref().map(|o| o.host.clone()).unwrap_or_default(),
            pid: other.map(|o| o.pid).unwrap_or_default(),
        })
    }

    /// Records a heartbeat of the node `name` run by process `pid` on `host`; `false`
    /// when another process has taken the name over since.
    pub fn heartbeat(&self, name: &str, host: &str, pid: u32) -> Result<bool> {
        self.conn
            .exec(
                "UPDATE nodes SET heartbeat_at = $4
                 WHERE name = $1 AND host = $2 AND pid = $3 AND stopped_at IS NULL",
                args![name, host, pid, crate::unix_now()],
            )
            .map(|n| n == 1)
    }

    /// Records that the node stopped cleanly.
    pub fn node_stopped(&self, name: &str, host: &str, pid: u32) -> Result<()> {
        self.conn
            .exec(
                "UPDATE nodes SET stopped_at = $4 WHERE name = $1 AND host = $2 AND pid = $3",
                args![name, host, pid, crate::unix_now()],
            )
            .map(drop)
    }

    /// Records the plugin the node serves and, when a reload was refused, why.
    pub fn set_node_plugin(
        &self,
        name: &str,
        pid: u32,
        plugin: &str,
        error: Option<&str>,
    ) -> Result<()> {
        self.conn
            .exec(
                "UPDATE nodes SET plugin = $3, plugin_error = $4, plugin_at = $5
                 WHERE name = $1 AND pid = $2",
                args![name, pid, plugin, error, crate::unix_now()],
            )
            .map(drop)
    }

    /// The plugin of every running node that recorded one, by node name.
    pub fn node_plugins(&self) -> Result<Vec<NodePlugin>> {
        self.conn.rows(
            "SELECT name, plugin, plugin_error, plugin_at FROM nodes
             WHERE plugin IS NOT NULL AND stopped_at IS NULL ORDER BY name",
            args![],
            |r| {
                Ok(NodePlugin {
                    node: get(r, 0)?,
                    plugin: get(r, 1)?,
                    error: get(r, 2)?,
                    at: get::<Option<i64>>(r, 3)?.unwrap_or_default(),
                })
            },
        )
    }

    /// Every node ever registered, by data center and name.
    pub fn nodes(&self) -> Result<Vec<NodeRow>> {
        self.conn.rows(
            "SELECT name, data_center, host, pid, started_at, heartbeat_at, heartbeat_secs,
                triggers, stopped_at
             FROM nodes ORDER BY data_center, name",
            args![],
            |r| {
                Ok(NodeRow {
                    name: get(r, 0)?,
                    data_center: get(r, 1)?,
                    host: get(r, 2)?,
                    pid: get::<i64>(r, 3)? as u32,
                    started_at: get(r, 4)?,
                    heartbeat_at: get(r, 5)?,
                    heartbeat_secs: get(r, 6)?,
                    triggers: get::<i64>(r, 7)? as u32,
                    stopped_at: get(r, 8)?,
                })
            },
        )
    }

    /// The work each node has in hand, by node name: the mailbox triggers whose lease
    /// it holds, and how many outbox messages it is sending.
    pub fn work_in_flight(&self) -> Result<HashMap<String, (Vec<String>, u64)>> {
        let mut work: HashMap<String, (Vec<String>, u64)> = HashMap::new();
        let held = self.conn.rows(
            "SELECT n.name, t.workflow FROM nodes n JOIN trigger_leases t
               ON t.owner LIKE n.host || ':' || CAST(n.pid AS TEXT) || ':%'
             WHERE t.lease_until >= {now} AND n.stopped_at IS NULL ORDER BY t.workflow",
            args![],
            |r| Ok((get::<String>(r, 0)?, get::<String>(r, 1)?)),
        )?;
        for (node, workflow) in held {
            work.entry(node).or_default().0.push(workflow);
        }
        let sending = self.conn.rows(
            "SELECT lease_node, COUNT(*) FROM outbox
             WHERE status = 'sending' AND lease_node IS NOT NULL GROUP BY lease_node",
            args![],
            |r| Ok((get::<String>(r, 0)?, get::<i64>(r, 1)?)),
        )?;
        for (node, n) in sending {
            work.entry(node).or_default().1 = n.max(0) as u64;
        }
        Ok(work)
    }
}
