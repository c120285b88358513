//! The IMAP mailbox: async-imap over the host's own TCP and rustls (implicit TLS, or
//! STARTTLS required unless `tls = "none"`), LOGIN or XOAUTH2, one connection per account
//! kept open and reopened when it breaks: commands and IDLE take turns on it. UIDs and
//! UIDVALIDITY are the server's.

mod failure;
mod fetch;
mod folder;
mod idle;
mod look;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use async_imap::{Authenticator, Client, Session};
use tokio::sync::{Mutex, Notify};

use self::failure::{Failure, classify};
use self::idle::Wanted;
use super::Wake;
use crate::BoxFuture;
use crate::auth::TokenSource;
use crate::bindings::MailError;
use crate::net::{self, Security, Settings, Stream};
use crate::secret::Secret;

/// How the mailbox authenticates.
pub enum ImapAuth {
    Login {
        username: String,
        password: Secret,
    },
    OAuth2 {
        username: String,
        token: Arc<dyn TokenSource>,
    },
}

/// One account's IMAP folder.
pub struct Imap {
    settings: Settings,
    auth: ImapAuth,
    folder: String,
    /// The account's one connection: a command holds it for its duration, and the trigger
    /// that leads the wait holds it while in IDLE until a command wants it.
    session: Mutex<Option<Session<Stream>>>,
    /// Commands waiting for the connection; IDLE is not entered while there are any.
    wanted: AtomicUsize,
    /// Tells the IDLE in progress that a command wants the connection.
    interrupt: Notify,
    /// Held by the one trigger that waits in IDLE; the account's other triggers follow it.
    lead: Mutex<()>,
    /// What the one IDLE of this account saw, for the other triggers that wait on it.
    wakes: tokio::sync::broadcast::Sender<Wake>,
    /// Whether the server offers IDLE: unknown, yes or no.
    idle_offered: AtomicU8,
    /// The UIDVALIDITY of the folder as the session selected it.
    selected: Arc<AtomicU32>,
    /// News of messages that reached a look outside async-imap's unsolicited queue.
    heard: Arc<AtomicBool>,
    /// Whether the server offers SEARCHRES (RFC 5182), so that a look can ask for the
    /// sizes of what its search finds in the same round trip; learnt with IDLE's
    /// capability, and unlearnt if the server refuses such a look.
    saves_searches: Arc<AtomicBool>,
    /// The UIDVALIDITY (high half) and UIDNEXT (low half) the last look saw.
    seen_next: Arc<AtomicU64>,
}

const UNKNOWN: u8 = 0;
const OFFERED: u8 = 1;
const NOT_OFFERED: u8 = 2;

struct XOAuth2(String);

impl Authenticator for XOAuth2 {
    type Response = String;
    fn process(&mut self, challenge: &[u8]) -> String {
        // An empty challenge starts the exchange; any other is the server's error report,
        // answered with an empty line so that the server ends with NO.
        if challenge.is_empty() {
            std::mem::take(&mut self.0)
        } else {
            String::new()
        }
    }
}

impl Imap {
    pub fn new(settings: Settings, auth: ImapAuth, folder: String) -> Self {
        Self {
            settings,
            auth,
            folder,
            session: Mutex::new(None),
            wanted: AtomicUsize::new(0),
            interrupt: Notify::new(),
            lead: Mutex::new(()),
            wakes: tokio::sync::broadcast::channel(16).0,
            idle_offered: AtomicU8::new(UNKNOWN),
            selected: Arc::new(AtomicU32::new(0)),
            heard: Arc::new(AtomicBool::new(false)),
            saves_searches: Arc::new(AtomicBool::new(false)),
            seen_next: Arc::new(AtomicU64::new(0)),
        }
    }

    fn server(&self) -> String {
        format!("{}:{}", self.settings.host, self.settings.port)
    }

    /// Opens a session: TCP, TLS, login and SELECT, within twice the timeout in all, so
    /// that a server that accepts but never answers cannot hold a trigger.
    async fn connect(&self) -> Result<Session<Stream>, MailError> {
        let limit = self.settings.timeout.saturating_mul(2);
        tokio::time::timeout(limit, self.open())
            .await
            .unwrap_or_else(|_| {
                Err(Failure::Silent {
                    during: "greeting, login and SELECT".into(),
                    limit,
                }
                .classify(&self.server()))
            })
    }

    async fn open(&self) -> Result<Session<Stream>, MailError> {
        let s = &self.settings;
        let server = self.server();
        let unreachable = |e: std::io::Error| Failure::Unreachable(e).classify(&server);
        let limit = |_: tokio::time::error::Elapsed| {
            Failure::Silent {
                during: "the TLS handshake".into(),
                limit: s.timeout,
            }
            .classify(&server)
        };
        let addrs = net::resolve(&s.host, s.port).await.map_err(unreachable)?;
        let tcp = net::connect(&addrs, s.timeout).await.map_err(unreachable)?;
        let tls_fail = |e: std::io::Error| Failure::Tls(e).classify(&server);
        let client = match s.security {
            Security::None => {
                let mut c = Client::new(Stream::plain(tcp));
                c.read_response().await.map_err(unreachable)?;
                c
            }
            Security::Implicit => {
                let tls =
                    tokio::time::timeout(s.timeout, net::handshake(tcp, &s.host, s.tls.clone()))
                        .await
                        .map_err(limit)?
                        .map_err(tls_fail)?;
                let mut c = Client::new(Stream::tls(tls));
                c.read_response().await.map_err(unreachable)?;
                c
            }
            Security::StartTls => {
                let mut plain = Client::new(tcp);
                plain.read_response().await.map_err(unreachable)?;
                plain
                    .run_command_and_check_ok("STARTTLS", None)
                    .await
                    .map_err(|e| classify(&server, "STARTTLS", e))?;
                let tcp = plain.into_inner();
                let tls =
                    tokio::time::timeout(s.timeout, net::handshake(tcp, &s.host, s.tls.clone()))
                        .await
                        .map_err(limit)?
                        .map_err(tls_fail)?;
                Client::new(Stream::tls(tls))
            }
        };
        let mut session = match &self.auth {
            ImapAuth::Login { username, password } => client
                .login(username, password.expose())
                .await
                .map_err(|(e, _)| classify(&server, "authentication", e))?,
            ImapAuth::OAuth2 { username, token } => {
                let sasl = |access: &Secret| {
                    XOAuth2(format!(
                        "user={username}\x01auth=Bearer {}\x01\x01",
                        access.expose()
                    ))
                };
                let obtained = crate::unix_now();
                let access = token.access_token().await?;
                match client.authenticate("XOAUTH2", sasl(&access)).await {
                    Ok(session) => session,
                    // The server refused a token flowmail thought valid (revoked or expired
                    // early): refresh it once and try again on the same connection, as
                    // SMTP does.
                    Err((async_imap::error::Error::No(text), client)) => {
                        tracing::info!("{server} refused the access token; refreshing it once");
                        let fresh = token.refresh_after_rejection(obtained).await.map_err(|e| {
                            Failure::TokenRefused {
                                reply: text.clone(),
                                refresh: e.message().to_owned(),
                            }
                            .classify(&server)
                        })?;
                        client
                            .authenticate("XOAUTH2", sasl(&fresh))
                            .await
                            .map_err(|(e, _)| classify(&server, "authentication", e))?
                    }
                    Err((e, _)) => return Err(classify(&server, "authentication", e)),
                }
            }
        };
        let mailbox = session
            .select(&self.folder)
            .await
            .map_err(|e| classify(&server, &format!("selecting {}", self.folder), e))?;
        self.selected
            .store(mailbox.uid_validity.unwrap_or_default(), Ordering::SeqCst);
        Ok(session)
    }

    /// Runs `op` on the account's session, opening one if needed; a session that broke is
    /// reopened once. An IDLE in progress on the session ends (DONE) to let `op` run, and
    /// is entered again after it.
    async fn with_session<T>(
        &self,
        op: impl for<'a> Fn(&'a mut Session<Stream>) -> BoxFuture<'a, Result<T, MailError>>,
    ) -> Result<T, MailError> {
        let want = Wanted::new(&self.wanted);
        self.interrupt.notify_waiters();
        let mut guard = self.session.lock().await;
        drop(want);
        for attempt in 0..2 {
            if guard.is_none() {
                *guard = Some(self.connect().await?);
            }
            let Some(session) = guard.as_mut() else {
                continue;
            };
            let limit = self.settings.timeout;
            let result = tokio::time::timeout(limit, op(session))
                .await
                .unwrap_or_else(|_| {
                    Err(Failure::Silent {
                        during: "a command".into(),
                        limit,
                    }
                    .classify(&self.server()))
                });
            if matches!(&result, Err(e) if e.is_retryable()) && attempt > 0 {
                // Never keep a session whose state is unknown.
                *guard = None;
            }
            match result {
                Err(e) if e.is_retryable() && attempt == 0 => {
                    tracing::debug!(
                        "IMAP session to {} broke ({}); reopening",
                        self.server(),
                        e.message()
                    );
                    *guard = None;
                }
                other => return other,
            }
        }
        Err(Failure::KeepsBreaking.classify(&self.server()))
    }
}
