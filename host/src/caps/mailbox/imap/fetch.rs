//! The IMAP commands behind reading: flags, UID sets, the folder's state, searches,
//! fetching whole messages, and fetching big ones without their attachments.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use async_imap::Session;
use async_imap::imap_proto::{
    AttributeValue, BodyStructure, MailboxDatum, MessageSection, Response, SectionPath, Status,
    StatusAttribute,
};
use async_imap::types::Flag as ImapFlag;
use futures_util::TryStreamExt;

use super::failure::{Failure, classify};
use crate::bindings::MailError;
use crate::bindings::mailbox::{Content, Flag, Search};
use crate::caps::mailbox::strip::{self, TextPart};
use crate::caps::mailbox::uid::UidMessage;
use crate::net::Stream;

pub(super) fn flag_name(f: Flag) -> &'static str {
    match f {
        Flag::Seen => "\\Seen",
        Flag::Answered => "\\Answered",
        Flag::Flagged => "\\Flagged",
        Flag::Deleted => "\\Deleted",
        Flag::Draft => "\\Draft",
    }
}

/// The message's own flags; `\\Recent` belongs to the session, not the message.
pub(super) fn flag_text(f: &ImapFlag<'_>) -> Option<String> {
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

pub(super) fn uid_set(uids: &[u32]) -> String {
    uids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Fails with `not-found` naming the UIDs of `uids` that no message has, so that a
/// change meant for them is made to none (the WIT's promise); IMAP itself ignores unknown
/// UIDs in STORE and MOVE.
pub(super) async fn require(
    session: &mut Session<Stream>,
    server: &str,
    uids: &[u32],
) -> Result<(), MailError> {
    if uids.is_empty() {
        return Ok(());
    }
    let found = session
        .uid_search(format!("UID {}", uid_set(uids)))
        .await
        .map_err(|e| classify(server, "UID SEARCH", e))?;
    let missing: Vec<u32> = uids
        .iter()
        .copied()
        .filter(|u| !found.contains(u))
        .collect();
    match missing.as_slice() {
        [] => Ok(()),
        [uid] => Err(Failure::NoMessage(*uid).classify(server)),
        many => Err(MailError::NotFound(format!(
            "no messages with UIDs {} on {server}; nothing was changed",
            uid_set(many)
        ))),
    }
}

/// The folder's UIDVALIDITY and UIDNEXT, by STATUS: unlike a new SELECT it keeps the
/// server's caches of the selected folder warm (a SELECT per batch made reading ten times
/// slower). When UIDVALIDITY changed under the session, the folder is selected anew so that
/// UIDs mean the same.
pub(super) async fn status(
    session: &mut Session<Stream>,
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
    Ok(reselected(session, server, folder, selected, &mailbox)
        .await?
        .unwrap_or(mailbox))
}

/// What a look found: the folder's state, the UIDs the search found, and, when the
/// look asked for them in the same round trip, their sizes and flags.
pub(super) struct Look {
    pub(super) mailbox: async_imap::types::Mailbox,
    pub(super) found: Vec<u32>,
    pub(super) sizes: Option<Vec<(u32, u64, Vec<String>)>>,
}

/// The folder's state and the UIDs `query` finds, as [`status`] then a UID SEARCH would
/// give them, in one round trip instead of three: NOOP, STATUS and UID SEARCH go out
/// together (RFC 3501 5.5 lets a client send commands without waiting, and UID
/// commands cannot be misread by an expunge in between) and the server answers them
/// in order. The NOOP still brings the selected folder up to date before the STATUS
/// and the search read it. `query` gives the search for a UIDVALIDITY: first the one the
/// session knows; when the folder's changed, it is selected anew and searched again
/// with the query for the new one. News of messages among the answers (EXISTS,
/// RECENT), which async-imap's own commands leave in the session's unsolicited queue, is
/// told through `heard`, for the next IDLE to look again.
///
/// With `with_sizes` (for a server that offers SEARCHRES, RFC 5182), the search saves
/// its result on the server (`RETURN (SAVE)`) and `UID FETCH $ (UID FLAGS RFC822.SIZE)`
/// goes out in the same round trip, so the sizes a size cap needs come without a round
/// trip of their own; the UIDs found are those the FETCH names. A command the server
/// refuses does not leave the others' answers unread on the connection: every answer is
/// read before the first refusal is returned.
pub(super) async fn status_and_search(
    session: &mut Session<Stream>,
    server: &str,
    folder: &str,
    (selected, heard): (&AtomicU32, &AtomicBool),
    query: impl Fn(u32) -> String,
    with_sizes: bool,
) -> Result<Look, MailError> {
    let quoted = quote(folder).map_err(|c| {
        classify(
            server,
            "STATUS",
            async_imap::error::Error::Validate(async_imap::error::ValidateError(c)),
        )
    })?;
    let search = query(selected.load(Ordering::SeqCst));
    let mut sent = vec![
        ("NOOP", "NOOP".to_owned()),
        ("STATUS", format!("STATUS {quoted} (UIDVALIDITY UIDNEXT)")),
    ];
    if with_sizes {
        sent.push(("UID SEARCH", format!("UID SEARCH RETURN (SAVE) {search}")));
        sent.push((
            "UID FETCH",
            "UID FETCH $ (UID FLAGS RFC822.SIZE)".to_owned(),
        ));
    } else {
        sent.push(("UID SEARCH", format!("UID SEARCH {search}")));
    }
    let mut tags = Vec::with_capacity(sent.len());
    for (what, command) in &sent {
        tags.push(
            session
                .run_command(command)
                .await
                .map_err(|e| classify(server, what, e))?,
        );
    }
    let mut mailbox = async_imap::types::Mailbox::default();
    let mut uids = Vec::new();
    let mut sizes = Vec::new();
    let mut refused = None;
    let mut answered = 0;
    while answered < tags.len() {
        let what = sent.get(answered).map_or("UID SEARCH", |(what, _)| *what);
        let response = session
            .read_response()
            .await
            .map_err(|e| classify(server, what, async_imap::error::Error::Io(e)))?
            .ok_or_else(|| classify(server, what, async_imap::error::Error::ConnectionLost))?;
        match response.parsed() {
            Response::Done {
                tag,
                status,
                outcome,
                ..
            } => {
                let Some(index) = tags.iter().position(|t| t == tag) else {
                    continue;
                };
                answered += 1;
                let what = sent.get(index).map_or(what, |(what, _)| *what);
                let text = || {
                    outcome
                        .information
                        .as_deref()
                        .unwrap_or_default()
                        .to_owned()
                };
                let error = match status {
                    Status::Ok => continue,
                    Status::No => async_imap::error::Error::No(text()),
                    _ => async_imap::error::Error::Bad(text()),
                };
                refused.get_or_insert_with(|| classify(server, what, error));
            }
            Response::MailboxData(MailboxDatum::Status { status, .. }) => {
                for item in status {
                    match item {
                        StatusAttribute::UidValidity(v) => mailbox.uid_validity = Some(*v),
                        StatusAttribute::UidNext(n) => mailbox.uid_next = Some(*n),
                        _ => {}
                    }
                }
            }
            Response::MailboxData(MailboxDatum::Search(found)) if !with_sizes => {
                uids.extend(found.iter());
            }
            // Only the FETCH of the saved result, once the search has answered, names
            // found messages: a FETCH among NOOP's answers is news of a flag. Each found
            // message comes with its UID and size, which a flag's news lacks.
            Response::Fetch(_, attributes) if with_sizes && answered >= 3 => {
                let (mut uid, mut size, mut flags) = (None, None, Vec::new());
                for attribute in attributes {
                    match attribute {
                        AttributeValue::Uid(u) => uid = Some(*u),
                        AttributeValue::Rfc822Size(n) => size = Some(u64::from(*n)),
                        AttributeValue::Flags(raw) => flags.extend(
                            raw.iter()
                                .filter_map(|f| flag_text(&ImapFlag::from(f.as_ref()))),
                        ),
                        _ => {}
                    }
                }
                if let (Some(uid), Some(size)) = (uid, size) {
                    uids.push(uid);
                    sizes.push((uid, size, flags));
                }
            }
            Response::MailboxData(MailboxDatum::Exists(_) | MailboxDatum::Recent(_)) => {
                heard.store(true, Ordering::SeqCst);
            }
            // Other news of the folder (EXPUNGE, FLAGS) needs nothing: the search read
            // the folder as it is.
            _ => {}
        }
    }
    if let Some(refused) = refused {
        return Err(refused);
    }
    match reselected(session, server, folder, selected, &mailbox).await? {
        Some(fresh) => {
            let found = session
                .uid_search(query(fresh.uid_validity.unwrap_or_default()))
                .await
                .map_err(|e| classify(server, "UID SEARCH", e))?;
            Ok(Look {
                mailbox: fresh,
                found: found.into_iter().collect(),
                sizes: None,
            })
        }
        None => Ok(Look {
            mailbox,
            found: uids,
            sizes: with_sizes.then_some(sizes),
        }),
    }
}

/// The folder selected anew when `status` names a UIDVALIDITY other than the session's,
/// so that UIDs mean the same; `None` when it is the same.
async fn reselected(
    session: &mut Session<Stream>,
    server: &str,
    folder: &str,
    selected: &AtomicU32,
    status: &async_imap::types::Mailbox,
) -> Result<Option<async_imap::types::Mailbox>, MailError> {
    let missing = || {
        Failure::NoValidity {
            folder: folder.to_owned(),
        }
        .classify(server)
    };
    if status.uid_validity.ok_or_else(missing)? == selected.load(Ordering::SeqCst) {
        return Ok(None);
    }
    let fresh = session
        .select(folder)
        .await
        .map_err(|e| classify(server, "SELECT", e))?;
    selected.store(fresh.uid_validity.ok_or_else(missing)?, Ordering::SeqCst);
    Ok(Some(fresh))
}

/// `text` as an IMAP quoted string, or the line break that no quoted string may hold.
fn quote(text: &str) -> Result<String, char> {
    match text.chars().find(|c| matches!(c, '\r' | '\n')) {
        Some(c) => Err(c),
        None => Ok(format!(
            "\"{}\"",
            text.replace('\\', "\\\\").replace('"', "\\\"")
        )),
    }
}

/// An IMAP string for a search key, if the text can be searched for exactly: printable
/// ASCII without quotes or backslashes. Anything else is left to the plugin's filter.
pub(super) fn search_string(text: &str) -> Option<String> {
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
    plain.then(|| format!("\"{text}\""))
}

/// The UID SEARCH keys for messages after `start` that may match `search`.
pub(super) fn search_query(start: u32, search: &Search) -> String {
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
pub(super) fn imap_date(day: &str) -> Option<String> {
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
pub(super) async fn uid_fetch(
    session: &mut Session<Stream>,
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
pub(super) async fn sizes(
    session: &mut Session<Stream>,
    server: &str,
    uids: &[u32],
) -> Result<Vec<(u32, u64, Vec<String>)>, MailError> {
    if uids.is_empty() {
        return Ok(Vec::new());
    }
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
pub(super) fn text_parts(body: &BodyStructure<'_>, path: Vec<u32>, out: &mut Vec<Vec<u32>>) {
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
pub(super) async fn fetch_without_attachments(
    session: &mut Session<Stream>,
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
        return Err(Failure::NoMessage(uid).classify(server));
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
pub(super) async fn fetch_raw(
    session: &mut Session<Stream>,
    server: &str,
    uids: &[u32],
) -> Result<Vec<UidMessage>, MailError> {
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
    let mut messages: Vec<UidMessage> = fetched
        .iter()
        .filter_map(|f| {
            let (uid, body) = (f.uid?, f.body()?);
            // A `N:*` style answer may include messages not asked for.
            uids.contains(&uid).then(|| UidMessage {
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
