//! Settings :: SMTP: the form, Test Mail, Validate and Save, Save & Authorize with its
//! callback, and the token status the page shows.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Serialize;
use serde_json::json;

use super::Web;
use super::access::same_token;
use super::accounts::{self, PageAccount};
use super::form::{self, FieldProblem, PageSecrets, PageSettings};
use crate::caps::transport::smtp::test_mail;
use crate::config::Config;
use crate::store::SessionRow;

/// What the page shows besides the form's own values.
#[derive(Default)]
struct View {
    selected: String,
    new_name: String,
    settings: PageSettings,
    problems: Vec<FieldProblem>,
    warnings: Vec<String>,
    notice: Option<String>,
    error: Option<String>,
    report: Option<test_mail::Report>,
    test_to: String,
    status: StatusCode,
}

/// Which groups of fields are shown for `s`.
fn shown(s: &PageSettings) -> serde_json::Value {
    let oauth2 = s.auth_required && s.auth_type == "oauth2";
    json!({
        "email_box": s.email_box,
        "auth": s.auth_required,
        "basic": s.auth_required && s.auth_type != "oauth2",
        "oauth2": oauth2,
        "oauth_smtp": oauth2 && s.comm_type != "api",
        "api": oauth2 && s.comm_type == "api",
    })
}

impl Web {
    fn held_secrets(&self, session: &str, account: &str) -> Option<PageSecrets> {
        self.held.lock().ok()?.get(session)?.get(account).cloned()
    }

    fn hold_secrets(&self, session: &str, account: &str, secrets: &PageSecrets) {
        if let Ok(mut held) = self.held.lock() {
            held.entry(session.to_owned())
                .or_default()
                .insert(account.to_owned(), secrets.clone());
        }
    }

    /// The token status of a saved OAuth2 account, for the page.
    pub(super) fn token_status(
        &self,
        name: &str,
        settings: &PageSettings,
    ) -> Option<serde_json::Value> {
        if !(settings.auth_required && settings.auth_type == "oauth2") {
            return None;
        }
        let now = crate::unix_now();
        let row = self.app.store().tokens(name).ok().flatten();
        let secret_days = accounts::days_until(&settings.client_secret_expires, now);
        Some(json!({
            "authorized": row.as_ref().is_some_and(|r| r.needs_reauth.is_none()),
            "authorized_as": row.as_ref().map(|r| r.username.clone()),
            "access_expires_in": row.as_ref().map(|r| r.expires_at - now),
            "refreshed_days_ago": row.as_ref().map(|r| (now - r.refreshed_at) / 86400),
            "has_refresh_token": row.as_ref().is_some_and(|r| r.refresh_token.is_some()),
            "needs_reauth": row.as_ref().and_then(|r| r.needs_reauth.clone()),
            "client_secret_days_left": secret_days,
            "client_secret_warning": secret_days.filter(|d| *d <= 30).map(|d| if d < 0 {
                format!("The client secret expired {} day(s) ago: create a new one in the app registration and save it here.", -d)
            } else {
                format!("The client secret expires in {d} day(s): create a new one before then.")
            }),
        }))
    }

    fn render_settings(&self, session: &SessionRow, hash: &str, view: View) -> Response {
        let config = match Config::read(&self.config_path) {
            Ok(c) => c,
            Err(e) => {
                return self.message(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Settings",
                    &format!("{e:#}"),
                    "error",
                );
            }
        };
        let page = accounts::load(&self.app).unwrap_or_else(|e| {
            tracing::error!("reading the settings page's accounts failed: {e:#}");
            Vec::new()
        });
        let mut list: Vec<serde_json::Value> = config
            .accounts
            .keys()
            .map(|n| json!({ "name": n, "readonly": true, "state": "active" }))
            .collect();
        list.extend(
            page.iter()
                .map(|a| json!({ "name": a.name, "readonly": false, "state": a.state })),
        );
        let readonly = config
            .accounts
            .contains_key(&view.selected)
            .then(|| accounts::summary(&config, &view.selected));
        let saved = page.iter().find(|a| a.name == view.selected);
        // A new account's secrets are held under the name typed for it.
        let key = if view.selected.is_empty() {
            &view.new_name
        } else {
            &view.selected
        };
        let held = self.held_secrets(hash, key);
        let set = |pick: fn(&PageSecrets) -> &Option<String>| {
            held.as_ref().is_some_and(|h| pick(h).is_some())
                || saved.is_some_and(|a| pick(&a.secrets).is_some())
        };
        let problems: HashMap<&str, &FieldProblem> = view
            .problems
            .iter()
            .map(|p| (p.field.as_str(), p))
            .collect();
        let tokens = saved.and_then(|a| self.token_status(&a.name, &a.settings));
        self.render(
            view.status,
            "settings.html",
            json!({
                "user": { "login": &session.user.login, "email": &session.user.email },
                "csrf": &session.csrf,
                "accounts": list,
                "selected": &view.selected,
                "new_name": &view.new_name,
                "readonly": readonly,
                "s": &view.settings,
                "show": shown(&view.settings),
                "secrets_set": {
                    "imap_password": set(|s| &s.imap_password),
                    "password": set(|s| &s.password),
                    "client_secret": set(|s| &s.client_secret),
                },
                "data_centers": &config.data_centers,
                "problems": problems,
                "problem_list": &view.problems,
                "warnings": &view.warnings,
                "notice": view.notice,
                "error": view.error,
                "report": view.report.as_ref().map(ReportView::of),
                "test_to": &view.test_to,
                "tokens": tokens,
            }),
        )
    }
}

/// The test report as the page shows it.
#[derive(Serialize)]
struct ReportView {
    ok: bool,
    account: String,
    server: String,
    queue_id: Option<String>,
    /// The node that sent it, and its data center.
    node: Option<String>,
    data_center: Option<String>,
    stages: Vec<serde_json::Value>,
}

impl ReportView {
    fn of(r: &test_mail::Report) -> Self {
        Self {
            ok: r.ok,
            account: r.account.clone(),
            server: r.server.clone(),
            queue_id: r.queue_id.clone(),
            node: r.node.clone(),
            data_center: r.data_center.clone(),
            stages: r
                .stages
                .iter()
                .map(|s| json!({ "title": s.title, "ok": s.ok, "millis": format!("{:.1}", s.millis), "detail": s.detail }))
                .collect(),
        }
    }
}

/// `GET /settings/smtp[?account=NAME]`.
pub async fn page(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some((hash, session)) = web.session(&headers) else {
        return Redirect::to("/login").into_response();
    };
    let selected = query.get("account").cloned().unwrap_or_default();
    let saved = accounts::load(&web.app)
        .ok()
        .and_then(|all| all.into_iter().find(|a| a.name == selected));
    let data_center = Config::read(&web.config_path)
        .ok()
        .and_then(|c| c.data_centers.first().cloned())
        .unwrap_or_default();
    let settings = saved.map(|a| a.settings).unwrap_or_else(|| PageSettings {
        min_tls: "1.2".into(),
        data_center,
        ..PageSettings::default()
    });
    let view = View {
        selected,
        settings,
        test_to: session.user.email.clone().unwrap_or_default(),
        status: StatusCode::OK,
        ..View::default()
    };
    web.render_settings(&session, &hash, view)
}

/// `POST /settings/smtp`: Test, Validate and Save, or Save & Authorize.
pub async fn submit(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Form(form_data): Form<HashMap<String, String>>,
) -> Response {
    let Some((hash, session)) = web.session(&headers) else {
        return Redirect::to("/login").into_response();
    };
    if !form_data
        .get("csrf")
        .is_some_and(|c| same_token(c, &session.csrf))
    {
        return web.message(
            StatusCode::FORBIDDEN,
            "Refused",
            "the form did not carry this session's token; reload the page and try again",
            "error",
        );
    }
    let config = match Config::load(&web.config_path) {
        Ok(c) => c,
        Err(e) => {
            return web.message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Settings",
                &format!("{e:#}"),
                "error",
            );
        }
    };
    let name = form_data
        .get("account")
        .map(|n| n.trim().to_owned())
        .unwrap_or_default();
    let saved: Option<PageAccount> = accounts::load(&web.app)
        .ok()
        .and_then(|all| all.into_iter().find(|a| a.name == name));
    let mut problems = Vec::new();
    if saved.is_none()
        && let Some(message) = form::check_name(&name, &config)
    {
        problems.push(FieldProblem {
            field: "account".into(),
            label: form::label("account").into(),
            message,
        });
    }
    // An empty secret field keeps what this session entered, else what was saved.
    let held = {
        let session_held = web.held_secrets(&hash, &name).unwrap_or_default();
        let saved_secrets = saved
            .as_ref()
            .map(|a| a.secrets.clone())
            .unwrap_or_default();
        PageSecrets {
            imap_password: session_held.imap_password.or(saved_secrets.imap_password),
            password: session_held.password.or(saved_secrets.password),
            client_secret: session_held.client_secret.or(saved_secrets.client_secret),
        }
    };
    let mut checked = form::check(&form_data, &held, &config.data_centers);
    problems.append(&mut checked.problems);
    if !name.is_empty() {
        web.hold_secrets(&hash, &name, &checked.secrets);
    }
    let action = form_data.get("action").map(String::as_str).unwrap_or("");
    let test_to = form_data
        .get("test_to")
        .map(|t| t.trim().to_owned())
        .unwrap_or_default();
    let mut view = View {
        selected: if saved.is_some() {
            name.clone()
        } else {
            String::new()
        },
        new_name: if saved.is_some() {
            String::new()
        } else {
            name.clone()
        },
        settings: checked.settings.clone(),
        warnings: checked.warnings.clone(),
        test_to: test_to.clone(),
        status: StatusCode::OK,
        ..View::default()
    };
    if action == "test" && !test_to.contains('@') {
        problems.push(FieldProblem {
            field: "test_to".into(),
            label: "Test email".into(),
            message: "needs the address to send the test mail to".into(),
        });
    }
    if !problems.is_empty() {
        view.problems = problems;
        view.status = StatusCode::UNPROCESSABLE_ENTITY;
        return web.render_settings(&session, &hash, view);
    }
    let oauth2 = checked.settings.auth_required && checked.settings.auth_type == "oauth2";
    match action {
        "test" => {
            match web.test_mail(&name, &checked, &test_to).await {
                Ok(report) => view.report = Some(report),
                Err(e) => view.error = Some(e),
            }
            view.notice = Some("Test never saves: nothing was saved.".into());
            web.render_settings(&session, &hash, view)
        }
        "validate" if oauth2 => {
            view.error = Some("OAuth2 settings are saved with Save & Authorize".into());
            view.status = StatusCode::UNPROCESSABLE_ENTITY;
            web.render_settings(&session, &hash, view)
        }
        "validate" => {
            let Some(email) = session.user.email.clone() else {
                view.error = Some(
                    "your user has no email address to send the validation mail to; ask an administrator to set one \
                     (flowmail user add --email ADDR). Nothing was sent and nothing was saved"
                        .into(),
                );
                view.status = StatusCode::UNPROCESSABLE_ENTITY;
                return web.render_settings(&session, &hash, view);
            };
            let report = match web.test_mail(&name, &checked, &email).await {
                Ok(r) => r,
                Err(e) => {
                    view.error = Some(format!("{e}. Nothing was saved"));
                    view.status = StatusCode::UNPROCESSABLE_ENTITY;
                    return web.render_settings(&session, &hash, view);
                }
            };
            if !report.ok {
                let stage = report
                    .stages
                    .iter()
                    .find(|s| !s.ok)
                    .map_or("send", |s| &s.title);
                view.error = Some(format!(
                    "the validation mail could not be sent (the {stage} stage failed; see below). Nothing was saved"
                ));
                view.report = Some(report);
                view.status = StatusCode::UNPROCESSABLE_ENTITY;
                return web.render_settings(&session, &hash, view);
            }
            match web.save(
                &name,
                &checked.settings,
                &checked.secrets,
                &session.user.login,
            ) {
                Ok(()) => {
                    view.selected = name.clone();
                    view.new_name.clear();
                    view.notice = Some(format!(
                        "Saved. The validation mail went to {email}{}.",
                        report
                            .queue_id
                            .as_deref()
                            .map(|q| format!(" (queue id {q})"))
                            .unwrap_or_default()
                    ));
                    view.report = Some(report);
                    web.render_settings(&session, &hash, view)
                }
                Err(e) => {
                    view.error = Some(format!("the settings could not be saved: {e:#}"));
                    view.status = StatusCode::INTERNAL_SERVER_ERROR;
                    web.render_settings(&session, &hash, view)
                }
            }
        }
        "authorize" if oauth2 => web.authorize(&name, checked, &session).await,
        "authorize" => {
            view.error = Some("Save & Authorize is for OAuth2; use Validate and Save".into());
            view.status = StatusCode::UNPROCESSABLE_ENTITY;
            web.render_settings(&session, &hash, view)
        }
        _ => {
            view.error = Some("choose Test, Validate and Save, or Save & Authorize".into());
            view.status = StatusCode::UNPROCESSABLE_ENTITY;
            web.render_settings(&session, &hash, view)
        }
    }
}

impl Web {
    /// The config file's accounts and the one the form describes, under `name`.
    pub(super) fn with_account(
        &self,
        name: &str,
        settings: &PageSettings,
        secrets: &PageSecrets,
    ) -> anyhow::Result<Config> {
        let mut config = Config::load(&self.config_path)?;
        let ca_file = config.web.ca_file.as_ref().map(|p| config.resolve(p));
        config.accounts.insert(
            name.to_owned(),
            form::account(settings, secrets, ca_file.as_deref()),
        );
        Ok(config)
    }

    /// Saves the account as active and makes it take effect in this process at once.
    pub(super) fn save(
        &self,
        name: &str,
        settings: &PageSettings,
        secrets: &PageSecrets,
        by: &str,
    ) -> anyhow::Result<()> {
        accounts::save(&self.app, name, settings, secrets, "active", by)?;
        let config = self.with_account(name, settings, secrets)?;
        self.app.reload_account(&config, name)?;
        tracing::info!("`{by}` saved the account `{name}` on the settings page");
        Ok(())
    }
}
