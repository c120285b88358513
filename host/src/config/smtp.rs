//! The SMTP part of an account: its settings, checked, and the relay built from them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use lettre::transport::smtp::authentication::Mechanism;
use serde::Deserialize;

use super::{AuthConfig, Config, Credentials, TokenManagers, TransportConfig};
use crate::caps::smtp::{Auth, MinTls, Relay, Security, Settings, tls_config};
use crate::caps::tokens::ReferencedToken;

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
    /// The folder to read (IMAP only).
    #[serde(default = "default_folder")]
    pub folder: String,
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

impl Config {
    /// The SMTP relay of `account`, for accounts whose credentials need no token store.
    pub fn relay(&self, account: &str) -> anyhow::Result<Relay> {
        self.relay_with(account, &TokenManagers::new())
    }

    /// The SMTP relay of `account`, taking OAuth2 tokens from `managers`.
    pub fn relay_with(&self, account: &str, managers: &TokenManagers) -> anyhow::Result<Relay> {
        let settings = self.smtp_settings(account)?;
        let a = self
            .accounts
            .get(account)
            .with_context(|| format!("no account `{account}` in the config"))?;
        let auth = match (&a.auth, self.credentials(account)?) {
            (_, Credentials::None) => Auth::None,
            (
                Some(AuthConfig::Basic { mechanism, .. }),
                Credentials::Basic { username, password },
            ) => {
                let mechanisms = match mechanism.as_deref() {
                    None => vec![Mechanism::Plain, Mechanism::Login],
                    Some("plain") => vec![Mechanism::Plain],
                    Some("login") => vec![Mechanism::Login],
                    Some(other) => bail!(
                        "accounts.{account}.auth.mechanism: `{other}` is not supported; use \"plain\" or \"login\""
                    ),
                };
                Auth::Basic {
                    username,
                    password,
                    mechanisms,
                }
            }
            (
                Some(AuthConfig::OAuth2 {
                    access_token: Some(reference),
                    ..
                }),
                Credentials::OAuth2 { username },
            ) => Auth::OAuth2 {
                username,
                token: Arc::new(ReferencedToken::new(
                    reference.clone(),
                    self.base.clone(),
                    account,
                )),
            },
            (Some(AuthConfig::OAuth2 { .. }), Credentials::OAuth2 { username }) => {
                let manager = managers
                    .get(account)
                    .with_context(|| format!("account `{account}` takes its tokens from the token store, which is not open"))?;
                Auth::OAuth2 {
                    username,
                    token: manager.clone(),
                }
            }
            _ => Auth::None,
        };
        Ok(Relay::new(settings, auth))
    }

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

    /// Checks a server's connection settings; `field` names them in errors, `ports` are
    /// the defaults with and without `ssl`.
    pub(super) fn connection(
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
