//! Login, logout, the way in, and the status page.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Form;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json, Redirect, Response};
use serde_json::json;

use super::Web;
use super::access::{self, LOGIN_COOKIE, SESSION_COOKIE, cookie, same_token};

/// `/`: the settings page, or the login first.
pub async fn root(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    match web.session(&headers) {
        Some(_) => Redirect::to("/settings/smtp").into_response(),
        None => Redirect::to("/login").into_response(),
    }
}

fn login_form(web: &Web, status: StatusCode, login: &str, error: Option<&str>) -> Response {
    // The form's CSRF token is also set as a cookie: a login can only come from this page.
    let csrf = access::token();
    let mut response = web.render(
        status,
        "login.html",
        json!({ "csrf": &csrf, "login": login, "error": error }),
    );
    if let Ok(v) = access::set_cookie(LOGIN_COOKIE, &csrf, Some(900), web.web.behind_tls).parse() {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

/// `GET /login`.
pub async fn login_page(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    if web.session(&headers).is_some() {
        return Redirect::to("/settings/smtp").into_response();
    }
    login_form(&web, StatusCode::OK, "", None)
}

/// `POST /login`: checks the password, within the limits on failed attempts.
pub async fn login(
    State(web): State<Arc<Web>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let login = form
        .get("login")
        .map(|l| l.trim().to_lowercase())
        .unwrap_or_default();
    let password = form.get("password").cloned().unwrap_or_default();
    let csrf_ok = match (cookie(&headers, LOGIN_COOKIE), form.get("csrf")) {
        (Some(c), Some(f)) => same_token(&c, f),
        _ => false,
    };
    if !csrf_ok {
        return login_form(
            &web,
            StatusCode::FORBIDDEN,
            &login,
            Some("the login form expired or did not come from this page; log in again"),
        );
    }
    if let Some(wait) = web.limits.wait(&login, peer.ip()) {
        return login_form(
            &web,
            StatusCode::TOO_MANY_REQUESTS,
            &login,
            Some(&format!(
                "too many failed logins; try again in {} minute(s)",
                wait.as_secs() / 60 + 1
            )),
        );
    }
    let user = match web.app.store().user(&login) {
        Ok(u) => u,
        Err(e) => {
            tracing::error!("reading the users failed: {e}");
            return web.message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Error",
                "the store cannot be read; see the log",
                "error",
            );
        }
    };
    // A missing user costs a hash too, so the answer's timing does not tell who exists.
    let ok = match &user {
        Some(u) => access::verify_password(&password, &u.password_hash),
        None => {
            let _ = access::verify_password(&password, DUMMY_HASH);
            false
        }
    };
    let Some(user) = user.filter(|_| ok) else {
        web.limits.failed(&login, peer.ip());
        tracing::warn!("a failed login for `{login}` from {}", peer.ip());
        return login_form(
            &web,
            StatusCode::UNAUTHORIZED,
            &login,
            Some("wrong email or password"),
        );
    };
    web.limits.succeeded(&login);
    let token = access::token();
    let hours = web.web.session_hours.max(1);
    let expires = crate::unix_now() + (hours * 3600) as i64;
    if let Err(e) = web.app.store().create_session(
        &access::token_hash(&token),
        user.id,
        &access::token(),
        expires,
    ) {
        tracing::error!("recording a session failed: {e}");
        return web.message(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Error",
            "the session could not be recorded; see the log",
            "error",
        );
    }
    tracing::info!("`{}` logged in from {}", user.login, peer.ip());
    let mut response = Redirect::to("/settings/smtp").into_response();
    let secure = web.web.behind_tls;
    for c in [
        access::set_cookie(SESSION_COOKIE, &token, Some(hours * 3600), secure),
        access::set_cookie(LOGIN_COOKIE, "", Some(0), secure),
    ] {
        if let Ok(v) = c.parse() {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}

/// An argon2id hash of a random password, checked when the user does not exist.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0VX6HHV2pAuPIG1WqTPY1bQ2yZYSMF3Zj7wq0K1b6dI";

/// `POST /logout`.
pub async fn logout(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Some((hash, session)) = web.session(&headers) {
        if !form
            .get("csrf")
            .is_some_and(|c| same_token(c, &session.csrf))
        {
            return web.message(
                StatusCode::FORBIDDEN,
                "Refused",
                "the form did not carry this session's token; reload the page",
                "error",
            );
        }
        if let Err(e) = web.app.store().end_session(&hash) {
            tracing::warn!("ending a session failed: {e}");
        }
        if let Ok(mut held) = web.held.lock() {
            held.remove(&hash);
        }
    }
    let mut response = Redirect::to("/login").into_response();
    if let Ok(v) = access::set_cookie(SESSION_COOKIE, "", Some(0), web.web.behind_tls).parse() {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

fn status_data(web: &Web) -> anyhow::Result<serde_json::Value> {
    let triggers = crate::status::collect(web.app.store())?;
    let sends: Vec<serde_json::Value> = web
        .app
        .store()
        .recent_runs(20)?
        .into_iter()
        .map(|(workflow, at, outcome, detail)| {
            json!({
                "workflow": workflow,
                "at": at,
                "outcome": outcome,
                "detail": detail.lines().next().unwrap_or_default(),
            })
        })
        .collect();
    let outbox = crate::status::outbox(web.app.store())?;
    Ok(json!({
        "triggers": triggers,
        "sends": sends,
        "outbox": outbox.outbox,
        "outbox_failures": outbox.outbox_failures,
    }))
}

/// `GET /status`.
pub async fn status_page(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    let Some((_, session)) = web.session(&headers) else {
        return Redirect::to("/login").into_response();
    };
    match status_data(&web) {
        Ok(data) => web.render(
            StatusCode::OK,
            "status.html",
            json!({
                "user": { "login": session.user.login },
                "csrf": session.csrf,
                "triggers": data["triggers"],
                "sends": data["sends"],
                "outbox": data["outbox"],
                "outbox_failures": data["outbox_failures"],
            }),
        ),
        Err(e) => web.message(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Status",
            &format!("the status cannot be read: {e:#}"),
            "error",
        ),
    }
}

/// `GET /status.json`, for the status page's refresh.
pub async fn status_json(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    if web.session(&headers).is_none() {
        return (StatusCode::UNAUTHORIZED, "log in first").into_response();
    }
    match status_data(&web) {
        Ok(data) => Json(data).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")).into_response(),
    }
}
