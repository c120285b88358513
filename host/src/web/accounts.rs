//! Accounts made on the settings page: kept in the store with their secrets sealed, and
//! merged into the config beside `flowmail.toml`'s, whose names win.

use anyhow::Context;

use super::form::{self, PageSecrets, PageSettings};
use crate::app::App;
use crate::config::{AuthConfig, Config, MailboxConfig, TransportConfig};
use crate::store::PageAccountRow;

/// A saved account of the page, opened.
#[derive(Debug, Clone)]
pub struct PageAccount {
    pub name: String,
    pub settings: PageSettings,
    pub secrets: PageSecrets,
    pub state: String,
    pub updated_by: String,
    pub updated_at: i64,
}

fn context(name: &str) -> String {
    format!("page/{name}")
}

/// Every account of the page, its secrets unsealed.
pub fn load(app: &App) -> anyhow::Result<Vec<PageAccount>> {
    let rows = app.store().page_accounts()?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let sealer = app.sealer()?;
    let mut out = Vec::new();
    for row in rows {
        let settings: PageSettings = serde_json::from_str(&row.settings)
            .with_context(|| format!("the stored settings of page account `{}`", row.name))?;
        let secrets = match &row.secrets {
            Some(sealed) => {
                let json = sealer.open(&row.name, &context(&row.name), sealed)?;
                serde_json::from_str(&json)
                    .with_context(|| format!("the stored secrets of page account `{}`", row.name))?
            }
            None => PageSecrets::default(),
        };
        out.push(PageAccount {
            name: row.name,
            settings,
            secrets,
            state: row.state,
            updated_by: row.updated_by,
            updated_at: row.updated_at,
        });
    }
    Ok(out)
}

/// Saves an account of the page, its secrets sealed.
pub fn save(
    app: &App,
    name: &str,
    settings: &PageSettings,
    secrets: &PageSecrets,
    state: &str,
    by: &str,
) -> anyhow::Result<()> {
    let sealer = app.sealer()?;
    let sealed = sealer.seal(&context(name), &serde_json::to_string(secrets)?)?;
    app.store().put_page_account(&PageAccountRow {
        name: name.to_owned(),
        settings: serde_json::to_string(settings)?,
        secrets: Some(sealed),
        state: state.to_owned(),
        updated_by: by.to_owned(),
        updated_at: crate::unix_now(),
    })?;
    Ok(())
}

/// Adds the page's active accounts to `config`, and makes them take effect in `app`.
/// An account whose name `flowmail.toml` also has, or whose settings no longer check, is
/// left out with a warning: one account never stops the others.
pub fn merge(app: &App, config: &mut Config) -> anyhow::Result<Vec<String>> {
    let mut merged = Vec::new();
    for name in add(app, config)? {
        match app.reload_account(config, &name) {
            Ok(()) => merged.push(name),
            Err(e) => {
                tracing::warn!("the settings page's account `{name}` cannot be used: {e:#}");
                config.accounts.remove(&name);
            }
        }
    }
    Ok(merged)
}

/// Adds the page's active accounts to `config` only; their names.
pub fn add(app: &App, config: &mut Config) -> anyhow::Result<Vec<String>> {
    let ca_file = config.web.ca_file.as_ref().map(|p| config.resolve(p));
    let mut added = Vec::new();
    for account in load(app)? {
        if account.state != "active" {
            continue;
        }
        if config.accounts.contains_key(&account.name) {
            tracing::warn!(
                "the settings page's account `{}` has the name of one in flowmail.toml, which wins",
                account.name
            );
            continue;
        }
        config.accounts.insert(
            account.name.clone(),
            form::account(&account.settings, &account.secrets, ca_file.as_deref()),
        );
        added.push(account.name);
    }
    Ok(added)
}

/// Raises the alerts the accounts' settings call for: an OAuth2 account that needs
/// re-authorization, and a client secret of the page that expires within 30 days or has.
pub fn check_alerts(app: &App, config: &Config, events: &dyn crate::workflow::Events) {
    use crate::workflow::{Alert, AlertKind};
    let now = crate::unix_now();
    for name in config.accounts.keys() {
        if let Ok(Some(row)) = app.store().tokens(name)
            && let Some(why) = &row.needs_reauth
        {
            events.alert(&Alert {
                kind: AlertKind::Credentials,
                account: name,
                workflow: "settings",
                text: &format!("`{name}` needs re-authorization: {why}"),
            });
        }
    }
    let page = match load(app) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("reading the settings page's accounts failed: {e:#}");
            return;
        }
    };
    for account in page {
        let Some(days) = days_until(&account.settings.client_secret_expires, now) else {
            continue;
        };
        if days <= 30 {
            let text = if days < 0 {
                format!(
                    "the client secret of `{}` expired {} day(s) ago: create a new one in the app registration and save it on the settings page",
                    account.name, -days
                )
            } else {
                format!(
                    "the client secret of `{}` expires in {days} day(s): create a new one in the app registration and save it on the settings page",
                    account.name
                )
            };
            events.alert(&Alert {
                kind: AlertKind::SecretExpiry,
                account: &account.name,
                workflow: "settings",
                text: &text,
            });
        }
    }
}

/// Days from `now` (Unix seconds) until the civil date `YYYY-MM-DD` begins.
pub fn days_until(date: &str, now: i64) -> Option<i64> {
    let mut parts = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (parts.next()??, parts.next()??, parts.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468 - now.div_euclid(86_400))
}

/// A `flowmail.toml` account, as rows of what the page can show of it (no secret).
pub fn summary(config: &Config, name: &str) -> Vec<(String, String)> {
    let Some(a) = config.accounts.get(name) else {
        return Vec::new();
    };
    let mut rows = vec![(
        "From address".to_owned(),
        a.from.clone().unwrap_or_default(),
    )];
    match &a.transport {
        Some(TransportConfig::Smtp(s)) => rows.push((
            "SMTP".into(),
            format!(
                "{}:{} ({}, TLS {} and higher)",
                s.host,
                s.port
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "default port".into()),
                if s.ssl { "SSL" } else { "STARTTLS" },
                s.min_tls
            ),
        )),
        Some(TransportConfig::Graph(g)) => rows.push((
            "Microsoft Graph".into(),
            format!("sends as {} in tenant {}", g.user, g.tenant),
        )),
        Some(TransportConfig::Outbox { dir }) => rows.push((
            "Transport".into(),
            format!("file outbox in {}", dir.display()),
        )),
        None => {}
    }
    match &a.mailbox {
        Some(MailboxConfig::Imap(s)) => rows.push((
            "Email box".into(),
            format!("IMAP {} ({})", s.host, s.folder),
        )),
        Some(MailboxConfig::Maildir { path }) => {
            rows.push(("Email box".into(), format!("Maildir {}", path.display())))
        }
        Some(MailboxConfig::Graph(g)) => rows.push((
            "Email box".into(),
            format!("Microsoft Graph {} ({})", g.user, g.folder),
        )),
        None => {}
    }
    rows.push((
        "Authentication".into(),
        match &a.auth {
            None | Some(AuthConfig::None) => "none".into(),
            Some(AuthConfig::Basic { username, .. }) => format!("Basic as {username}"),
            Some(AuthConfig::OAuth2 { username, .. }) => format!("OAuth2 as {username}"),
        },
    ));
    rows
}
