//! The IMAP mailbox: async-imap over the host's own TCP and rustls (implicit TLS, or
//! STARTTLS required unless `tls = "none"`), LOGIN or XOAUTH2, one session per account kept
//! open and reopened when it breaks. UIDs and UIDVALIDITY are the server's.

use std::sync::Arc;

use async_imap::types::Flag as ImapFlag;
use async_imap::{Authenticator, Client, Session};
use futures_util::TryStreamExt;
use tokio::sync::Mutex;

use super::Backend;
use crate::bindings::MailError;
use crate::bindings::mailbox::{Batch, Cursor, Flag, RawMessage};
use crate::caps::BoxFuture;
use crate::caps::smtp::wire::{self, Wire};
use crate::caps::smtp::{Security, Settings, TokenSource};
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
    session: Mutex<Option<Session<Wire>>>,
}

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

/// The IMAP backend's one place of error classification.
fn classify(server: &str, what: &str, e: async_imap::error::Error) -> MailError {
    use async_imap::error::Error as E;
    match e {
        E::No(text) if text.contains("AUTHENTICATIONFAILED") || what == "authentication" => {
            MailError::AuthFailed(format!("{server} refused the credentials: {text}"))
        }
        E::No(text)
            if text.contains("NONEXISTENT")
                || text.to_ascii_lowercase().contains("doesn't exist") =>
        {
            MailError::NotFound(format!("{server}: {what}: {text}"))
        }
        E::No(text) | E::Bad(text) => {
            MailError::Permanent(format!("{server} refused {what}: {text}"))
        }
        E::Io(e) => MailError::Transient(format!(
            "the connection to {server} failed during {what}: {e}"
        )),
        E::ConnectionLost => {
            MailError::Transient(format!("{server} closed the connection during {what}"))
        }
        other => MailError::Transient(format!("{server}: {what}: {other}")),
    }
}

fn flag_name(f: Flag) -> &'static str {
    match f {
        Flag::Seen => "\\Seen",
        Flag::Answered => "\\Answered",
        Flag::Flagged => "\\Flagged",
        Flag::Deleted => "\\Deleted",
        Flag::Draft => "\\Draft",
    }
}

/// The message's own flags; `\\Recent` belongs to the session, not the message.
fn flag_text(f: &ImapFlag<'_>) -> Option<String> {
    Some(match f {
        ImapFlag::Seen => "\\Seen".into(),
        ImapFlag::Answered => "\\Answered".into(),
        ImapFlag::Flagged => "\\Flagged".into(),
        ImapFlag::Deleted => "\\Deleted".into(),
        ImapFlag::Draft => "\\Draft".into(),
        ImapFlag::Recent => return None,
        ImapFlag::MayCreate => "\\*".into(),
        ImapFlag::Custom(c) => c.to_string(),
    })
}

fn uid_set(uids: &[u32]) -> String {
    uids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

impl Imap {
    pub fn new(settings: Settings, auth: ImapAuth, folder: String) -> Self {
        Self {
            settings,
            auth,
            folder,
            session: Mutex::new(None),
        }
    }

    fn server(&self) -> String {
        format!("{}:{}", self.settings.host, self.settings.port)
    }

    async fn connect(&self) -> Result<Session<Wire>, MailError> {
        let s = &self.settings;
        let server = self.server();
        let net = |e: std::io::Error| MailError::Transient(format!("cannot reach {server}: {e}"));
        let limit = |e: tokio::time::error::Elapsed| {
            MailError::Transient(format!("{server} did not answer in time: {e}"))
        };
        let addrs = wire::resolve(&s.host, s.port).await.map_err(net)?;
        let tcp = wire::connect(&addrs, s.timeout).await.map_err(net)?;
        let tls_fail = |e: std::io::Error| {
            MailError::Permanent(format!(
                "TLS with {server} failed: {e}; check ca_file and min_tls"
            ))
        };
        let client = match s.security {
            Security::None => {
                let mut c = Client::new(Wire::plain(tcp));
                c.read_response().await.map_err(net)?;
                c
            }
            Security::Implicit => {
                let tls =
                    tokio::time::timeout(s.timeout, wire::handshake(tcp, &s.host, s.tls.clone()))
                        .await
                        .map_err(limit)?
                        .map_err(tls_fail)?;
                let mut c = Client::new(Wire::tls(tls));
                c.read_response().await.map_err(net)?;
                c
            }
            Security::StartTls => {
                let mut plain = Client::new(tcp);
                plain.read_response().await.map_err(net)?;
                plain
                    .run_command_and_check_ok("STARTTLS", None)
                    .await
                    .map_err(|e| classify(&server, "STARTTLS", e))?;
                let tcp = plain.into_inner();
                let tls =
                    tokio::time::timeout(s.timeout, wire::handshake(tcp, &s.host, s.tls.clone()))
                        .await
                        .map_err(limit)?
                        .map_err(tls_fail)?;
                Client::new(Wire::tls(tls))
            }
        };
        let mut session = match &self.auth {
            ImapAuth::Login { username, password } => client
                .login(username, password.expose())
                .await
                .map_err(|(e, _)| classify(&server, "authentication", e))?,
            ImapAuth::OAuth2 { username, token } => {
                let access = token.access_token().await?;
                let sasl = format!("user={username}\x01auth=Bearer {}\x01\x01", access.expose());
                client
                    .authenticate("XOAUTH2", XOAuth2(sasl))
                    .await
                    .map_err(|(e, _)| classify(&server, "authentication", e))?
            }
        };
        session
            .select(&self.folder)
            .await
            .map_err(|e| classify(&server, &format!("selecting {}", self.folder), e))?;
        Ok(session)
    }

    /// Runs `op` on the account's session, opening one if needed; a session that broke is
    /// reopened once.
    async fn with_session<T>(
        &self,
        op: impl for<'a> Fn(&'a mut Session<Wire>) -> BoxFuture<'a, Result<T, MailError>>,
    ) -> Result<T, MailError> {
        let mut guard = self.session.lock().await;
        for attempt in 0..2 {
            if guard.is_none() {
                *guard = Some(self.connect().await?);
            }
            let Some(session) = guard.as_mut() else {
                continue;
            };
            match op(session).await {
                Err(MailError::Transient(m)) if attempt == 0 => {
                    tracing::debug!("IMAP session to {} broke ({m}); reopening", self.server());
                    *guard = None;
                }
                other => return other,
            }
        }
        Err(MailError::Transient(format!(
            "the IMAP session to {} keeps breaking",
            self.server()
        )))
    }
}

/// The messages with `uids` (those that exist), in UID order, with flags and size.
async fn fetch_raw(
    session: &mut Session<Wire>,
    server: &str,
    uids: &[u32],
) -> Result<Vec<RawMessage>, MailError> {
    if uids.is_empty() {
        return Ok(Vec::new());
    }
    let fetched: Vec<_> = session
        .uid_fetch(uid_set(uids), "(UID FLAGS RFC822.SIZE BODY.PEEK[])")
        .await
        .map_err(|e| classify(server, "UID FETCH", e))?
        .try_collect()
        .await
        .map_err(|e| classify(server, "UID FETCH", e))?;
    let mut messages: Vec<RawMessage> = fetched
        .iter()
        .filter_map(|f| {
            let (uid, body) = (f.uid?, f.body()?);
            // A `N:*` style answer may include messages not asked for.
            uids.contains(&uid).then(|| RawMessage {
                uid,
                flags: f.flags().filter_map(|fl| flag_text(&fl)).collect(),
                size: f.size.map(u64::from).unwrap_or(body.len() as u64),
                data: body.to_vec(),
            })
        })
        .collect();
    messages.sort_by_key(|m| m.uid);
    Ok(messages)
}

impl Backend for Imap {
    fn fetch_after(
        &self,
        after: Option<Cursor>,
        limit: u32,
    ) -> BoxFuture<'_, Result<Batch, MailError>> {
        let server = self.server();
        let folder = self.folder.clone();
        Box::pin(self.with_session(move |session| {
            let (server, folder) = (server.clone(), folder.clone());
            Box::pin(async move {
                // Selecting again reports the folder's current UIDVALIDITY and size.
                let mailbox = session
                    .select(&folder)
                    .await
                    .map_err(|e| classify(&server, "SELECT", e))?;
                let validity = mailbox.uid_validity.unwrap_or_default();
                let start = match after {
                    Some(c) if c.uid_validity == validity => c.last_uid,
                    _ => 0,
                };
                let mut uids: Vec<u32> = session
                    .uid_search(format!("UID {}:*", start + 1))
                    .await
                    .map_err(|e| classify(&server, "UID SEARCH", e))?
                    .into_iter()
                    .filter(|u| *u > start)
                    .collect();
                uids.sort_unstable();
                let more = uids.len() > limit as usize;
                uids.truncate(limit as usize);
                let messages = fetch_raw(session, &server, &uids).await?;
                Ok(Batch {
                    uid_validity: validity,
                    messages,
                    more,
                })
            })
        }))
    }

    fn fetch(&self, uid: u32) -> BoxFuture<'_, Result<RawMessage, MailError>> {
        let server = self.server();
        Box::pin(self.with_session(move |session| {
            let server = server.clone();
            Box::pin(async move {
                fetch_raw(session, &server, &[uid])
                    .await?
                    .pop()
                    .ok_or_else(|| {
                        MailError::NotFound(format!("no message with UID {uid} on {server}"))
                    })
            })
        }))
    }

    fn set_flags(
        &self,
        uids: Vec<u32>,
        add: Vec<Flag>,
        remove: Vec<Flag>,
    ) -> BoxFuture<'_, Result<(), MailError>> {
        let server = self.server();
        Box::pin(self.with_session(move |session| {
            let (server, uids, add, remove) =
                (server.clone(), uids.clone(), add.clone(), remove.clone());
            Box::pin(async move {
                for (sign, flags) in [("+", &add), ("-", &remove)] {
                    if flags.is_empty() || uids.is_empty() {
                        continue;
                    }
                    let names: Vec<&str> = flags.iter().map(|f| flag_name(*f)).collect();
                    let _: Vec<_> = session
                        .uid_store(
                            uid_set(&uids),
                            format!("{sign}FLAGS.SILENT ({})", names.join(" ")),
                        )
                        .await
                        .map_err(|e| classify(&server, "UID STORE", e))?
                        .try_collect()
                        .await
                        .map_err(|e| classify(&server, "UID STORE", e))?;
                }
                Ok(())
            })
        }))
    }

    fn move_to(&self, uids: Vec<u32>, folder: String) -> BoxFuture<'_, Result<(), MailError>> {
        let server = self.server();
        Box::pin(self.with_session(move |session| {
            let (server, uids, folder) = (server.clone(), uids.clone(), folder.clone());
            Box::pin(async move {
                session
                    .uid_mv(uid_set(&uids), &folder)
                    .await
                    .map_err(|e| classify(&server, &format!("moving to {folder}"), e))
            })
        }))
    }
}
