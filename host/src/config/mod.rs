//! `flowmail.toml`: named accounts with their transport, mailbox and credentials, the
//! store and the runtime limits. Unknown keys are refused; secrets only by reference.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::bindings::types::Address;
use crate::secret::{Secret, SecretRef};

mod cluster;
mod graph;
mod store;

pub use self::cluster::{NodeConfig, OutboxConfig, host_name};
use self::graph::check_graph;
pub use self::graph::{GraphConfig, GraphMailboxConfig};
pub use self::store::StoreConfig;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub runtime: RuntimeConfig,
    #[serde(default)]
    pub accounts: BTreeMap<String, AccountConfig>,
    /// The settings page.
    #[serde(default)]
    pub web: WebConfig,
    /// Where flowmail mails its own alerts.
    #[serde(default)]
    pub alerts: Option<AlertsConfig>,
    /// The data centers mail may leave from, offered on the settings page.
    #[serde(default = "default_data_centers")]
    pub data_centers: Vec<String>,
    /// This process as a node of a cluster.
    #[serde(default)]
    pub node: NodeConfig,
    /// The delivery workers of the durable outbox.
    #[serde(default)]
    pub outbox: OutboxConfig,
    /// The folder relative paths are resolved against: the config file's folder.
    #[serde(skip)]
    pub base: PathBuf,
}

/// Alerts by mail: flowmail sends its own alerts through `account` to `to`, at most one
/// mail an hour per kind of alert and account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// The account to send through (from flowmail.toml or the settings page).
    pub account: String,
    /// The recipients.
    pub to: Vec<String>,
}

/// The settings page, served by `flowmail serve`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// Where to listen (default `127.0.0.1:8025`).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// How long a login lasts, in hours (default 12).
    #[serde(default = "default_session_hours")]
    pub session_hours: u64,
    /// A PEM CA trusted by the accounts made on the page (default: the public roots), for
    /// mail servers with certificates of an internal CA.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Set when a TLS proxy serves the page: cookies are then marked `Secure`.
    #[serde(default)]
    pub behind_tls: bool,
}

fn default_listen() -> String {
    "127.0.0.1:8025".into()
}
fn default_session_hours() -> u64 {
    12
}
fn default_data_centers() -> Vec<String> {
    vec!["default".into()]
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            session_hours: default_session_hours(),
            ca_file: None,
            behind_tls: false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Wall-clock limit of one plugin call, in milliseconds.
    #[serde(default = "default_timeout")]
    pub step_timeout_ms: u64,
    /// Linear-memory limit of the plugin, in MiB.
    #[serde(default = "default_memory")]
    pub memory_limit_mb: u64,
    /// Where compiled components are cached; `""` turns the cache off.
    #[serde(default = "default_cache")]
    pub cache_dir: PathBuf,
    /// How many plugin instances may live at once (one per step under way): the size of
    /// the instance pool. A step that finds every one taken waits for one.
    #[serde(default = "default_instances")]
    pub max_instances: u32,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            step_timeout_ms: default_timeout(),
            memory_limit_mb: default_memory(),
            cache_dir: default_cache(),
            max_instances: default_instances(),
        }
    }
}

fn default_instances() -> u32 {
    128
}

fn default_timeout() -> u64 {
    60_000
}
fn default_memory() -> u64 {
    256
}
fn default_cache() -> PathBuf {
    "var/cache".into()
}

/// One named account.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// The default From address, `Name <addr>` or `addr`.
    pub from: Option<String>,
    /// The largest message this account sends, in bytes (default 25 MiB).
    #[serde(default = "default_max_message")]
    pub max_message_bytes: u64,
    /// The largest single attachment, in bytes (default 10 MiB).
    #[serde(default = "default_max_attachment")]
    pub max_attachment_bytes: u64,
    pub transport: Option<TransportConfig>,
    pub mailbox: Option<MailboxConfig>,
    pub auth: Option<AuthConfig>,
    /// `direct` (the default): a step's send goes to the server at once and its receipt
    /// says what the server said. `queued`: the message is stored in the outbox and a
    /// delivery worker of the account's data center sends it, retrying.
    #[serde(default)]
    pub delivery: Delivery,
    /// The data center whose nodes send this account's mail (default: the first of
    /// `data_centers`).
    #[serde(default)]
    pub data_center: Option<String>,
}

/// How an account's sends reach its server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    #[default]
    Direct,
    Queued,
}

fn default_max_message() -> u64 {
    25 << 20
}
fn default_max_attachment() -> u64 {
    10 << 20
}

/// Where the account's outgoing mail goes.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum TransportConfig {
    /// Each message is written as an `.eml` file into `dir`.
    Outbox { dir: PathBuf },
    /// An SMTP server.
    Smtp(ServerConfig),
    /// Microsoft Graph: `sendMail` as `user`, with the account's OAuth2 credentials.
    Graph(GraphConfig),
}

/// Where the account's incoming mail is read.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum MailboxConfig {
    /// A Maildir folder with `new/`, `cur/` and `tmp/`.
    Maildir { path: PathBuf },
    /// A folder on an IMAP server; the account's `auth` logs in.
    Imap(ServerConfig),
    /// A mail folder of a Microsoft Graph mailbox, read with the account's OAuth2
    /// credentials.
    Graph(GraphMailboxConfig),
}

/// How the account authenticates to its servers.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum AuthConfig {
    /// No authentication.
    None,
    /// A username and a password given by reference.
    Basic {
        username: String,
        password: SecretRef,
        /// `"plain"` or `"login"`; by default PLAIN, else LOGIN, as the server offers.
        #[serde(default)]
        mechanism: Option<String>,
    },
    /// A username and an OAuth2 access token, sent as XOAUTH2. The token is given by
    /// reference and read anew for each session, so a refresher can replace it.
    #[serde(rename = "oauth2")]
    OAuth2 {
        username: String,
        /// A token kept up to date elsewhere, instead of flowmail's token store.
        #[serde(default)]
        access_token: Option<SecretRef>,
        #[serde(default)]
        client_id: Option<String>,
        #[serde(default)]
        client_secret: Option<SecretRef>,
        /// The authorization endpoint; without it, the client-credentials grant is used.
        #[serde(default)]
        auth_url: Option<String>,
        #[serde(default)]
        token_url: Option<String>,
        /// Where the provider sends the browser back, served by `flowmail authorize`.
        #[serde(default)]
        redirect_url: Option<String>,
        #[serde(default)]
        scopes: Vec<String>,
        /// Refresh this many seconds before the access token expires (default 300).
        #[serde(default = "default_margin")]
        refresh_margin_secs: u64,
        /// Refresh an unused refresh token after this many days (default 30), well
        /// before providers let it lapse (Microsoft: 90 days).
        #[serde(default = "default_keep_alive")]
        keep_alive_days: u64,
    },
}

fn default_margin() -> u64 {
    300
}
fn default_keep_alive() -> u64 {
    30
}

/// Credentials resolved from their references, held by the host only.
#[derive(Debug)]
pub enum Credentials {
    None,
    Basic { username: String, password: Secret },
    OAuth2 { username: String },
}

impl Config {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let config = Self::read(path)?;
        config.check()?;
        Ok(config)
    }

    /// Reads the file at `path` without checking the accounts or resolving a secret, for
    /// commands that only need the store (`flowmail status`).
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the config {}", path.display()))?;
        let mut config: Config =
            toml::from_str(&text).with_context(|| format!("in the config {}", path.display()))?;
        config.base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(config)
    }

    fn check(&self) -> anyhow::Result<()> {
        if !self.data_centers.contains(&self.node_data_center()) {
            bail!(
                "node.data_center: `{}` is not one of data_centers ({}); add it to data_centers or fix the name",
                self.node_data_center(),
                self.data_centers.join(", ")
            );
        }
        if self.node.heartbeat_secs == 0 {
            bail!("node.heartbeat_secs must be at least 1");
        }
        if self.node.lease_secs < 3 {
            bail!(
                "node.lease_secs must be at least 3 (it is renewed every third of it); the default is 15"
            );
        }
        if self.runtime.step_timeout_ms == 0
            || self.runtime.memory_limit_mb == 0
            || self.runtime.max_instances == 0
        {
            bail!(
                "runtime.step_timeout_ms, runtime.memory_limit_mb and runtime.max_instances must be above zero"
            );
        }
        for (name, a) in &self.accounts {
            if let Some(dc) = &a.data_center
                && !self.data_centers.contains(dc)
            {
                bail!(
                    "accounts.{name}.data_center: `{dc}` is not one of data_centers ({}); add it to data_centers or fix the name",
                    self.data_centers.join(", ")
                );
            }
            if a.delivery == Delivery::Queued && a.transport.is_none() {
                bail!(
                    "accounts.{name}.delivery: queued delivery needs a transport to deliver through"
                );
            }
            if let Some(from) = &a.from
                && !parse_address(from)?.email.contains('@')
            {
                bail!(
                    "accounts.{name}.from: `{from}` is not an address like `Name <name@example.com>`"
                );
            }
            if let (Some(AuthConfig::OAuth2 { username, .. }), Some(from)) = (&a.auth, &a.from)
                && !parse_address(from)?.email.eq_ignore_ascii_case(username)
            {
                bail!(
                    "accounts.{name}.from: an OAuth2 account may only send as its own user; set from to {username}"
                );
            }
            if let Some(TransportConfig::Smtp(_)) = &a.transport {
                self.smtp_settings(name)?;
            }
            if let Some(TransportConfig::Graph(g)) = &a.transport {
                check_graph(name, "transport", g, a.auth.as_ref())?;
            }
            if let Some(MailboxConfig::Graph(g)) = &a.mailbox {
                check_graph(name, "mailbox", &g.api(), a.auth.as_ref())?;
            }
            if let Some(MailboxConfig::Imap(_)) = &a.mailbox {
                self.imap_settings(name)?;
            }
            self.oauth_settings(name)?;
            if a.transport.is_none() && a.mailbox.is_none() {
                bail!(
                    "accounts.{name} has neither a transport nor a mailbox; give it at least one"
                );
            }
        }
        Ok(())
    }

    /// The data center this node runs in.
    pub fn node_data_center(&self) -> String {
        self.node
            .data_center
            .clone()
            .or_else(|| self.data_centers.first().cloned())
            .unwrap_or_else(|| "default".into())
    }

    /// The data center whose nodes send `account`'s mail.
    pub fn account_data_center(&self, account: &str) -> String {
        self.accounts
            .get(account)
            .and_then(|a| a.data_center.clone())
            .or_else(|| self.data_centers.first().cloned())
            .unwrap_or_else(|| "default".into())
    }

    /// Resolves a path from the config against its folder.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        self.base.join(path)
    }

    /// The store's path.
    pub fn store_path(&self) -> PathBuf {
        self.resolve(&self.store.path)
    }

    /// The compiled-component cache folder, if enabled.
    pub fn cache_dir(&self) -> Option<PathBuf> {
        (!self.runtime.cache_dir.as_os_str().is_empty())
            .then(|| self.resolve(&self.runtime.cache_dir))
    }

    /// Resolves `account`'s credentials from their references.
    pub fn credentials(&self, account: &str) -> anyhow::Result<Credentials> {
        let a = self
            .accounts
            .get(account)
            .with_context(|| format!("no account `{account}`"))?;
        Ok(match &a.auth {
            None | Some(AuthConfig::None) => Credentials::None,
            Some(AuthConfig::Basic {
                username, password, ..
            }) => Credentials::Basic {
                username: username.clone(),
                password: password
                    .resolve(&self.base)
                    .map_err(anyhow::Error::msg)
                    .with_context(|| format!("accounts.{account}.auth.password"))?,
            },
            Some(AuthConfig::OAuth2 { username, .. }) => Credentials::OAuth2 {
                username: username.clone(),
            },
        })
    }
}

/// Splits `Name <addr>` or `addr`; the plugin validates the address itself.
pub fn parse_address(s: &str) -> anyhow::Result<Address> {
    let s = s.trim();
    if s.contains(['\r', '\n']) {
        bail!("`{}` contains a line break", s.escape_debug());
    }
    let (name, email) = match (s.rfind('<'), s.ends_with('>')) {
        (Some(open), true) => {
            let name = s[..open].trim().trim_matches('"').trim();
            (
                Some(name).filter(|n| !n.is_empty()).map(str::to_owned),
                s[open + 1..s.len() - 1].trim().to_owned(),
            )
        }
        _ => (None, s.to_owned()),
    };
    Ok(Address { name, email })
}

mod oauth;
mod smtp;

pub use self::smtp::ServerConfig;

#[cfg(test)]
mod tests;
