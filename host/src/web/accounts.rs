//! Accounts made on the settings page: kept in the store with their secrets sealed, and
//! merged into the config beside `flowmail.toml`'s, whose names win.

use anyhow::Context;

use super::form::{self, PageSecrets, PageSettings};
use crate::app::App;
use crate::config::Config;
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
    let ca_file = config.web.ca_file.as_ref().map(|p| config.resolve(p));
    let mut merged = Vec::new();
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
        match app.reload_account(config, &account.name) {
            Ok(()) => merged.push(account.name),
            Err(e) => {
                tracing::warn!(
                    "the settings page's account `{}` cannot be used: {e:#}",
                    account.name
                );
                config.accounts.remove(&account.name);
            }
        }
    }
    Ok(merged)
}
