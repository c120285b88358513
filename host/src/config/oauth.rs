//! The OAuth2 part of an account: its settings, checked.

use std::time::Duration;

use anyhow::{Context, bail};

use super::{AuthConfig, Config};
use crate::auth::OAuthSettings;

impl Config {
    /// The OAuth2 settings of `account` when it takes its tokens from the token store.
    pub fn oauth_settings(&self, account: &str) -> anyhow::Result<Option<OAuthSettings>> {
        let a = self
            .accounts
            .get(account)
            .with_context(|| format!("no account `{account}` in the config"))?;
        let Some(AuthConfig::OAuth2 {
            username,
            access_token,
            client_id,
            client_secret,
            auth_url,
            token_url,
            redirect_url,
            scopes,
            refresh_margin_secs,
            keep_alive_days,
        }) = &a.auth
        else {
            return Ok(None);
        };
        let field = |f: &str| format!("accounts.{account}.auth.{f}");
        // A Graph account's tenant gives the token endpoint, and client credentials ask
        // for Graph's own scope.
        let graph = match (&a.transport, &a.mailbox) {
            (Some(super::TransportConfig::Graph(g)), _) => Some(g.clone()),
            (_, Some(super::MailboxConfig::Graph(g))) => Some(g.api()),
            _ => None,
        };
        let token_url = &token_url
            .clone()
            .or_else(|| graph.as_ref().map(|g| g.token_url()));
        // Delegated: sending, and reading with the post-actions (mark read, flag, move,
        // delete) and the drafts of large sends, which need Mail.ReadWrite.
        let scopes = &match (&graph, auth_url, scopes.is_empty()) {
            (Some(_), None, true) => vec!["https://graph.microsoft.com/.default".to_owned()],
            (Some(_), Some(_), true) => ["Mail.Send", "Mail.ReadWrite", "offline_access"]
                .map(str::to_owned)
                .to_vec(),
            _ => scopes.clone(),
        };
        match (access_token, client_id, token_url) {
            (Some(_), None, None) => return Ok(None),
            (Some(_), _, _) => bail!(
                "{}: give either access_token, or client_id and token_url, not both",
                field("access_token")
            ),
            (None, Some(_), Some(_)) => {}
            (None, _, _) => bail!(
                "{}: an OAuth2 account needs client_id and token_url (and auth_url with redirect_url to authorize)",
                field("client_id")
            ),
        }
        if auth_url.is_some() != redirect_url.is_some() {
            bail!(
                "{}: auth_url and redirect_url go together",
                field("redirect_url")
            );
        }
        let client_secret = match client_secret {
            Some(r) => Some(
                r.resolve(&self.base)
                    .map_err(anyhow::Error::msg)
                    .with_context(|| field("client_secret"))?,
            ),
            None => None,
        };
        Ok(Some(OAuthSettings {
            account: account.to_owned(),
            username: username.clone(),
            client_id: client_id.clone().unwrap_or_default(),
            client_secret,
            auth_url: auth_url.clone(),
            token_url: token_url.clone().unwrap_or_default(),
            redirect_url: redirect_url.clone(),
            scopes: scopes.clone(),
            margin: Duration::from_secs(*refresh_margin_secs),
            keep_alive: Duration::from_secs(keep_alive_days.saturating_mul(86_400)),
        }))
    }
}
