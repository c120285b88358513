//! The settings page, served by `flowmail serve` on `web.listen`: login, Settings :: SMTP
//! (Test Mail, Validate and Save, Save & Authorize), the status page and the OAuth2
//! callback. Server-rendered HTML with two small static scripts; no inline script, so the
//! Content-Security-Policy allows none.

pub mod access;
pub mod accounts;
mod authorize;
pub mod form;
mod pages;
mod remote;
mod settings;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::watch;

use self::access::{LoginLimits, SESSION_COOKIE, cookie, token_hash};
use self::form::PageSecrets;
use crate::app::App;
use crate::config::{Config, WebConfig};
use crate::store::SessionRow;

/// The Content-Security-Policy of every page: scripts and styles from this server only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self' https: http://127.0.0.1:* http://localhost:*; \
                   frame-ancestors 'none'; base-uri 'none'";

/// The web app's state.
pub struct Web {
    app: Arc<App>,
    config_path: PathBuf,
    web: WebConfig,
    /// The data centers, for `/metrics`.
    data_centers: Vec<String>,
    templates: minijinja::Environment<'static>,
    limits: LoginLimits,
    /// Secrets entered in a session but not saved, by session and account: the form keeps
    /// them without ever echoing them into the HTML.
    held: Mutex<HashMap<String, HashMap<String, PageSecrets>>>,
    /// Authorizations under way, by their `state`.
    pending: Mutex<HashMap<String, authorize::PendingAuthorization>>,
    /// This process as a node: Test Mail of another data center's account runs there.
    node_name: String,
    node_data_center: String,
}

fn templates() -> anyhow::Result<minijinja::Environment<'static>> {
    let mut env = minijinja::Environment::new();
    for (name, text) in [
        ("base.html", include_str!("templates/base.html")),
        ("login.html", include_str!("templates/login.html")),
        ("message.html", include_str!("templates/message.html")),
        ("settings.html", include_str!("templates/settings.html")),
        ("status.html", include_str!("templates/status.html")),
    ] {
        env.add_template(name, text)
            .with_context(|| format!("the page template {name}"))?;
    }
    Ok(env)
}

impl Web {
    /// The web app over `app`, whose config file is `config_path`.
    pub fn new(app: Arc<App>, config_path: PathBuf, config: &Config) -> anyhow::Result<Self> {
        Ok(Self {
            app,
            config_path,
            web: config.web.clone(),
            data_centers: config.data_centers.clone(),
            templates: templates()?,
            limits: LoginLimits::default(),
            held: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            node_name: config.node.name(),
            node_data_center: config.node_data_center(),
        })
    }

    /// The logged-in session of the request, with the hash that keys it.
    fn session(&self, headers: &axum::http::HeaderMap) -> Option<(String, SessionRow)> {
        let token = cookie(headers, SESSION_COOKIE)?;
        let hash = token_hash(&token);
        match self.app.store().session(&hash) {
            Ok(s) => s.map(|s| (hash, s)),
            Err(e) => {
                tracing::warn!("reading a session failed: {e}");
                None
            }
        }
    }

    /// Renders `template` with `context`.
    fn render(&self, status: StatusCode, template: &str, context: serde_json::Value) -> Response {
        match self
            .templates
            .get_template(template)
            .and_then(|t| t.render(minijinja::Value::from(minijinja::value::Serde(&context))))
        {
            Ok(html) => (status, Html(html)).into_response(),
            Err(e) => {
                tracing::error!("rendering {template} failed: {e:#}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the page could not be rendered",
                )
                    .into_response()
            }
        }
    }

    /// A page with one message.
    fn message(&self, status: StatusCode, title: &str, text: &str, kind: &str) -> Response {
        self.render(
            status,
            "message.html",
            serde_json::json!({ "title": title, "text": text, "kind": kind, "back": "/settings/smtp" }),
        )
    }
}

/// Refuses state-changing requests from other sites, and sets the security headers of
/// every response.
async fn guard(State(web): State<Arc<Web>>, request: Request, next: Next) -> Response {
    if let Some(why) = access::cross_site(request.method(), request.headers()) {
        return web.message(StatusCode::FORBIDDEN, "Refused", &why, "error");
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `/metrics`, for Prometheus: no login, as scrapers have none; it holds no secret, and
/// the listener is loopback unless `web.listen` says otherwise.
async fn metrics(State(web): State<Arc<Web>>) -> Response {
    let store = web.app.store().clone();
    let centers = web.data_centers.clone();
    match tokio::task::spawn_blocking(move || crate::metrics::render(&store, &centers)).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The routes.
pub fn router(web: Arc<Web>) -> Router {
    Router::new()
        .route("/", get(pages::root))
        .route("/login", get(pages::login_page).post(pages::login))
        .route("/logout", post(pages::logout))
        .route("/settings/smtp", get(settings::page).post(settings::submit))
        .route("/settings/smtp/state", get(authorize::state))
        .route("/oauth/callback", get(authorize::callback))
        .route("/status", get(pages::status_page))
        .route("/status.json", get(pages::status_json))
        .route("/metrics", get(metrics))
        .route(
            "/static/app.css",
            get(|| async { asset("text/css", include_str!("static/app.css")) }),
        )
        .route(
            "/static/settings.js",
            get(|| async { asset("text/javascript", include_str!("static/settings.js")) }),
        )
        .route(
            "/static/status.js",
            get(|| async { asset("text/javascript", include_str!("static/status.js")) }),
        )
        .layer(middleware::from_fn_with_state(web.clone(), guard))
        .with_state(web)
}

/// Listens on `listen` (`host:port`).
pub async fn bind(listen: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} for the settings page (web.listen)"))
}

/// Serves the page on `listener` until `stop` turns true.
pub async fn serve(
    web: Arc<Web>,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let app = router(web).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
        .context("the settings page's server failed")
}
