//! "Save & Authorize": the authorization-code flow with PKCE (S256) and `state`. A small
//! axum server takes the provider's redirect on `GET /oauth/callback` (the path of the
//! account's `redirect_url`), checks `state`, and exchanges the code.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use oauth2::{
    AuthorizationCode, CsrfToken, PkceCodeChallenge, PkceCodeVerifier, Scope, TokenResponse,
};
use tokio::sync::oneshot;

use super::TokenManager;
use super::provider::describe;

/// An authorization in progress.
pub struct Pending {
    /// The URL to open in a browser.
    pub url: String,
    state: CsrfToken,
    verifier: PkceCodeVerifier,
}

impl Pending {
    /// The `state` the callback must bring back.
    pub fn state(&self) -> &str {
        self.state.secret()
    }

    /// The PKCE verifier, for [`TokenManager::complete_authorization`].
    pub fn into_verifier(self) -> PkceCodeVerifier {
        self.verifier
    }
}

impl TokenManager {
    /// Starts an authorization: the URL, with PKCE and a random `state`.
    pub fn begin_authorization(&self) -> Result<Pending, String> {
        let client = self.auth_client()?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(CsrfToken::new_random)
            .set_pkce_challenge(challenge);
        for scope in &self.settings.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state) = request
            .add_extra_param("login_hint", self.settings.username.clone())
            .url();
        Ok(Pending {
            url: url.to_string(),
            state,
            verifier,
        })
    }

    /// Exchanges `code` and stores the tokens; returns the user they belong to.
    pub async fn complete_authorization(
        &self,
        code: String,
        verifier: PkceCodeVerifier,
    ) -> Result<String, String> {
        let client = self.auth_client()?;
        let response = client
            .exchange_code(AuthorizationCode::new(code))
            .set_pkce_verifier(verifier)
            .request_async(&self.http)
            .await
            .map_err(|e| describe(&e).1)?;
        let user = user_of(response.access_token().secret())
            .unwrap_or_else(|| self.settings.username.clone());
        if !user.eq_ignore_ascii_case(&self.settings.username) {
            return Err(format!(
                "the authorization is for {user}, but the account's username is {}; sign in as that user",
                self.settings.username
            ));
        }
        self.store_authorization(&response, &user)
            .map_err(|e| format!("{e:?}"))?;
        Ok(user)
    }
}

/// The user in a JWT access token's claims, when the token is a JWT that names one.
fn user_of(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    ["email", "upn", "preferred_username"]
        .iter()
        .find_map(|k| claims[*k].as_str().map(str::to_owned))
}

struct Flow {
    manager: Arc<TokenManager>,
    state: String,
    verifier: Mutex<Option<PkceCodeVerifier>>,
    done: Mutex<Option<oneshot::Sender<Result<String, String>>>>,
}

fn page(status: StatusCode, text: &str) -> Response {
    let escaped = text
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    (
        status,
        Html(format!(
            "<!doctype html><title>flowmail</title><p>{escaped}</p>"
        )),
    )
        .into_response()
}

async fn callback(
    State(flow): State<Arc<Flow>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if q.get("state").map(String::as_str) != Some(flow.state.as_str()) {
        tracing::warn!("an OAuth2 callback with a wrong state was refused");
        return page(
            StatusCode::BAD_REQUEST,
            "The state does not match this authorization; the request was refused and nothing was stored.",
        );
    }
    let finish = |r: Result<String, String>| {
        if let Some(tx) = flow.done.lock().ok().and_then(|mut d| d.take()) {
            let _ = tx.send(r);
        }
    };
    if let Some(error) = q.get("error") {
        let text = format!(
            "{error}: {}",
            q.get("error_description")
                .map(String::as_str)
                .unwrap_or_default()
        );
        finish(Err(format!(
            "the provider refused the authorization: {text}"
        )));
        return page(
            StatusCode::BAD_REQUEST,
            &format!("Authorization failed: {text}"),
        );
    }
    let (Some(code), Some(verifier)) = (
        q.get("code"),
        flow.verifier.lock().ok().and_then(|mut v| v.take()),
    ) else {
        return page(
            StatusCode::BAD_REQUEST,
            "This authorization was already completed, or the callback has no code.",
        );
    };
    match flow
        .manager
        .complete_authorization(code.clone(), verifier)
        .await
    {
        Ok(user) => {
            finish(Ok(user.clone()));
            page(
                StatusCode::OK,
                &format!("Authorized as {user}. You can close this window."),
            )
        }
        Err(e) => {
            finish(Err(e.clone()));
            page(
                StatusCode::BAD_REQUEST,
                &format!("Authorization failed: {e}"),
            )
        }
    }
}

/// Runs the whole flow: serves the callback, hands the URL to `announce` (and a browser,
/// where one exists), and waits up to `timeout` for the user. Returns the user.
pub async fn authorize(
    manager: Arc<TokenManager>,
    announce: impl FnOnce(&str),
    timeout: Duration,
) -> anyhow::Result<String> {
    let redirect = manager
        .settings
        .redirect_url
        .clone()
        .context("the account has no redirect_url")?;
    let url = reqwest::Url::parse(&redirect).context("redirect_url is not a URL")?;
    let host = url
        .host_str()
        .context("redirect_url has no host")?
        .to_owned();
    let port = url
        .port_or_known_default()
        .context("redirect_url has no port")?;
    let pending = manager.begin_authorization().map_err(anyhow::Error::msg)?;
    let (tx, rx) = oneshot::channel();
    let flow = Arc::new(Flow {
        manager,
        state: pending.state.secret().clone(),
        verifier: Mutex::new(Some(pending.verifier)),
        done: Mutex::new(Some(tx)),
    });
    let app = axum::Router::new()
        .route(url.path(), get(callback))
        .with_state(flow);
    let listener = tokio::net::TcpListener::bind((host.as_str(), port))
        .await
        .with_context(|| format!("cannot listen on {host}:{port} for the OAuth2 callback"))?;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await
    });
    announce(&pending.url);
    open_browser(&pending.url);
    let result = tokio::time::timeout(timeout, rx).await;
    let _ = stop_tx.send(());
    let _ = server.await;
    match result {
        Ok(Ok(Ok(user))) => Ok(user),
        Ok(Ok(Err(e))) => bail!("{e}"),
        Ok(Err(_)) => bail!("the callback server stopped before the authorization finished"),
        Err(_) => bail!("no authorization arrived within {timeout:?}; run the command again"),
    }
}

fn open_browser(url: &str) {
    if std::env::var_os("DISPLAY").is_none() && std::env::var_os("WAYLAND_DISPLAY").is_none() {
        return;
    }
    for opener in ["xdg-open", "open"] {
        if std::process::Command::new(opener)
            .arg(url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .is_ok()
        {
            return;
        }
    }
}
