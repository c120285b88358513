//! Where flowmail keeps its state: the SQLite file, or a PostgreSQL database shared by
//! several nodes.

use std::path::PathBuf;

use anyhow::{Context, bail};
use serde::Deserialize;

use super::Config;
use crate::secret::SecretRef;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The SQLite file (the embedded default), used unless `url` is given.
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
    /// A PostgreSQL database shared by several nodes: `postgres://user@host:port/db`,
    /// without the password.
    #[serde(default)]
    pub url: Option<String>,
    /// The PostgreSQL password, by reference.
    #[serde(default)]
    pub password: Option<SecretRef>,
    /// The key that seals tokens at rest, created with mode 0600 on first use;
    /// `FLOWMAIL_KEY` overrides it.
    #[serde(default = "default_key_file")]
    pub key_file: PathBuf,
}

fn default_key_file() -> PathBuf {
    "var/flowmail.key".into()
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            path: default_store_path(),
            url: None,
            password: None,
            key_file: default_key_file(),
        }
    }
}

fn default_store_path() -> PathBuf {
    "var/flowmail.db".into()
}

impl Config {
    /// Opens the store: the PostgreSQL database of `store.url`, or the SQLite file.
    pub fn open_store(&self) -> anyhow::Result<crate::store::Store> {
        let Some(url) = &self.store.url else {
            return Ok(crate::store::Store::open(&self.store_path())?);
        };
        let store = self.open_shared_store(url)?;
        store.set_lease_secs(self.node.lease_secs);
        Ok(store)
    }

    fn open_shared_store(&self, url: &str) -> anyhow::Result<crate::store::Store> {
        if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
            bail!(
                "store.url: `{url}` is not a PostgreSQL URL like postgres://flowmail@db.example:5432/flowmail"
            );
        }
        let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
        let (userinfo, host) = rest.split_once('@').unwrap_or(("", rest));
        if userinfo.contains(':') {
            bail!(
                "store.url: the password is never written into the config; remove it from the URL and give store.password = {{ env = \"...\" }} or {{ file = \"...\" }}"
            );
        }
        let url = match &self.store.password {
            Some(reference) => {
                let password = reference
                    .resolve(&self.base)
                    .map_err(anyhow::Error::msg)
                    .context("store.password")?;
                let encoded = crate::net::graph::percent_encode(password.expose(), b"");
                format!("{scheme}://{userinfo}:{encoded}@{host}")
            }
            None => url.to_owned(),
        };
        Ok(crate::store::Store::open_url(&url)?)
    }
}
