//! The composition root: the one place where a [`Config`] becomes live objects. `App::open`
//! opens the store, the token store's managers and every account's backends once; the
//! plugin runtime is built on first use. The command line, the tests and the benches all
//! start here, and an account's backends can be rebuilt while steps run.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use anyhow::{Context, bail};
use lettre::transport::smtp::authentication::Mechanism;

use crate::auth::seal::Sealer;
use crate::auth::{ReferencedToken, TokenManager, TokenSource};
use crate::bindings::tokens::{AuthKind, CredentialState};
use crate::bindings::transport::AccountPolicy;
use crate::caps::mailbox::{GraphMailbox, Imap, ImapAuth, Maildir, Uids, Watch};
use crate::caps::tokens::CredentialInfo;
use crate::caps::transport::smtp::{Auth, Relay};
use crate::caps::transport::{Outbox, Transport, TransportAccount};
use crate::caps::{Audit, Capabilities, Live};
use crate::config::{AuthConfig, Config, Credentials, MailboxConfig, TransportConfig};
use crate::runtime::{Limits, Runtime};
use crate::store::Store;

/// The token managers of the accounts that use the token store, by account.
pub type TokenManagers = HashMap<String, Arc<TokenManager>>;

/// Which plugin component runs the steps.
#[derive(Debug, Clone)]
pub enum Plugin {
    /// The component built from `plugin/` and embedded in the binary.
    Embedded,
    /// A component file (`--plugin`).
    File(PathBuf),
    /// A component in memory.
    Bytes(Arc<Vec<u8>>),
}

/// Everything a command needs, built once.
pub struct App {
    store: Arc<Store>,
    base: PathBuf,
    key_file: PathBuf,
    sealer: Mutex<Option<Arc<Sealer>>>,
    managers: RwLock<TokenManagers>,
    caps: Arc<Live>,
    plugin: Plugin,
    cache_dir: Option<PathBuf>,
    limits: Limits,
    audit: Audit,
    runtime: OnceLock<Runtime>,
    /// What [`App::serving`] says.
    serving: Mutex<String>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("base", &self.base)
            .field("plugin", &self.plugin)
            .finish_non_exhaustive()
    }
}

impl App {
    /// Opens the store, the token store's managers and every account's backends.
    pub fn open(config: &Config, plugin: Plugin) -> anyhow::Result<Self> {
        let store = Arc::new(config.open_store()?);
        let app = Self {
            store,
            base: config.base.clone(),
            key_file: config.resolve(&config.store.key_file),
            sealer: Mutex::new(None),
            managers: RwLock::new(TokenManagers::new()),
            caps: Arc::new(Live::new(Capabilities::default())),
            plugin,
            cache_dir: config.cache_dir(),
            limits: limits(config),
            audit: Audit::default(),
            runtime: OnceLock::new(),
            serving: Mutex::new(String::new()),
        };
        let mut managers = TokenManagers::new();
        for name in config.accounts.keys() {
            if let Some(m) = app.token_manager_for(config, name)? {
                managers.insert(name.clone(), m);
            }
        }
        let mut caps = Capabilities::default();
        for name in config.accounts.keys() {
            account_caps(config, &app.store, &managers, name, &mut caps)?;
        }
        caps.tokens.managers = managers.clone();
        *app.managers.write().map_err(poisoned)? = managers;
        app.caps.replace(caps);
        Ok(app)
    }

    /// Sets the tap that sees every value crossing the plugin boundary; it takes effect
    /// when the runtime is built, so set it before the first [`App::runtime`].
    pub fn with_audit(mut self, audit: Audit) -> Self {
        self.audit = audit;
        self
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The capabilities in force now.
    pub fn capabilities(&self) -> Arc<Capabilities> {
        self.caps.current()
    }

    /// The mailbox of `account` with its host-only operations, for triggers.
    pub fn mailbox(&self, account: &str) -> Option<Arc<dyn Watch>> {
        self.caps.current().mailbox.accounts.get(account).cloned()
    }

    /// The token manager of `account`, when it takes its tokens from the token store.
    pub fn token_manager(&self, account: &str) -> Option<Arc<TokenManager>> {
        self.managers.read().ok()?.get(account).cloned()
    }

    /// Test Mail through `account`'s transport in `config`, SMTP or Graph, from its From
    /// address to `to`.
    pub async fn test_mail(
        &self,
        config: &Config,
        account: &str,
        to: &str,
    ) -> anyhow::Result<crate::caps::transport::smtp::test_mail::Report> {
        let from = config
            .accounts
            .get(account)
            .and_then(|a| a.from.as_deref())
            .map(crate::config::parse_address)
            .transpose()?
            .map(|a| a.email)
            .with_context(|| {
                format!("account `{account}` has no `from` address to send the test from")
            })?;
        let managers = self.managers.read().map_err(poisoned)?.clone();
        if let Some(TransportConfig::Graph(g)) = config
            .accounts
            .get(account)
            .and_then(|a| a.transport.as_ref())
        {
            let transport = graph(config, account, &managers)?;
            let token = token_source(config, account, &managers)?;
            return Ok(crate::caps::transport::graph::test_mail::run(
                account, &g.tenant, &transport, token, &from, to,
            )
            .await);
        }
        let relay = relay(config, account, &managers)?;
        Ok(crate::caps::transport::smtp::test_mail::run(account, &relay, &from, to).await)
    }

    /// The SMTP relay of `account`, for Test Mail.
    pub fn relay(&self, config: &Config, account: &str) -> anyhow::Result<Relay> {
        let managers = self.managers.read().map_err(poisoned)?.clone();
        relay(config, account, &managers)
    }

    /// Refreshes every idle refresh token before its provider lets it lapse.
    pub async fn keep_tokens_alive(&self) {
        let managers: Vec<(String, Arc<TokenManager>)> = match self.managers.read() {
            Ok(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Err(_) => return,
        };
        for (account, manager) in managers {
            match manager.keep_alive().await {
                Ok(true) => tracing::info!(
                    "refreshed the idle refresh token of `{account}` to keep it alive"
                ),
                Ok(false) => {}
                Err(e) => tracing::warn!("keeping the tokens of `{account}` alive failed: {e:?}"),
            }
        }
    }

    /// Keeps refresh tokens alive for as long as the process runs: every `period`
    /// (daily in `flowmail serve`), each idle refresh token is refreshed before its
    /// provider lets it lapse. Never returns; drop the future to stop.
    pub async fn keep_tokens_alive_every(&self, period: Duration) {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.keep_tokens_alive().await;
        }
    }

    /// Rebuilds `account`'s backends and credentials from `config`, or removes them when
    /// `config` no longer has the account. Steps already running keep the backends they
    /// started with; the next step gets the new ones.
    pub fn reload_account(&self, config: &Config, account: &str) -> anyhow::Result<()> {
        let manager = if config.accounts.contains_key(account) {
            self.token_manager_for(config, account)?
        } else {
            None
        };
        let mut managers = self.managers.read().map_err(poisoned)?.clone();
        match &manager {
            Some(m) => managers.insert(account.to_owned(), m.clone()),
            None => managers.remove(account),
        };
        let mut caps = Capabilities::clone(&self.caps.current());
        caps.remove_account(account);
        if config.accounts.contains_key(account) {
            account_caps(config, &self.store, &managers, account, &mut caps)?;
        }
        caps.tokens.managers = managers.clone();
        *self.managers.write().map_err(poisoned)? = managers;
        self.caps.replace(caps);
        Ok(())
    }

    /// The key that seals secrets at rest, opened on first need.
    pub fn sealer(&self) -> anyhow::Result<Arc<Sealer>> {
        let mut slot = self.sealer.lock().map_err(poisoned)?;
        Ok(match &*slot {
            Some(s) => s.clone(),
            None => {
                let s = Arc::new(Sealer::load(
                    &self.key_file,
                    self.store.has_sealed_tokens()?,
                )?);
                *slot = Some(s.clone());
                s
            }
        })
    }

    /// A token manager for `account`'s OAuth2 settings, opening the sealing key on first
    /// need.
    fn token_manager_for(
        &self,
        config: &Config,
        account: &str,
    ) -> anyhow::Result<Option<Arc<TokenManager>>> {
        let Some(settings) = config.oauth_settings(account)? else {
            return Ok(None);
        };
        let sealer = self.sealer()?;
        let manager = TokenManager::new(settings, self.store.clone(), sealer)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("accounts.{account}.auth"))?;
        Ok(Some(Arc::new(manager)))
    }
}

fn poisoned<T>(_: std::sync::PoisonError<T>) -> anyhow::Error {
    anyhow::anyhow!("a lock of the application state was poisoned by a failed thread")
}

/// The per-call limits of the runtime.
fn limits(config: &Config) -> Limits {
    Limits {
        timeout: Duration::from_millis(config.runtime.step_timeout_ms),
        memory_bytes: (config.runtime.memory_limit_mb as usize).saturating_mul(1 << 20),
        instances: config.runtime.max_instances,
    }
}

/// Adds `name`'s transport, mailbox and credential to `caps`.
fn account_caps(
    config: &Config,
    store: &Arc<Store>,
    managers: &TokenManagers,
    name: &str,
    caps: &mut Capabilities,
) -> anyhow::Result<()> {
    let a = config
        .accounts
        .get(name)
        .with_context(|| format!("no account `{name}` in the config"))?;
    let credentials = config.credentials(name)?;
    let (kind, username) = match &credentials {
        Credentials::None => (AuthKind::None, None),
        Credentials::Basic { username, .. } => (AuthKind::Basic, Some(username.clone())),
        Credentials::OAuth2 { username } => (AuthKind::Oauth2, Some(username.clone())),
    };
    caps.tokens.accounts.insert(
        name.to_owned(),
        CredentialInfo {
            kind,
            username,
            state: CredentialState::Ready,
        },
    );
    if let Some(transport) = &a.transport {
        let required_sender = match &credentials {
            Credentials::OAuth2 { username } => Some(username.clone()),
            _ => None,
        };
        let policy = AccountPolicy {
            default_sender: a
                .from
                .as_deref()
                .map(crate::config::parse_address)
                .transpose()?,
            required_sender,
            max_message_bytes: a.max_message_bytes,
            max_attachment_bytes: a.max_attachment_bytes,
        };
        let direct: Arc<dyn Transport> = match transport {
            TransportConfig::Outbox { dir } => Arc::new(Outbox::new(config.resolve(dir))),
            TransportConfig::Smtp(_) => Arc::new(relay(config, name, managers)?),
            TransportConfig::Graph(_) => Arc::new(graph(config, name, managers)?),
        };
        // Mail of an account leaves from its data center only: a direct account of
        // another data center than this node's is sent through the outbox, which a node
        // of its own data center delivers.
        let elsewhere = config.account_data_center(name) != config.node_data_center();
        let transport: Arc<dyn Transport> = match a.delivery {
            crate::config::Delivery::Direct if !elsewhere => direct.clone(),
            crate::config::Delivery::Direct | crate::config::Delivery::Queued => {
                Arc::new(crate::caps::transport::queued::Queued::new(
                    store.clone(),
                    name,
                    &config.account_data_center(name),
                    direct.clone(),
                ))
            }
        };
        caps.transport.accounts.insert(
            name.to_owned(),
            TransportAccount {
                policy,
                transport,
                direct,
            },
        );
    }
    match &a.mailbox {
        Some(MailboxConfig::Imap(server)) => {
            let (settings, folder) = config.imap_settings(name)?;
            let login = match (&server.username, &server.password) {
                (Some(username), Some(password)) => Some(Credentials::Basic {
                    username: username.clone(),
                    password: password
                        .resolve(&config.base)
                        .map_err(anyhow::Error::msg)
                        .with_context(|| format!("accounts.{name}.mailbox.password"))?,
                }),
                (None, None) => None,
                _ => bail!(
                    "accounts.{name}.mailbox: give both username and password, or neither to log in with the account's auth"
                ),
            };
            let auth = match login.unwrap_or(credentials) {
                Credentials::Basic { username, password } => ImapAuth::Login { username, password },
                Credentials::OAuth2 { username } => ImapAuth::OAuth2 {
                    username,
                    token: token_source(config, name, managers)?,
                },
                Credentials::None => bail!(
                    "accounts.{name}.auth: an IMAP mailbox needs credentials (basic or oauth2)"
                ),
            };
            let backend: Arc<dyn Watch> = Arc::new(Uids(Imap::new(settings, auth, folder)));
            caps.mailbox.accounts.insert(name.to_owned(), backend);
        }
        Some(MailboxConfig::Graph(g)) => {
            let api = graph_api(config, name, "mailbox", &g.api(), managers)?;
            let backend: Arc<dyn Watch> = Arc::new(GraphMailbox::new(api, &g.folder));
            caps.mailbox.accounts.insert(name.to_owned(), backend);
        }
        Some(MailboxConfig::Maildir { path }) => {
            let backend: Arc<dyn Watch> =
                Arc::new(Uids(Maildir::new(config.resolve(path), store.clone())));
            caps.mailbox.accounts.insert(name.to_owned(), backend);
        }
        None => {}
    }
    Ok(())
}

/// Where an OAuth2 account's access tokens come from: a reference in the config, or the
/// token store.
fn token_source(
    config: &Config,
    account: &str,
    managers: &TokenManagers,
) -> anyhow::Result<Arc<dyn TokenSource>> {
    let a = config
        .accounts
        .get(account)
        .with_context(|| format!("no account `{account}` in the config"))?;
    if let Some(AuthConfig::OAuth2 {
        access_token: Some(reference),
        ..
    }) = &a.auth
    {
        return Ok(Arc::new(ReferencedToken::new(
            reference.clone(),
            config.base.clone(),
            account,
        )));
    }
    let manager = managers.get(account).cloned().with_context(|| {
        format!("account `{account}` takes its tokens from the token store, which is not open")
    })?;
    Ok(manager)
}

/// The SMTP relay of `account`, taking OAuth2 tokens from `managers`.
pub fn relay(config: &Config, account: &str, managers: &TokenManagers) -> anyhow::Result<Relay> {
    let settings = config.smtp_settings(account)?;
    let a = config
        .accounts
        .get(account)
        .with_context(|| format!("no account `{account}` in the config"))?;
    let auth = match (&a.auth, config.credentials(account)?) {
        (_, Credentials::None) => Auth::None,
        (Some(AuthConfig::Basic { mechanism, .. }), Credentials::Basic { username, password }) => {
            let mechanisms = match mechanism.as_deref() {
                None => vec![Mechanism::Plain, Mechanism::Login],
                Some("plain") => vec![Mechanism::Plain],
                Some("login") => vec![Mechanism::Login],
                Some(other) => bail!(
                    "accounts.{account}.auth.mechanism: `{other}` is not supported; use \"plain\" or \"login\""
                ),
            };
            Auth::Basic {
                username,
                password,
                mechanisms,
            }
        }
        (_, Credentials::OAuth2 { username }) => Auth::OAuth2 {
            username,
            token: token_source(config, account, managers)?,
        },
        _ => Auth::None,
    };
    Ok(Relay::new(
        settings,
        auth,
        config.smtp_max_connections(account)?,
    ))
}

mod graph;
mod plugin;
#[cfg(test)]
mod tests;

pub use self::graph::graph;
use self::graph::graph_api;
pub use self::plugin::Reload;
