//! The IMAP mailbox: async-imap over the host's own TCP and rustls (implicit TLS, or
//! STARTTLS required unless `tls = "none"`), LOGIN or XOAUTH2, one session per account kept
//! open and reopened when it breaks. UIDs and UIDVALIDITY are the server's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};

use async_imap::extensions::idle::IdleResponse;
use async_imap::imap_proto::{BodyStructure, MessageSection, SectionPath};
use async_imap::types::{Flag as ImapFlag, UnsolicitedResponse};
use async_imap::{Authenticator, Client, Session};
use futures_util::TryStreamExt;
use tokio::sync::Mutex;

use super::strip::{self, TextPart};
use super::{Backend, WaitPlan, Wake};
use crate::bindings::MailError;
use crate::bindings::mailbox::{
    Batch, Content, Cursor, Flag, Oversize, RawMessage, Search, SizeCap,
};
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
    /// The connection that waits in IDLE, apart from the one that fetches.
    idle: Mutex<Option<Session<Wire>>>,
    /// What the one IDLE of this account saw, for the other triggers that wait on it.
    wakes: tokio::sync::broadcast::Sender<Wake>,
    /// Whether the server offers IDLE: unknown, yes or no.
    idle_offered: AtomicU8,
    /// The UIDVALIDITY of the folder as the fetching session selected it.
    selected: Arc<AtomicU32>,
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
            idle: Mutex::new(None),
            wakes: tokio::sync::broadcast::channel(16).0,
            idle_offered: AtomicU8::new(UNKNOWN),
            selected: Arc::new(AtomicU32::new(0)),
        }
    }

    fn server(&self) -> String {
        format!("{}:{}", self.settings.host, self.settings.port)
    }

    /// Opens a session: TCP, TLS, login and SELECT, within twice the timeout in all, so
    /// that a server that accepts but never answers cannot hold a trigger.
    async fn connect(&self) -> Result<Session<Wire>, MailError> {
        let limit = self.settings.timeout.saturating_mul(2);
        tokio::time::timeout(limit, self.open())
            .await
            .unwrap_or_else(|_| {
                Err(MailError::Transient(format!(
                    "{} accepted the connection but did not finish greeting, login and SELECT within {limit:?}",
                    self.server()
                )))
            })
    }

    async fn open(&self) -> Result<Session<Wire>, MailError> {
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
        let mailbox = session
            .select(&self.folder)
            .await
            .map_err(|e| classify(&server, &format!("selecting {}", self.folder), e))?;
        self.selected
            .store(mailbox.uid_validity.unwrap_or_default(), Ordering::SeqCst);
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
            let limit = self.settings.timeout;
            let result = tokio::time::timeout(limit, op(session))
                .await
                .unwrap_or_else(|_| {
                    Err(MailError::Transient(format!(
                        "{} did not answer within {limit:?}",
                        self.server()
                    )))
                });
            if matches!(result, Err(MailError::Transient(_))) && attempt > 0 {
                // Never keep a session whose state is unknown.
                *guard = None;
            }
            match result {
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

    /// Waits for news. One trigger at a time idles on the account's IDLE connection; the
    /// others follow it and wake when it does, so that no trigger sleeps through news that
    /// another one's IDLE consumed.
    async fn wait(&self, plan: WaitPlan) -> Result<Wake, MailError> {
        let mut follow = self.wakes.subscribe();
        let Ok(guard) = self.idle.try_lock() else {
            return Ok(tokio::select! {
                r = follow.recv() => r.unwrap_or(Wake { mode: "idle", changed: true }),
                () = tokio::time::sleep(plan.idle_refresh) => Wake { mode: "idle", changed: false },
            });
        };
        let result = self.wait_idle(plan, guard).await;
        // Followers look again in any case; an error shows in their own next read.
        let _ = self.wakes.send(match &result {
            Ok(w) => *w,
            Err(_) => Wake {
                mode: "idle",
                changed: true,
            },
        });
        result
    }

    /// Waits in IDLE on a connection of its own (or polls, for a server without IDLE);
    /// see [`Backend::wait_for_change`].
    async fn wait_idle(
        &self,
        plan: WaitPlan,
        mut guard: tokio::sync::MutexGuard<'_, Option<Session<Wire>>>,
    ) -> Result<Wake, MailError> {
        let server = self.server();
        if self.idle_offered.load(Ordering::Relaxed) == NOT_OFFERED {
            tokio::time::sleep(plan.poll_interval).await;
            return Ok(Wake {
                mode: "poll",
                changed: false,
            });
        }
        let session = match guard.take() {
            Some(s) => s,
            None => {
                let mut s = self.connect().await?;
                let caps = s
                    .capabilities()
                    .await
                    .map_err(|e| classify(&server, "CAPABILITY", e))?;
                if !caps.has_str("IDLE") {
                    tracing::info!(
                        "{server} does not offer IDLE; polling every {:?}",
                        plan.poll_interval
                    );
                    self.idle_offered.store(NOT_OFFERED, Ordering::Relaxed);
                    drop(guard);
                    tokio::time::sleep(plan.poll_interval).await;
                    return Ok(Wake {
                        mode: "poll",
                        changed: false,
                    });
                }
                self.idle_offered.store(OFFERED, Ordering::Relaxed);
                // A new connection's SELECT already counts messages that arrived since
                // the caller last looked, and IDLE never reports those: look again first.
                *guard = Some(s);
                return Ok(Wake {
                    mode: "idle",
                    changed: true,
                });
            }
        };
        // What arrived before now was reported during earlier commands, after the caller's
        // last look began or before it; either way that look covered it.
        let unsolicited = session.unsolicited_responses.clone();
        while unsolicited.try_recv().is_ok() {}
        let mut handle = session.idle();
        handle
            .init()
            .await
            .map_err(|e| classify(&server, "IDLE", e))?;
        // News that came with the start of IDLE went to the unsolicited queue.
        let mut early = false;
        while let Ok(r) = unsolicited.try_recv() {
            early |= matches!(
                r,
                UnsolicitedResponse::Exists(_) | UnsolicitedResponse::Recent(_)
            );
        }
        let (outcome, stopped) = if early {
            (Ok(IdleResponse::ManualInterrupt), true)
        } else {
            let (wait, stop) = handle.wait_with_timeout(plan.idle_refresh);
            tokio::pin!(wait);
            tokio::select! {
                r = &mut wait => (r, false),
                () = tokio::time::sleep(plan.idle_refresh) => {
                    // Dropping the stop source ends the wait at once.
                    drop(stop);
                    (wait.await, true)
                }
            }
        };
        let changed = match outcome.map_err(|e| classify(&server, "IDLE", e))? {
            IdleResponse::NewData(_) => true,
            IdleResponse::Timeout => false,
            IdleResponse::ManualInterrupt if stopped => early,
            IdleResponse::ManualInterrupt => {
                return Err(MailError::Transient(format!(
                    "{server} closed the connection during IDLE"
                )));
            }
        };
        let session = tokio::time::timeout(self.settings.timeout, handle.done())
            .await
            .map_err(|_| MailError::Transient(format!("{server} did not end IDLE in time")))?
            .map_err(|e| classify(&server, "DONE", e))?;
        *guard = Some(session);
        Ok(Wake {
            mode: "idle",
            changed,
        })
    }
}

/// The folder's UIDVALIDITY and UIDNEXT, by STATUS: unlike a new SELECT it keeps the
/// server's caches of the selected folder warm (a SELECT per batch made reading ten times
/// slower). When UIDVALIDITY
/// changed under the session, the folder is selected anew so that UIDs mean the same.
async fn status(
    session: &mut Session<Wire>,
    server: &str,
    folder: &str,
    selected: &AtomicU32,
) -> Result<async_imap::types::Mailbox, MailError> {
    // NOOP lets the server bring the selected folder up to date first.
    session
        .noop()
        .await
        .map_err(|e| classify(server, "NOOP", e))?;
    let mailbox = session
        .status(folder, "(UIDVALIDITY UIDNEXT)")
        .await
        .map_err(|e| classify(server, "STATUS", e))?;
    let missing = || {
        MailError::Transient(format!(
            "{server} reported no UIDVALIDITY for {folder}; the folder may be being recreated"
        ))
    };
    let validity = mailbox.uid_validity.ok_or_else(missing)?;
    if validity != selected.load(Ordering::SeqCst) {
        let fresh = session
            .select(folder)
            .await
            .map_err(|e| classify(server, "SELECT", e))?;
        selected.store(fresh.uid_validity.ok_or_else(missing)?, Ordering::SeqCst);
        return Ok(fresh);
    }
    Ok(mailbox)
}

/// An IMAP string for a search key, if the text can be searched for exactly: printable
/// ASCII without quotes or backslashes. Anything else is left to the plugin's filter.
fn search_string(text: &str) -> Option<String> {
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
    plain.then(|| format!("\"{text}\""))
}

/// The UID SEARCH keys for messages after `start` that may match `search`.
fn search_query(start: u32, search: &Search) -> String {
    let mut q = format!("UID {}:*", start.saturating_add(1));
    if search.unseen {
        q.push_str(" UNSEEN");
    }
    if let Some(s) = search.sender_contains.as_deref().and_then(search_string) {
        q.push_str(&format!(" FROM {s}"));
    }
    if let Some(s) = search.subject_contains.as_deref().and_then(search_string) {
        q.push_str(&format!(" SUBJECT {s}"));
    }
    if let Some(day) = search.sent_since.as_deref().and_then(imap_date) {
        q.push_str(&format!(" SENTSINCE {day}"));
    }
    q
}

/// `YYYY-MM-DD` as an IMAP date, `2-Nov-2026`.
fn imap_date(day: &str) -> Option<String> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let mut parts = day.splitn(3, '-');
    let y: u32 = parts.next()?.parse().ok()?;
    let m: usize = parts.next()?.parse().ok()?;
    let d: u32 = parts.next()?.parse().ok()?;
    Some(format!("{d}-{}-{y}", MONTHS.get(m.checked_sub(1)?)?))
}

/// `UID FETCH set items`, collected.
async fn uid_fetch(
    session: &mut Session<Wire>,
    server: &str,
    set: impl AsRef<str>,
    items: impl AsRef<str>,
) -> Result<Vec<async_imap::types::Fetch>, MailError> {
    session
        .uid_fetch(set, items)
        .await
        .map_err(|e| classify(server, "UID FETCH", e))?
        .try_collect()
        .await
        .map_err(|e| classify(server, "UID FETCH", e))
}

/// Size and flags of `uids`, for the size cap.
async fn sizes(
    session: &mut Session<Wire>,
    server: &str,
    uids: &[u32],
) -> Result<Vec<(u32, u64, Vec<String>)>, MailError> {
    let fetched: Vec<_> =
        uid_fetch(session, server, uid_set(uids), "(UID FLAGS RFC822.SIZE)").await?;
    Ok(fetched
        .iter()
        .filter_map(|f| {
            let uid = f.uid?;
            uids.contains(&uid).then(|| {
                (
                    uid,
                    f.size.map(u64::from).unwrap_or_default(),
                    f.flags().filter_map(|fl| flag_text(&fl)).collect(),
                )
            })
        })
        .collect())
}

/// The section numbers of the inline text parts of a body structure.
fn text_parts(body: &BodyStructure<'_>, path: Vec<u32>, out: &mut Vec<Vec<u32>>) {
    match body {
        BodyStructure::Text { common, .. } => {
            let attachment = common
                .disposition
                .as_ref()
                .is_some_and(|d| d.ty.eq_ignore_ascii_case("attachment"));
            let sub = common.ty.subtype.to_ascii_lowercase();
            if !attachment && (sub == "plain" || sub == "html") {
                out.push(if path.is_empty() { vec![1] } else { path });
            }
        }
        BodyStructure::Multipart { bodies, .. } => {
            for (i, b) in bodies.iter().enumerate() {
                let mut p = path.clone();
                p.push(i as u32 + 1);
                text_parts(b, p, out);
            }
        }
        BodyStructure::Basic { .. } | BodyStructure::Message { .. } => {}
    }
}

/// A message over the cap, fetched without attachments: its header, then each text part
/// (its MIME header and at most `cap` bytes of its body).
async fn fetch_without_attachments(
    session: &mut Session<Wire>,
    server: &str,
    uid: u32,
    cap: u64,
) -> Result<Vec<u8>, MailError> {
    let first: Vec<_> = uid_fetch(
        session,
        server,
        uid.to_string(),
        "(UID BODYSTRUCTURE BODY.PEEK[HEADER])",
    )
    .await?;
    let Some(f) = first.iter().find(|f| f.uid == Some(uid)) else {
        return Err(MailError::NotFound(format!(
            "no message with UID {uid} on {server}"
        )));
    };
    let header = f.header().unwrap_or_default().to_vec();
    let single = !matches!(f.bodystructure(), Some(BodyStructure::Multipart { .. }));
    let mut sections = Vec::new();
    if let Some(b) = f.bodystructure() {
        text_parts(b, Vec::new(), &mut sections);
    }
    let mut parts = Vec::new();
    for section in sections {
        let name = section
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(".");
        let items = if single {
            format!("(UID BODY.PEEK[TEXT]<0.{cap}>)")
        } else {
            format!("(UID BODY.PEEK[{name}.MIME] BODY.PEEK[{name}]<0.{cap}>)")
        };
        let got: Vec<_> = uid_fetch(session, server, uid.to_string(), items).await?;
        let Some(g) = got.iter().find(|g| g.uid == Some(uid)) else {
            continue;
        };
        let (mime_header, body) = if single {
            (strip::content_fields(&header), g.text().unwrap_or_default())
        } else {
            (
                g.section(&SectionPath::Part(
                    section.clone(),
                    Some(MessageSection::Mime),
                ))
                .unwrap_or_default()
                .to_vec(),
                g.section(&SectionPath::Part(section.clone(), None))
                    .unwrap_or_default(),
            )
        };
        let cut = usize::try_from(cap).unwrap_or(usize::MAX);
        parts.push(TextPart {
            mime_header,
            body: strip::cut(body, cut).to_vec(),
        });
    }
    Ok(strip::assemble(&header, &parts))
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
    let fetched: Vec<_> = uid_fetch(
        session,
        server,
        uid_set(uids),
        "(UID FLAGS RFC822.SIZE BODY.PEEK[])",
    )
    .await?;
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
                content: Content::Complete,
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
        search: Search,
        cap: Option<SizeCap>,
    ) -> BoxFuture<'_, Result<Batch, MailError>> {
        let server = self.server();
        let folder = self.folder.clone();
        let selected = self.selected.clone();
        Box::pin(self.with_session(move |session| {
            let (server, folder, search, selected) = (
                server.clone(),
                folder.clone(),
                search.clone(),
                selected.clone(),
            );
            Box::pin(async move {
                // Selecting again reports the folder's current UIDVALIDITY and size.
                let mailbox = status(session, &server, &folder, &selected).await?;
                let validity = mailbox.uid_validity.unwrap_or_default();
                let start = match after {
                    Some(c) if c.uid_validity == validity => c.last_uid,
                    _ => 0,
                };
                let mut uids: Vec<u32> = session
                    .uid_search(search_query(start, &search))
                    .await
                    .map_err(|e| classify(&server, "UID SEARCH", e))?
                    .into_iter()
                    .filter(|u| *u > start)
                    .collect();
                uids.sort_unstable();
                let more = uids.len() > limit as usize;
                uids.truncate(limit as usize);
                // Every UID below UIDNEXT as of the SELECT was searched; when nothing was
                // cut off, the batch accounts for all of them, matching or not.
                let highest = uids.last().copied().unwrap_or(start);
                let scanned_to = if more {
                    highest
                } else {
                    highest.max(mailbox.uid_next.unwrap_or(1).saturating_sub(1))
                };
                let messages = match cap {
                    None => fetch_raw(session, &server, &uids).await?,
                    Some(cap) => {
                        let listed = sizes(session, &server, &uids).await?;
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
                            messages.push(RawMessage {
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
                Ok(Batch {
                    uid_validity: validity,
                    messages,
                    more,
                    scanned_to,
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

    fn count_after(&self, after: Option<Cursor>) -> BoxFuture<'_, Result<u64, MailError>> {
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
