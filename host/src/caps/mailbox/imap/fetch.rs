//! The IMAP commands behind reading: flags, UID sets, fetching whole messages, and
//! fetching big ones without their attachments.

use async_imap::Session;
use async_imap::imap_proto::{BodyStructure, MessageSection, SectionPath};
use async_imap::types::Flag as ImapFlag;
use futures_util::TryStreamExt;

use super::failure::{Failure, classify};
use crate::bindings::MailError;
use crate::bindings::mailbox::{Content, Flag};
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

/// `UID STORE uids change`, its answers read and dropped (`.SILENT` changes send none).
pub(super) async fn store_flags(
    session: &mut Session<Stream>,
    server: &str,
    uids: &[u32],
    change: impl AsRef<str>,
) -> Result<(), MailError> {
    let _: Vec<_> = session
        .uid_store(uid_set(uids), change)
        .await
        .map_err(|e| classify(server, "UID STORE", e))?
        .try_collect()
        .await
        .map_err(|e| classify(server, "UID STORE", e))?;
    Ok(())
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
