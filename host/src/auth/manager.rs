//! The OAuth2 token manager: the authorization-code flow with PKCE ("Save & Authorize"),
//! client credentials, and refresh that never races. Tokens live sealed in the store; a
//! refresh is single-flight per account and writes with compare-and-swap, so a rotated
//! refresh token is never lost.

use std::sync::Arc;
use std::time::Duration;

use oauth2::basic::{BasicClient, BasicTokenResponse};
use oauth2::{
    AuthUrl, ClientId, ClientSecret, EndpointNotSet, EndpointSet, RedirectUrl, RefreshToken, Scope,
    TokenResponse, TokenUrl,
};

use super::TokenSource;
use super::failure::TokenFailure;
use super::provider::describe;
use super::seal::{self, Sealer};
use crate::bindings::MailError;
use crate::bindings::tokens::CredentialState;
use crate::secret::Secret;
use crate::store::{Store, TokenRow};
use crate::{BoxFuture, net};

type Client =
    BasicClient<EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// An account's OAuth2 settings, secrets resolved.
#[derive(Debug, Clone)]
pub struct OAuthSettings {
    pub account: String,
    pub username: String,
    pub client_id: String,
    pub client_secret: Option<Secret>,
    pub auth_url: Option<String>,
    pub token_url: String,
    pub redirect_url: Option<String>,
    pub scopes: Vec<String>,
    /// Refresh this long before the access token expires.
    pub margin: Duration,
    /// Refresh an unused refresh token after this long, before the provider lets it lapse.
    pub keep_alive: Duration,
}

/// How long one process's claim on a refresh lasts.
const REFRESH_CLAIM: std::time::Duration = std::time::Duration::from_secs(30);

/// Who refreshes: this process (with the row it refreshes), or another, whose new
/// access token is here.
enum Claimed {
    Mine(TokenRow),
    Theirs(Secret),
}

/// Obtains, stores, refreshes and hands out one account's access tokens.
pub struct TokenManager {
    pub(super) settings: OAuthSettings,
    pub(super) client: Client,
    pub(super) http: reqwest::Client,
    pub(super) store: Arc<Store>,
    pub(super) sealer: Arc<Sealer>,
    pub(super) single_flight: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenManager")
            .field("account", &self.settings.account)
            .finish_non_exhaustive()
    }
}

impl TokenManager {
    pub fn new(
        settings: OAuthSettings,
        store: Arc<Store>,
        sealer: Arc<Sealer>,
    ) -> Result<Self, String> {
        let token_url =
            TokenUrl::new(settings.token_url.clone()).map_err(|e| format!("token_url: {e}"))?;
        let mut client =
            BasicClient::new(ClientId::new(settings.client_id.clone())).set_token_uri(token_url);
        if let Some(secret) = &settings.client_secret {
            client = client.set_client_secret(ClientSecret::new(secret.expose().to_owned()));
        }
        let tls = net::tls_config(None, net::MinTls::V12)?;
        let http = net::http_client(&tls, Duration::from_secs(30))?;
        Ok(Self {
            settings,
            client,
            http,
            store,
            sealer,
            single_flight: tokio::sync::Mutex::new(()),
        })
    }

    pub fn settings(&self) -> &OAuthSettings {
        &self.settings
    }

    fn account(&self) -> &str {
        &self.settings.account
    }

    fn authorize_hint(&self) -> String {
        format!("run `flowmail authorize --account {}`", self.account())
    }

    fn row(&self) -> Result<Option<TokenRow>, MailError> {
        self.store
            .tokens(self.account())
            .map_err(|e| TokenFailure::Store(e).into())
    }

    fn open(&self, row: &TokenRow) -> Result<(Secret, Option<Secret>), MailError> {
        let account = self.account();
        let fail = |e: seal::KeyError| MailError::from(TokenFailure::Key(e));
        let access = self
            .sealer
            .open(account, &format!("{account}/access"), &row.access_token)
            .map_err(fail)?;
        let refresh = match &row.refresh_token {
            Some(r) => Some(Secret::new(
                self.sealer
                    .open(account, &format!("{account}/refresh"), r)
                    .map_err(fail)?,
            )),
            None => None,
        };
        Ok((Secret::new(access), refresh))
    }

    fn sealed_row(
        &self,
        version: i64,
        response: &BasicTokenResponse,
        previous_refresh: Option<&Secret>,
        username: &str,
    ) -> Result<TokenRow, MailError> {
        let account = self.account();
        let seal = |field: &str, value: &str| {
            self.sealer
                .seal(&format!("{account}/{field}"), value)
                .map_err(|e| MailError::from(TokenFailure::Seal(e.to_string())))
        };
        let refresh = response
            .refresh_token()
            .map(|r| r.secret().clone())
            .or_else(|| previous_refresh.map(|s| s.expose().to_owned()));
        let lifetime = response
            .expires_in()
            .unwrap_or(Duration::from_secs(3600))
            .as_secs() as i64;
        Ok(TokenRow {
            version,
            access_token: seal("access", response.access_token().secret())?,
            refresh_token: refresh.map(|r| seal("refresh", &r)).transpose()?,
            expires_at: crate::unix_now() + lifetime,
            scope: response
                .scopes()
                .map(|s| {
                    s.iter()
                        .map(|x| x.to_string())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_else(|| self.settings.scopes.join(" ")),
            username: username.to_owned(),
            needs_reauth: None,
            refreshed_at: crate::unix_now(),
        })
    }

    /// Stores the tokens of a new authorization, replacing whatever was there.
    pub fn store_authorization(
        &self,
        response: &BasicTokenResponse,
        username: &str,
    ) -> Result<(), MailError> {
        let version = self.row()?.map(|r| r.version + 1).unwrap_or(1);
        let row = self.sealed_row(version, response, None, username)?;
        self.store
            .put_tokens(self.account(), None, &row)
            .map_err(TokenFailure::Store)?;
        Ok(())
    }

    /// The state the guest sees.
    pub fn state(&self) -> CredentialState {
        match self.row() {
            Ok(Some(row)) => match row.needs_reauth {
                Some(why) => CredentialState::NeedsAuthorization(why),
                None => CredentialState::Ready,
            },
            Ok(None) if self.settings.auth_url.is_none() => CredentialState::Ready,
            Ok(None) => CredentialState::NeedsAuthorization(format!(
                "the account is not authorized yet; {}",
                self.authorize_hint()
            )),
            Err(e) => CredentialState::NeedsAuthorization(format!("{e:?}")),
        }
    }

    /// A valid access token: the stored one while it is fresh, else a refreshed one.
    pub async fn access_token(&self) -> Result<Secret, MailError> {
        self.token(|row| row.expires_at - self.settings.margin.as_secs() as i64 > crate::unix_now())
            .await
    }

    /// A new access token after a server refused one obtained at or before `since`,
    /// unless another caller refreshed after that already.
    pub async fn refresh_after_rejection(&self, since: i64) -> Result<Secret, MailError> {
        self.token(|row| row.refreshed_at > since).await
    }

    /// Refreshes when the refresh token has not been used for the keep-alive period.
    pub async fn keep_alive(&self) -> Result<bool, MailError> {
        let Some(row) = self.row()? else {
            return Ok(false);
        };
        if row.needs_reauth.is_some()
            || row.refresh_token.is_none()
            || crate::unix_now() - row.refreshed_at < self.settings.keep_alive.as_secs() as i64
        {
            return Ok(false);
        }
        let keep = self.settings.keep_alive.as_secs() as i64;
        self.token(|row| crate::unix_now() - row.refreshed_at < keep)
            .await
            .map(|_| true)
    }

    /// Returns the stored token if `fresh` says so; else refreshes, one caller at a time.
    async fn token(&self, fresh: impl Fn(&TokenRow) -> bool) -> Result<Secret, MailError> {
        let seen = self.row()?;
        if let Some(row) = &seen {
            if let Some(why) = &row.needs_reauth {
                return Err(TokenFailure::NeedsAuthorization {
                    account: self.account(),
                    why,
                }
                .into());
            }
            if fresh(row) {
                return Ok(self.open(row)?.0);
            }
        }
        let _flight = self.single_flight.lock().await;
        let row = match self.row()? {
            // Whoever held the lock before refreshed (or re-authorized) meanwhile: use theirs.
            Some(row)
                if seen.as_ref().is_some_and(|s| s.version != row.version)
                    && row.needs_reauth.is_none() =>
            {
                return Ok(self.open(&row)?.0);
            }
            Some(row) => row,
            None if self.settings.auth_url.is_none() => return self.client_credentials().await,
            None => {
                return Err(TokenFailure::NotAuthorized {
                    account: self.account(),
                    hint: self.authorize_hint(),
                }
                .into());
            }
        };
        if let Some(why) = &row.needs_reauth {
            return Err(TokenFailure::NeedsAuthorization {
                account: self.account(),
                why,
            }
            .into());
        }
        if fresh(&row) {
            return Ok(self.open(&row)?.0);
        }
        // Other processes sharing the store may hold an expired token too: one of them
        // refreshes, the others wait for its tokens, so a rotating refresh token is
        // spent once.
        let row = match self.claim_or_wait(row).await? {
            Claimed::Mine(row) => row,
            Claimed::Theirs(secret) => return Ok(secret),
        };
        let result = self.refresh_claimed(&row).await;
        if result.is_err() {
            let _ = self.store.release_refresh(self.account());
        }
        result
    }

    /// Claims the refresh of `row` for this process, or waits for the process that holds
    /// the claim and takes its tokens. A claim lapses after [`REFRESH_CLAIM`], so a
    /// process that died mid-refresh holds no one up for longer.
    async fn claim_or_wait(&self, mut row: TokenRow) -> Result<Claimed, MailError> {
        let started = std::time::Instant::now();
        loop {
            let until = crate::unix_now() + REFRESH_CLAIM.as_secs() as i64;
            if self
                .store
                .claim_refresh(self.account(), row.version, until)
                .map_err(TokenFailure::Store)?
            {
                return Ok(Claimed::Mine(row));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let current = self.row()?.ok_or(TokenFailure::Vanished)?;
            if current.version != row.version {
                if let Some(why) = &current.needs_reauth {
                    return Err(TokenFailure::NeedsAuthorization {
                        account: self.account(),
                        why,
                    }
                    .into());
                }
                return Ok(Claimed::Theirs(self.open(&current)?.0));
            }
            if started.elapsed() > 2 * REFRESH_CLAIM {
                return Err(TokenFailure::Refresh {
                    account: self.account(),
                    text: "another process has been refreshing the token for too long".into(),
                }
                .into());
            }
            row = current;
        }
    }

    /// Refreshes `row`'s tokens under this process's claim.
    async fn refresh_claimed(&self, row: &TokenRow) -> Result<Secret, MailError> {
        let row = row.clone();
        let (_, refresh) = self.open(&row)?;
        let Some(refresh) = refresh else {
            return if self.settings.auth_url.is_none() {
                self.client_credentials().await
            } else {
                self.mark(&row, "no refresh token was issued".into())
            };
        };
        tracing::debug!(account = self.account(), "refreshing the access token");
        let result = self
            .client
            .exchange_refresh_token(&RefreshToken::new(refresh.expose().to_owned()))
            .request_async(&self.http)
            .await;
        match result {
            Ok(response) => {
                let next =
                    self.sealed_row(row.version + 1, &response, Some(&refresh), &row.username)?;
                let written = self
                    .store
                    .put_tokens(self.account(), Some(row.version), &next)
                    .map_err(TokenFailure::Store)?;
                if !written {
                    // Another process refreshed meanwhile; its tokens stand, ours are dropped.
                    let current = self.row()?.ok_or(TokenFailure::Vanished)?;
                    return Ok(self.open(&current)?.0);
                }
                Ok(Secret::new(response.access_token().secret().clone()))
            }
            Err(e) => {
                let (final_, text) = describe(&e);
                if final_ {
                    self.mark(&row, text)
                } else {
                    Err(TokenFailure::Refresh {
                        account: self.account(),
                        text,
                    }
                    .into())
                }
            }
        }
    }

    /// Marks the account as needing authorization, so later calls fail fast. When another
    /// process changed the tokens meanwhile (a re-authorization, or a refresh that rotated
    /// the refresh token), its tokens stand and are used instead: the refusal was of a
    /// refresh token that is no longer the current one.
    fn mark(&self, row: &TokenRow, why: String) -> Result<Secret, MailError> {
        let reason = format!(
            "the provider refused the refresh token ({why}); {}",
            self.authorize_hint()
        );
        let next = TokenRow {
            version: row.version + 1,
            needs_reauth: Some(reason.clone()),
            ..row.clone()
        };
        match self
            .store
            .put_tokens(self.account(), Some(row.version), &next)
        {
            Ok(true) => {}
            Ok(false) => {
                if let Some(current) = self.row()?
                    && current.needs_reauth.is_none()
                {
                    tracing::info!(
                        account = self.account(),
                        "the refresh token was refused, but another process replaced the tokens meanwhile; using theirs"
                    );
                    return Ok(self.open(&current)?.0);
                }
            }
            Err(e) => tracing::warn!(
                "could not mark `{}` as needing authorization: {e}",
                self.account()
            ),
        }
        tracing::warn!(account = self.account(), "{reason}");
        Err(TokenFailure::NeedsAuthorization {
            account: self.account(),
            why: &reason,
        }
        .into())
    }

    /// The client-credentials grant, for application permissions (Graph).
    async fn client_credentials(&self) -> Result<Secret, MailError> {
        let mut request = self.client.exchange_client_credentials();
        for scope in &self.settings.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let response = request.request_async(&self.http).await.map_err(|e| {
            let (fatal, text) = describe(&e);
            TokenFailure::Endpoint { fatal, text }
        })?;
        let version = self.row()?.map(|r| r.version + 1).unwrap_or(1);
        let row = self.sealed_row(version, &response, None, &self.settings.username)?;
        self.store
            .put_tokens(self.account(), None, &row)
            .map_err(TokenFailure::Store)?;
        Ok(Secret::new(response.access_token().secret().clone()))
    }

    pub(super) fn auth_client(
        &self,
    ) -> Result<
        BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>,
        String,
    > {
        let auth = self
            .settings
            .auth_url
            .clone()
            .ok_or("the account has no auth_url")?;
        let redirect = self
            .settings
            .redirect_url
            .clone()
            .ok_or("the account has no redirect_url")?;
        Ok(self
            .client
            .clone()
            .set_auth_uri(AuthUrl::new(auth).map_err(|e| format!("auth_url: {e}"))?)
            .set_redirect_uri(
                RedirectUrl::new(redirect).map_err(|e| format!("redirect_url: {e}"))?,
            ))
    }
}

impl TokenSource for TokenManager {
    fn access_token(&self) -> BoxFuture<'_, Result<Secret, MailError>> {
        Box::pin(TokenManager::access_token(self))
    }

    fn refresh_after_rejection(&self, since: i64) -> BoxFuture<'_, Result<Secret, MailError>> {
        Box::pin(TokenManager::refresh_after_rejection(self, since))
    }
}

#[cfg(test)]
mod tests;
