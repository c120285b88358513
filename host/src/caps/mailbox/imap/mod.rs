//! The IMAP mailbox: async-imap over the host's own TCP and rustls (implicit TLS, or
//! STARTTLS required unless `tls = "none"`), LOGIN or XOAUTH2, one connection per account
//! kept open and reopened when it breaks: commands and IDLE take turns on it. UIDs and
//! UIDVALIDITY are the server's.

mod failure;
mod fetch;
mod idle;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use async_imap::{Authenticator, Client, Session};
use futures_util::TryStreamExt;
use tokio::sync::{Mutex, Notify};

use self::failure::{Failure, classify};
use self::fetch::{
    fetch_raw, fetch_without_attachments, flag_name, require, search_query, sizes, status,
    status_and_search, uid_set,
};
use self::idle::Wanted;
use super::uid::{UidBatch, UidCursor, UidFolder, UidMessage, within_budget};
use super::{WaitPlan, Wake};
use crate::BoxFuture;
use crate::auth::TokenSource;
use crate::bindings::MailError;
use crate::bindings::mailbox::{Content, Flag, Oversize, Search, SizeCap};
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

impl UidFolder for Imap {
    fn fetch_after(
        &self,
        after: Option<UidCursor>,
        limit: u32,
        search: Search,
        cap: Option<SizeCap>,
    ) -> BoxFuture<'_, Result<UidBatch, MailError>> {
        let server = self.server();
        let folder = self.folder.clone();
        let (selected, heard) = (self.selected.clone(), self.heard.clone());
        let (saves, seen_next) = (self.saves_searches.clone(), self.seen_next.clone());
        // The sizes come with the search when the trigger had caught up as of the last
        // look, within a batch: the FETCH of the saved result names every message found,
        // and a cursor far behind would have it name thousands beyond the batch.
        let caught_up = after.is_some_and(|c| {
            let seen = seen_next.load(Ordering::SeqCst);
            (seen >> 32) as u32 == c.uid_validity
                && (seen as u32).saturating_sub(1).saturating_sub(c.last_uid) <= limit
        });
        Box::pin(self.with_session(move |session| {
            let (server, folder, search, selected, heard, saves, seen_next) = (
                server.clone(),
                folder.clone(),
                search.clone(),
                selected.clone(),
                heard.clone(),
                saves.clone(),
                seen_next.clone(),
            );
            Box::pin(async move {
                // Past the cursor when it holds for the folder's UIDVALIDITY; from the
                // start when the folder changed.
                let start_for = |validity: u32| match after {
                    Some(c) if c.uid_validity == validity => c.last_uid,
                    _ => 0,
                };
                let with_sizes = caught_up && cap.is_some() && saves.load(Ordering::SeqCst);
                let query = |v| search_query(start_for(v), &search);
                let look = match status_and_search(
                    session,
                    &server,
                    &folder,
                    (&selected, &heard),
                    query,
                    with_sizes,
                )
                .await
                {
                    Err(MailError::Permanent(why)) if with_sizes => {
                        // A server that names SEARCHRES but refuses it: look as before,
                        // from now on.
                        tracing::info!(
                            "{server} refused a saved search ({why}); searching without it"
                        );
                        saves.store(false, Ordering::SeqCst);
                        status_and_search(
                            session,
                            &server,
                            &folder,
                            (&selected, &heard),
                            query,
                            false,
                        )
                        .await?
                    }
                    other => other?,
                };
                let (mailbox, found, listed_with) = (look.mailbox, look.found, look.sizes);
                seen_next.store(
                    u64::from(mailbox.uid_validity.unwrap_or_default()) << 32
                        | u64::from(mailbox.uid_next.unwrap_or_default()),
                    Ordering::SeqCst,
                );
                let validity = mailbox.uid_validity.unwrap_or_default();
                let start = start_for(validity);
                let mut uids: Vec<u32> = found.into_iter().filter(|u| *u > start).collect();
                uids.sort_unstable();
                uids.dedup();
                let mut more = uids.len() > limit as usize;
                uids.truncate(limit as usize);
                // Every UID below UIDNEXT as of the SELECT was searched; when nothing was
                // cut off, the batch accounts for all of them, matching or not.
                let highest = uids.last().copied().unwrap_or(start);
                let mut scanned_to = if more {
                    highest
                } else {
                    highest.max(mailbox.uid_next.unwrap_or(1).saturating_sub(1))
                };
                let messages = match cap {
                    None => fetch_raw(session, &server, &uids).await?,
                    Some(cap) => {
                        let mut listed = match listed_with {
                            Some(mut listed) => {
                                listed.retain(|(uid, _, _)| uids.binary_search(uid).is_ok());
                                listed
                            }
                            None => sizes(session, &server, &uids).await?,
                        };
                        listed.sort_by_key(|(uid, _, _)| *uid);
                        listed.dedup_by_key(|(uid, _, _)| *uid);
                        let within = within_budget(listed.iter().map(|(_, size, _)| {
                            match (*size <= cap.max_size, cap.oversize) {
                                (true, _) => *size,
                                (false, Oversize::Skip) => 0,
                                (false, Oversize::WithoutAttachments) => cap.max_size,
                            }
                        }));
                        if within < listed.len() {
                            listed.truncate(within);
                            more = true;
                            scanned_to = listed.last().map_or(start, |(uid, _, _)| *uid);
                        }
                        let small: Vec<u32> = listed
                            .iter()
                            .filter(|(_, size, _)| *size <= cap.max_size)
                            .map(|(uid, _, _)| *uid)
                            .collect();
                        let mut messages = fetch_raw(session, &server, &small).await?;
                        for (uid, size, flags) in listed {
                            if size <= cap.max_size {
                                continue;
                            }
                            let (data, content) = match cap.oversize {
                                Oversize::Skip => (Vec::new(), Content::Omitted),
                                Oversize::WithoutAttachments => (
                                    fetch_without_attachments(session, &server, uid, cap.max_size)
                                        .await?,
                                    Content::WithoutAttachments,
                                ),
                            };
                            messages.push(UidMessage {
                                uid,
                                flags,
                                size,
                                data,
                                content,
                            });
                        }
                        messages.sort_by_key(|m| m.uid);
                        messages
                    }
                };
                Ok(UidBatch {
                    uid_validity: validity,
                    messages,
                    more,
                    scanned_to,
                })
            })
        }))
    }

    fn fetch(&self, uid: u32) -> BoxFuture<'_, Result<UidMessage, MailError>> {
        let server = self.server();
        Box::pin(self.with_session(move |session| {
            let server = server.clone();
            Box::pin(async move {
                fetch_raw(session, &server, &[uid])
                    .await?
                    .pop()
                    .ok_or_else(|| Failure::NoMessage(uid).classify(&server))
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
                require(session, &server, &uids).await?;
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
                require(session, &server, &uids).await?;
                session
                    .uid_mv(uid_set(&uids), &folder)
                    .await
                    .map_err(|e| classify(&server, &format!("moving to {folder}"), e))
            })
        }))
    }

    fn uid_validity(&self) -> BoxFuture<'_, Result<u32, MailError>> {
        let server = self.server();
        let folder = self.folder.clone();
        let selected = self.selected.clone();
        Box::pin(self.with_session(move |session| {
            let (server, folder, selected) = (server.clone(), folder.clone(), selected.clone());
            Box::pin(async move {
                let mailbox = status(session, &server, &folder, &selected).await?;
                Ok(mailbox.uid_validity.unwrap_or_default())
            })
        }))
    }

    fn count_after(&self, after: Option<UidCursor>) -> BoxFuture<'_, Result<u64, MailError>> {
        let server = self.server();
        let folder = self.folder.clone();
        let selected = self.selected.clone();
        Box::pin(self.with_session(move |session| {
            let (server, folder, selected) = (server.clone(), folder.clone(), selected.clone());
            Box::pin(async move {
                let mailbox = status(session, &server, &folder, &selected).await?;
                let start = match after {
                    Some(c) if Some(c.uid_validity) == mailbox.uid_validity => c.last_uid,
                    _ => 0,
                };
                let uids = session
                    .uid_search(format!("UID {}:*", start.saturating_add(1)))
                    .await
                    .map_err(|e| classify(&server, "UID SEARCH", e))?;
                Ok(uids.into_iter().filter(|u| *u > start).count() as u64)
            })
        }))
    }

    fn delete(&self, uids: Vec<u32>) -> BoxFuture<'_, Result<(), MailError>> {
        let server = self.server();
        Box::pin(self.with_session(move |session| {
            let (server, uids) = (server.clone(), uids.clone());
            Box::pin(async move {
                if uids.is_empty() {
                    return Ok(());
                }
                require(session, &server, &uids).await?;
                let _: Vec<_> = session
                    .uid_store(uid_set(&uids), "+FLAGS.SILENT (\\Deleted)")
                    .await
                    .map_err(|e| classify(&server, "UID STORE", e))?
                    .try_collect()
                    .await
                    .map_err(|e| classify(&server, "UID STORE", e))?;
                // UID EXPUNGE removes only these messages, not others marked by someone else.
                let _: Vec<_> = session
                    .uid_expunge(uid_set(&uids))
                    .await
                    .map_err(|e| classify(&server, "UID EXPUNGE", e))?
                    .try_collect()
                    .await
                    .map_err(|e| classify(&server, "UID EXPUNGE", e))?;
                Ok(())
            })
        }))
    }

    fn wait_for_change(&self, plan: WaitPlan) -> BoxFuture<'_, Result<Wake, MailError>> {
        Box::pin(self.wait(plan))
    }
}
