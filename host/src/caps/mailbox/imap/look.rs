//! The look at a folder: its state (UIDVALIDITY, UIDNEXT) and the search for what is new,
//! sent together in one round trip, with the sizes where the server saves searches.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use async_imap::Session;
use async_imap::imap_proto::{AttributeValue, MailboxDatum, Response, Status, StatusAttribute};
use async_imap::types::Flag as ImapFlag;

use super::failure::{Failure, classify};
use super::fetch::flag_text;
use crate::bindings::MailError;
use crate::bindings::mailbox::Search;
use crate::net::Stream;

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
/// look asked for them in the same round trip, their sizes and flags, and the whole
/// text of the first messages past the cursor that are small enough to come whole.
pub(super) struct Look {
    pub(super) mailbox: async_imap::types::Mailbox,
    pub(super) found: Vec<u32>,
    pub(super) sizes: Option<Vec<(u32, u64, Vec<String>)>>,
    pub(super) bodies: Vec<(u32, Vec<u8>)>,
}

/// How many messages past the cursor a look with the sizes also reads ahead, and at most
/// how many bytes of each. A message shorter than the bytes asked for came whole and
/// needs no FETCH of its own; a longer one is fetched as before, so a look reads ahead
/// at most a quarter of a megabyte that may go unused.
pub(super) const AHEAD_MESSAGES: u32 = 4;
pub(super) const AHEAD_BYTES: usize = 64 * 1024;

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
/// With `ahead` (for a server that offers SEARCHRES, RFC 5182), the search saves its
/// result on the server (`RETURN (SAVE)`) and `UID FETCH $ (UID FLAGS RFC822.SIZE)` goes
/// out in the same round trip, so the sizes a size cap needs come without a round trip
/// of their own; the UIDs found are those the FETCH names. Behind it goes a FETCH of
/// at most [`AHEAD_BYTES`] of each message in the UID range `ahead` (the few just past
/// the cursor, whether the search finds them or not, so the bytes read ahead stay
/// bounded however many messages arrived): those shorter than that came whole and are
/// in [`Look::bodies`], so news of a small message is read in this one round trip. When
/// the first command the server refuses is one of these three, `saves` is cleared: the
/// server names SEARCHRES but does not keep its promise, and the caller looks the old
/// way. A refused NOOP or STATUS leaves it set. A command the server refuses does not
/// leave the others' answers unread on the connection: every answer is read before the
/// first refusal is returned.
pub(super) async fn status_and_search(
    session: &mut Session<Stream>,
    server: &str,
    folder: &str,
    (selected, heard, saves): (&AtomicU32, &AtomicBool, &AtomicBool),
    query: impl Fn(u32) -> String,
    ahead: Option<std::ops::RangeInclusive<u32>>,
) -> Result<Look, MailError> {
    let with_sizes = ahead.is_some();
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
    match &ahead {
        Some(range) => sent.extend([
            ("UID SEARCH", format!("UID SEARCH RETURN (SAVE) {search}")),
            (
                "UID FETCH",
                "UID FETCH $ (UID FLAGS RFC822.SIZE)".to_owned(),
            ),
            (
                "UID FETCH",
                format!(
                    "UID FETCH {}:{} (UID BODY.PEEK[]<0.{AHEAD_BYTES}>)",
                    range.start(),
                    range.end()
                ),
            ),
        ]),
        None => sent.push(("UID SEARCH", format!("UID SEARCH {search}"))),
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
    let mut bodies = Vec::new();
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
                refused.get_or_insert_with(|| {
                    // The saved search, its FETCH or the read ahead.
                    if with_sizes && index >= 2 {
                        saves.store(false, Ordering::SeqCst);
                    }
                    classify(server, what, error)
                });
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
            // Only the FETCHes after the search, once it has answered, name found
            // messages: a FETCH among NOOP's answers is news of a flag. Each found
            // message comes with its UID and size, which a flag's news lacks; each
            // message read ahead with its UID and the first bytes of its text, and
            // names no found message even if the server sent its size unasked (the
            // read ahead covers messages whether the search found them or not).
            Response::Fetch(_, attributes) if with_sizes && answered >= 3 => {
                let (mut uid, mut size, mut flags, mut text) = (None, None, Vec::new(), None);
                let read_ahead = attributes
                    .iter()
                    .any(|a| matches!(a, AttributeValue::BodySection { .. }));
                for attribute in attributes {
                    match attribute {
                        AttributeValue::Uid(u) => uid = Some(*u),
                        AttributeValue::Rfc822Size(n) => size = Some(u64::from(*n)),
                        AttributeValue::Flags(raw) => flags.extend(
                            raw.iter()
                                .filter_map(|f| flag_text(&ImapFlag::from(f.as_ref()))),
                        ),
                        AttributeValue::BodySection {
                            section: None,
                            index: Some(0),
                            data: Some(data),
                        } => text = Some(data),
                        _ => {}
                    }
                }
                if let (Some(uid), Some(size), false) = (uid, size, read_ahead) {
                    uids.push(uid);
                    sizes.push((uid, size, flags));
                }
                // Fewer bytes than asked for: the server had no more, the text is whole.
                if let (Some(uid), Some(text)) = (uid, text)
                    && text.len() < AHEAD_BYTES
                    && ahead.as_ref().is_some_and(|r| r.contains(&uid))
                {
                    bodies.push((uid, text.to_vec()));
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
                bodies: Vec::new(),
            })
        }
        None => Ok(Look {
            mailbox,
            found: uids,
            sizes: with_sizes.then_some(sizes),
            bodies,
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
