//! The cluster's part of the config: this process as a node, and the outbox's delivery
//! workers.

use serde::Deserialize;

/// The delivery workers of `serve`: how many, and how they retry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// Messages delivered at once by this node (default 4).
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// The first retry's wait in seconds; each later one doubles, with ±25 % jitter, up
    /// to an hour (default 30).
    #[serde(default = "default_retry_base")]
    pub retry_base_secs: u64,
    /// How long transient failures are retried before the message fails, in hours
    /// (default 48, as mail servers do).
    #[serde(default = "default_give_up")]
    pub give_up_hours: u64,
    /// How long the record of a sent message (its node, reply and Message-ID; not its
    /// bytes, dropped once it is sent) is kept, in days (default 30).
    #[serde(default = "default_keep_sent")]
    pub keep_sent_days: u64,
}

fn default_workers() -> usize {
    4
}
fn default_retry_base() -> u64 {
    30
}
fn default_give_up() -> u64 {
    48
}
fn default_keep_sent() -> u64 {
    30
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            workers: default_workers(),
            retry_base_secs: default_retry_base(),
            give_up_hours: default_give_up(),
            keep_sent_days: default_keep_sent(),
        }
    }
}

/// This process as a node: its name and the data center it runs in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Unique among the nodes that share a store (default: the host name).
    #[serde(default)]
    pub name: Option<String>,
    /// One of `data_centers` (default: the first of them).
    #[serde(default)]
    pub data_center: Option<String>,
    /// How often `serve` records that it is alive; three beats missed count as dead.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_secs: u64,
    /// How long this node's claim on a mailbox trigger lasts without renewal, on a shared
    /// store (renewed every third of it): a dead node's triggers move within this, and a
    /// node paused longer loses them.
    #[serde(default = "default_lease")]
    pub lease_secs: u64,
}

fn default_heartbeat() -> u64 {
    5
}

fn default_lease() -> u64 {
    15
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            name: None,
            data_center: None,
            heartbeat_secs: default_heartbeat(),
            lease_secs: default_lease(),
        }
    }
}

impl NodeConfig {
    /// The node's name: as configured, or the machine's host name.
    pub fn name(&self) -> String {
        self.name.clone().unwrap_or_else(host_name)
    }
}

/// The machine's host name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "flowmail".into())
}
