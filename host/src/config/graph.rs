//! Microsoft Graph in the config: a transport that sends as a mailbox, a mail folder to
//! read, and their checks.

use std::path::PathBuf;

use anyhow::bail;
use serde::Deserialize;

use super::AuthConfig;

/// A Microsoft Graph mailbox to send from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphConfig {
    /// The tenant (`contoso.onmicrosoft.com` or its GUID); it fills the token endpoint.
    pub tenant: String,
    /// The mailbox to send as; the From address must be this user.
    pub user: String,
    /// The Graph API (default `https://graph.microsoft.com/v1.0`; other clouds and tests
    /// override it).
    #[serde(default = "default_graph_url")]
    pub graph_url: String,
    /// A PEM CA to trust instead of the public roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Limit of each request, in seconds.
    #[serde(default = "default_graph_timeout")]
    pub timeout_secs: u64,
    /// The longest a send waits out throttling (`Retry-After`) before it fails as
    /// transient, in seconds.
    #[serde(default = "default_graph_wait")]
    pub max_wait_secs: u64,
}

fn default_graph_url() -> String {
    "https://graph.microsoft.com/v1.0".into()
}
fn default_graph_timeout() -> u64 {
    30
}
fn default_graph_wait() -> u64 {
    60
}

impl GraphConfig {
    /// The tenant's token endpoint.
    pub fn token_url(&self) -> String {
        format!(
            "https://login.microsoftonline.com/{}/oauth2/v2.0/token",
            self.tenant
        )
    }
}

/// A Microsoft Graph mail folder to read.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphMailboxConfig {
    /// The tenant (`contoso.onmicrosoft.com` or its GUID); it fills the token endpoint.
    pub tenant: String,
    /// The mailbox to read.
    pub user: String,
    /// The folder: a well-known name (`inbox`, `archive`, ...), a display name, or an id.
    #[serde(default = "default_graph_folder")]
    pub folder: String,
    /// The Graph API (default `https://graph.microsoft.com/v1.0`).
    #[serde(default = "default_graph_url")]
    pub graph_url: String,
    /// A PEM CA to trust instead of the public roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Limit of each request, in seconds.
    #[serde(default = "default_graph_timeout")]
    pub timeout_secs: u64,
    /// The longest one read waits out throttling (`Retry-After`) before it fails as
    /// transient, in seconds.
    #[serde(default = "default_graph_wait")]
    pub max_wait_secs: u64,
}

fn default_graph_folder() -> String {
    "inbox".into()
}

impl GraphMailboxConfig {
    /// The API settings, as a transport of the same mailbox would have them.
    pub fn api(&self) -> GraphConfig {
        GraphConfig {
            tenant: self.tenant.clone(),
            user: self.user.clone(),
            graph_url: self.graph_url.clone(),
            ca_file: self.ca_file.clone(),
            timeout_secs: self.timeout_secs,
            max_wait_secs: self.max_wait_secs,
        }
    }
}

/// The checks of a Graph transport or mailbox (`part`) of account `name`.
pub(super) fn check_graph(
    name: &str,
    part: &str,
    g: &GraphConfig,
    auth: Option<&AuthConfig>,
) -> anyhow::Result<()> {
    match auth {
        Some(AuthConfig::OAuth2 { username, .. }) if username.eq_ignore_ascii_case(&g.user) => {}
        Some(AuthConfig::OAuth2 { username, .. }) => bail!(
            "accounts.{name}.{part}.user: `{}` differs from auth.username `{username}`; Graph works as the user the token is for",
            g.user
        ),
        _ => bail!(
            "accounts.{name}.auth: a Graph {part} needs kind = \"oauth2\" with client_id and client_secret"
        ),
    }
    if !g.graph_url.starts_with("https://")
        && !g.graph_url.starts_with("http://127.0.0.1")
        && !g.graph_url.starts_with("http://localhost")
    {
        bail!("accounts.{name}.{part}.graph_url: use https:// (plain http only on this machine)");
    }
    Ok(())
}
