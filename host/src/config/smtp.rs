//! A mail server's connection settings (SMTP or IMAP), checked into the network layer's
//! [`Settings`].

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use super::{Config, MailboxConfig, TransportConfig};
use crate::net::{MinTls, Security, Settings, tls_config};

/// A mail server's connection settings (the settings page's fields), for SMTP and IMAP.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// The host name.
    pub host: String,
    /// The port; by default 465 (SMTP) or 993 (IMAP) with `ssl`, else 587 or 143.
    #[serde(default)]
    pub port: Option<u16>,
    /// Enable SSL: implicit TLS. Off means STARTTLS, required.
    #[serde(default)]
    pub ssl: bool,
    /// `"required"` (the default) or `"none"` for plaintext, which logs a warning.
    #[serde(default = "default_tls")]
    pub tls: String,
    /// The minimum TLS version: `"1.2"` (the default) or `"1.3"`.
    #[serde(default = "default_min_tls")]
    pub min_tls: String,
    /// A PEM file of the CA to trust instead of the public roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Limit for each network step, in seconds.
    #[serde(default = "default_smtp_timeout")]
    pub timeout_secs: u64,
    /// The name given in EHLO (SMTP only).
    #[serde(default)]
    pub hello_name: Option<String>,
    /// SMTP only: the most sessions open to the server at once for this account (1 to
    /// 100); a send that finds them all busy waits for one.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// The folder to read (IMAP only).
    #[serde(default = "default_folder")]
    pub folder: String,
    /// IMAP only: log in as this user with `password` (LOGIN) instead of the account's
    /// `auth`, as the settings page's Email box does.
    #[serde(default)]
    pub username: Option<String>,
    /// IMAP only: the password of `username`, by reference.
    #[serde(default)]
    pub password: Option<crate::secret::SecretRef>,
}

fn default_folder() -> String {
    "INBOX".into()
}

fn default_tls() -> String {
    "required".into()
}
fn default_min_tls() -> String {
    "1.2".into()
}
fn default_smtp_timeout() -> u64 {
    30
}
fn default_max_connections() -> usize {
    8
}

impl Config {
    /// The SMTP connection settings of `account`, checked.
    pub fn smtp_settings(&self, account: &str) -> anyhow::Result<Settings> {
        let a = self
            .accounts
            .get(account)
            .with_context(|| format!("no account `{account}` in the config"))?;
        let Some(TransportConfig::Smtp(smtp)) = &a.transport else {
            bail!("account `{account}` has no SMTP transport");
        };
        self.connection(&format!("accounts.{account}.transport"), smtp, (465, 587))
    }

    /// How many SMTP sessions `account` may hold open at once, checked.
    pub fn smtp_max_connections(&self, account: &str) -> anyhow::Result<usize> {
        let Some(TransportConfig::Smtp(smtp)) = self
            .accounts
            .get(account)
            .and_then(|a| a.transport.as_ref())
        else {
            bail!("account `{account}` has no SMTP transport");
        };
        match smtp.max_connections {
            1..=100 => Ok(smtp.max_connections),
            n => bail!(
                "accounts.{account}.transport.max_connections: {n} is out of range; use 1 to 100 \
                 (servers limit the sessions of one client, postfix to 50 by default)"
            ),
        }
    }

    /// The IMAP connection settings of `account`, checked, and its folder.
    pub fn imap_settings(&self, account: &str) -> anyhow::Result<(Settings, String)> {
        let a = self
            .accounts
            .get(account)
            .with_context(|| format!("no account `{account}` in the config"))?;
        let Some(MailboxConfig::Imap(imap)) = &a.mailbox else {
            bail!("account `{account}` has no IMAP mailbox");
        };
        let settings = self.connection(&format!("accounts.{account}.mailbox"), imap, (993, 143))?;
        Ok((settings, imap.folder.clone()))
    }

    /// Checks a server's connection settings; `field` names them in errors, `ports` are
    /// the defaults with and without `ssl`.
    fn connection(
        &self,
        field: &str,
        c: &ServerConfig,
        ports: (u16, u16),
    ) -> anyhow::Result<Settings> {
        let field = |f: &str| format!("{field}.{f}");
        let min = match c.min_tls.as_str() {
            "1.2" => MinTls::V12,
            "1.3" => MinTls::V13,
            "1.0" | "1.1" => bail!(
                "{}: TLS {} is not allowed: it is broken and deprecated (RFC 8996), and no supported \
                 server needs it. Use \"1.2\" or \"1.3\"",
                field("min_tls"),
                c.min_tls
            ),
            other => bail!(
                "{}: `{other}` is not a TLS version; use \"1.2\" or \"1.3\"",
                field("min_tls")
            ),
        };
        let security = match (c.ssl, c.tls.as_str()) {
            (true, "required") => Security::Implicit,
            (false, "required") => Security::StartTls,
            (false, "none") => {
                tracing::warn!(
                    "{} = \"none\": plaintext; use it only on a trusted network",
                    field("tls")
                );
                Security::None
            }
            (true, "none") => bail!(
                "{}: ssl = true and tls = \"none\" contradict each other",
                field("tls")
            ),
            (_, other) => bail!(
                "{}: `{other}` is not a TLS policy; use \"required\" or \"none\"",
                field("tls")
            ),
        };
        let ca = match &c.ca_file {
            Some(path) => Some(std::fs::read(self.resolve(path)).with_context(|| {
                format!(
                    "{}: cannot read {}",
                    field("ca_file"),
                    self.resolve(path).display()
                )
            })?),
            None => None,
        };
        let tls = tls_config(ca.as_deref(), min)
            .map_err(|e| anyhow::anyhow!("{}: {e}", field("ca_file")))?;
        Ok(Settings {
            host: c.host.clone(),
            port: c.port.unwrap_or(if c.ssl { ports.0 } else { ports.1 }),
            security,
            tls,
            timeout: Duration::from_secs(c.timeout_secs.max(1)),
            hello: c.hello_name.clone().unwrap_or_else(|| "localhost".into()),
        })
    }
}
