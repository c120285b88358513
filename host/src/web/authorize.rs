//! Save & Authorize: the provider's consent for SMTP (PKCE, `state`, `login_hint`) with
//! its callback, or a client-credentials token for the API; and the token state the
//! settings tab polls to show a new authorization without a reload.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Redirect, Response};
use oauth2::PkceCodeVerifier;
use serde_json::json;

use super::Web;
use super::accounts;
use super::form::{self, PageSecrets, PageSettings};
use crate::auth::TokenManager;
use crate::config::Config;
use crate::store::SessionRow;

/// An authorization started by Save & Authorize, waiting for its callback.
pub struct PendingAuthorization {
    account: String,
    settings: PageSettings,
    secrets: PageSecrets,
    by: String,
    manager: Arc<TokenManager>,
    verifier: PkceCodeVerifier,
    started: std::time::Instant,
}

/// How long a consent may take before its callback is refused; abandoned ones are
/// forgotten, so the waiting ones never pile up.
const CONSENT_LIFETIME: std::time::Duration = std::time::Duration::from_secs(30 * 60);

impl Web {
    /// Save & Authorize: the consent for SMTP (the browser is sent to the provider), or
    /// a client-credentials token for the API.
    pub(super) async fn authorize(
        &self,
        name: &str,
        checked: form::Checked,
        session: &SessionRow,
    ) -> Response {
        let fail = |text: String| {
            self.message(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Not authorized",
                &text,
                "error",
            )
        };
        let config = match self.with_account(name, &checked.settings, &checked.secrets) {
            Ok(c) => c,
            Err(e) => return fail(format!("{e:#}")),
        };
        let manager = match self.manager(&config, name) {
            Ok(m) => m,
            Err(e) => return fail(format!("{e:#}; the previous settings stay active")),
        };
        if checked.settings.comm_type == "api" {
            // Client credentials: a token now, or the provider's reason.
            return match manager.access_token().await {
                Ok(_) => match self.save(name, &checked.settings, &checked.secrets, &session.user.login) {
                    Ok(()) => self.message(
                        StatusCode::OK,
                        "SMTP Settings Authorized",
                        &format!("`{name}` obtained a token with client credentials; its mail goes out through Microsoft Graph."),
                        "notice",
                    ),
                    Err(e) => fail(format!("the settings could not be saved: {e:#}")),
                },
                Err(e) => fail(format!("{}; the previous settings stay active", e.describe())),
            };
        }
        let pending = match manager.begin_authorization() {
            Ok(p) => p,
            Err(e) => return fail(format!("{e}; the previous settings stay active")),
        };
        let url = pending.url.clone();
        let state = pending.state().to_owned();
        if accounts::load(&self.app).is_ok_and(|all| all.iter().all(|a| a.name != name))
            && let Err(e) = accounts::save(
                &self.app,
                name,
                &checked.settings,
                &checked.secrets,
                "pending",
                &session.user.login,
            )
        {
            return fail(format!("the settings could not be saved: {e:#}"));
        }
        if let Ok(mut all) = self.pending.lock() {
            all.retain(|_, p| p.started.elapsed() < CONSENT_LIFETIME);
            all.insert(
                state,
                PendingAuthorization {
                    account: name.to_owned(),
                    settings: checked.settings,
                    secrets: checked.secrets,
                    by: session.user.login.clone(),
                    manager,
                    verifier: pending.into_verifier(),
                    started: std::time::Instant::now(),
                },
            );
        }
        tracing::info!("`{}` started authorizing `{name}`", session.user.login);
        Redirect::to(&url).into_response()
    }

    /// A token manager for `name` in `config`, outside the running app: until the
    /// authorization succeeds, the running app keeps the previous settings.
    fn manager(&self, config: &Config, name: &str) -> anyhow::Result<Arc<TokenManager>> {
        let settings = config
            .oauth_settings(name)?
            .ok_or_else(|| anyhow::anyhow!("the account has no OAuth2 settings"))?;
        let manager = TokenManager::new(settings, self.app.store().clone(), self.app.sealer()?)
            .map_err(anyhow::Error::msg)?;
        Ok(Arc::new(manager))
    }
}

/// `GET /oauth/callback`: the provider sends the browser back here.
pub async fn callback(
    State(web): State<Arc<Web>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let pending = query
        .get("state")
        .and_then(|s| web.pending.lock().ok()?.remove(s))
        .filter(|p| p.started.elapsed() < CONSENT_LIFETIME);
    let Some(p) = pending else {
        return web.message(
            StatusCode::BAD_REQUEST,
            "Not authorized",
            "this authorization is unknown, was already used or took over 30 minutes (the state does not match); start again with Save & Authorize",
            "error",
        );
    };
    if let Some(error) = query.get("error") {
        let description = query.get("error_description").cloned().unwrap_or_default();
        return web.message(
            StatusCode::BAD_REQUEST,
            "Not authorized",
            &format!(
                "the provider answered {error}: {description}. {}The previous settings of `{}` stay active.",
                crate::auth::fix_for(&description).map(|f| format!("{f}. ")).unwrap_or_default(),
                p.account
            ),
            "error",
        );
    }
    let Some(code) = query.get("code").cloned() else {
        return web.message(
            StatusCode::BAD_REQUEST,
            "Not authorized",
            "the provider sent no code; start again with Save & Authorize",
            "error",
        );
    };
    match p.manager.complete_authorization(code, p.verifier).await {
        Ok(user) => match web.save(&p.account, &p.settings, &p.secrets, &p.by) {
            Ok(()) => web.message(
                StatusCode::OK,
                "SMTP Settings Authorized",
                &format!(
                    "`{}` is authorized as {user}. You can close this tab.",
                    p.account
                ),
                "notice",
            ),
            Err(e) => web.message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Not authorized",
                &format!("the tokens were stored but the settings could not be saved: {e:#}"),
                "error",
            ),
        },
        Err(e) => web.message(
            StatusCode::BAD_REQUEST,
            "Not authorized",
            &format!("{e}. The previous settings of `{}` stay active.", p.account),
            "error",
        ),
    }
}

/// `GET /settings/smtp/state?account=NAME`: the token status, for the page to show a new
/// authorization without a reload.
pub async fn state(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if web.session(&headers).is_none() {
        return (StatusCode::UNAUTHORIZED, "log in first").into_response();
    }
    let name = query.get("account").cloned().unwrap_or_default();
    let saved = accounts::load(&web.app)
        .ok()
        .and_then(|all| all.into_iter().find(|a| a.name == name));
    match saved {
        Some(a) => Json(json!({
            "state": a.state,
            "tokens": web.token_status(&a.name, &a.settings),
        }))
        .into_response(),
        None => (StatusCode::NOT_FOUND, "no such account").into_response(),
    }
}
