//! Turns raw messages into `received-message`s, and refuses malformed ones with a reason.

use std::borrow::Cow;

use mail_parser::decoders::base64::base64_decode;
use mail_parser::decoders::quoted_printable::quoted_printable_decode;
use mail_parser::{Addr, Encoding, HeaderName, Message, MessagePart, MimeHeaders, PartType};

use crate::mailbox::{Content, RawMessage};
use crate::types::{Address, Attachment, AttachmentInfo, ReceivedMessage};

mod check;

pub use self::check::MAX_DEPTH;
use self::check::read;

/// Parses `raw`, or says why it is malformed.
pub fn parse(raw: &RawMessage) -> Result<ReceivedMessage, String> {
    let omitted = match raw.content {
        Content::Complete => false,
        Content::WithoutAttachments => true,
        Content::Omitted => return Err("was not fetched".into()),
    };
    read(&raw.data, |message| {
        let sender = message.from().and_then(|a| a.first()).and_then(to_address);
        let list = |a: Option<&mail_parser::Address<'_>>| -> Vec<Address> {
            a.map(|a| a.iter().filter_map(to_address).collect())
                .unwrap_or_default()
        };
        let date = message
            .date()
            .map(|d| mail_parser::DateTime::from_timestamp(d.to_timestamp()).to_rfc3339());
        let body = Body::of(message);
        let attachments = body
            .attachments(message)
            .enumerate()
            .map(|(i, (name, content_type, data))| AttachmentInfo {
                index: i as u32,
                name,
                content_type,
                size: data.len() as u64,
            })
            .collect();
        // mail-parser renders a text-only message as HTML too; only a real HTML part counts.
        let has_html = message.html_body.iter().any(|i| {
            message
                .parts
                .get(*i as usize)
                .is_some_and(|p| matches!(p.body, PartType::Html(_)))
        });
        let html = message
            .body_html(0)
            .map(|h| h.into_owned())
            .filter(|_| has_html);
        ReceivedMessage {
            id: raw.id.clone(),
            message_id: message.message_id().map(clean),
            sender,
            to: list(message.to()),
            cc: list(message.cc()),
            date,
            subject: clean(&subject(message)),
            text: body.text(message),
            html: html.filter(|h| !h.is_empty()),
            attachments: if omitted { Vec::new() } else { attachments },
            flags: raw.flags.clone(),
            size: raw.size,
            attachments_omitted: omitted,
        }
    })
}

/// The attachments of `raw`, with their decoded bytes, for forwarding.
pub fn attachments(raw: &RawMessage) -> Result<Vec<Attachment>, String> {
    if raw.content != Content::Complete {
        return Err("came without its attachments".into());
    }
    read(&raw.data, |message| {
        Body::of(message)
            .attachments(message)
            .map(|(name, content_type, data)| Attachment {
                name,
                content_type,
                data: data.into_owned(),
                content_id: None,
            })
            .collect()
    })
}

/// The subject as RFC 5322 §2.2.3 unfolds it: only the line breaks of the folding go, so
/// a folded tab stays a tab. Encoded words (RFC 2047) are left to mail-parser's decoding.
fn subject(message: &Message<'_>) -> String {
    match message.header_raw(HeaderName::Subject) {
        Some(raw) if !raw.contains("=?") => {
            let mut unfolded = String::with_capacity(raw.len());
            let mut rest = raw;
            while let Some(n) = rest.find('\n') {
                unfolded.push_str(rest[..n].strip_suffix('\r').unwrap_or(&rest[..n]));
                rest = &rest[n + 1..];
            }
            unfolded.push_str(rest);
            unfolded.trim_matches([' ', '\t', '\r']).to_owned()
        }
        _ => message.subject().unwrap_or_default().to_owned(),
    }
}

/// Which part is the message's text, and so not an attachment.
///
/// mail-parser lists as attachments some parts that mail readers show as the body: a part
/// whose `Content-Type` is invalid or bare (`text`), which RFC 2045 §5.2 reads as
/// text/plain, and a multipart whose boundary is missing or never appears. When the
/// message has no other text, the first such part not sent as a file is its text.
struct Body {
    text_part: Option<usize>,
}

impl Body {
    fn of(message: &Message<'_>) -> Self {
        let text_part = if message.text_body.is_empty() {
            message
                .attachments
                .iter()
                .map(|i| *i as usize)
                .find(|i| message.parts.get(*i).is_some_and(read_as_text))
        } else {
            None
        };
        Self { text_part }
    }

    fn text(&self, message: &Message<'_>) -> Option<String> {
        match self.text_part.and_then(|i| message.parts.get(i)) {
            Some(part) => Some(match part.text_contents() {
                Some(text) => text.to_owned(),
                None => String::from_utf8_lossy(part.contents()).into_owned(),
            }),
            None => message.body_text(0).map(|t| t.into_owned()),
        }
    }

    fn attachments<'m>(
        &self,
        message: &'m Message<'m>,
    ) -> impl Iterator<Item = (String, String, Cow<'m, [u8]>)> + 'm {
        let text_part = self.text_part;
        let digests = digest_children(message);
        message
            .attachments
            .iter()
            .map(|i| *i as usize)
            .filter(move |i| Some(*i) != text_part)
            .filter_map(|i| message.parts.get(i).map(|part| (i, part)))
            .enumerate()
            .map(move |(n, (i, part))| {
                // What a sender wrote is made usable here, so that forwarding it never fails
                // the checks of an outgoing attachment: the last path segment of the name,
                // without control characters, and the MIME type a reader would give it.
                let name = part
                    .attachment_name()
                    .map(|n| {
                        n.rsplit(['/', '\\'])
                            .next()
                            .unwrap_or_default()
                            .chars()
                            .filter(|c| !c.is_control())
                            .collect::<String>()
                    })
                    .filter(|n| !n.trim().is_empty() && n.trim() != "." && n.trim() != "..")
                    .unwrap_or_else(|| format!("attachment-{n}"));
                let in_digest = digests.binary_search(&i).is_ok();
                (
                    name,
                    reader_type(part, in_digest),
                    file_bytes(message, part),
                )
            })
    }
}

/// The bytes of an attachment as its sender attached them.
///
/// mail-parser turns a text part into UTF-8 through its charset, replacing what does not
/// decode; a file's bytes must not change (a Latin-1 CSV, a text file with stray bytes),
/// so a text part's body is decoded from its transfer encoding again, without the charset.
/// Should that fail, the reader's text stands.
fn file_bytes<'m>(message: &'m Message<'m>, part: &'m MessagePart<'m>) -> Cow<'m, [u8]> {
    if !matches!(part.body, PartType::Text(_) | PartType::Html(_)) {
        return Cow::Borrowed(part.contents());
    }
    let Some(raw) = message
        .raw_message
        .get(part.offset_body as usize..part.offset_end as usize)
    else {
        return Cow::Borrowed(part.contents());
    };
    let decoded = match part.encoding {
        Encoding::Base64 => base64_decode(raw).map(Cow::Owned),
        Encoding::QuotedPrintable => quoted_printable_decode(raw).map(Cow::Owned),
        Encoding::None => Some(Cow::Borrowed(raw)),
    };
    decoded.unwrap_or(Cow::Borrowed(part.contents()))
}

/// The parts that are direct children of a `multipart/digest`, sorted.
fn digest_children(message: &Message<'_>) -> Vec<usize> {
    let mut children: Vec<usize> = message
        .parts
        .iter()
        .filter(|p| {
            p.content_type().is_some_and(|ct| {
                ct.ctype().eq_ignore_ascii_case("multipart")
                    && ct
                        .subtype()
                        .is_some_and(|s| s.eq_ignore_ascii_case("digest"))
            })
        })
        .filter_map(|p| match &p.body {
            PartType::Multipart(children) => Some(children),
            _ => None,
        })
        .flatten()
        .map(|c| *c as usize)
        .collect();
    children.sort_unstable();
    children
}

/// The declared `type/subtype` of a part, lowercase, when it is a valid one.
fn declared_type(part: &MessagePart<'_>) -> Option<String> {
    part.content_type()
        .and_then(|ct| ct.subtype().map(|sub| format!("{}/{}", ct.ctype(), sub)))
        .map(|t| t.to_ascii_lowercase())
        .filter(|t| is_mime_type(t))
}

/// The MIME type a mail reader gives a part: an invalid or bare type is text/plain
/// (RFC 2045 §5.2), as is a multipart that could not be split into parts; a part without a
/// type is message/rfc822 in a digest (RFC 2046 §5.1.5) and text/plain elsewhere.
fn reader_type(part: &MessagePart<'_>, in_digest: bool) -> String {
    match declared_type(part) {
        Some(t) if t.starts_with("multipart/") && !matches!(part.body, PartType::Multipart(_)) => {
            "text/plain".to_owned()
        }
        Some(t) => t,
        None if part.content_type().is_none() && in_digest => "message/rfc822".to_owned(),
        None => "text/plain".to_owned(),
    }
}

/// Whether mail readers show this part, which mail-parser took for an attachment, as text:
/// it is not sent as a file, and its type is invalid or a multipart that has no parts.
fn read_as_text(part: &MessagePart<'_>) -> bool {
    let sent_as_file = part.attachment_name().is_some()
        || part
            .content_disposition()
            .is_some_and(|d| d.ctype().eq_ignore_ascii_case("attachment"));
    let mistyped = part.content_type().is_some() && declared_type(part).is_none();
    let unsplit = !matches!(part.body, PartType::Multipart(_))
        && declared_type(part).is_some_and(|t| t.starts_with("multipart/"));
    !sent_as_file && (mistyped || unsplit)
}

/// `type/subtype`, each a token of RFC 2045.
pub fn is_mime_type(t: &str) -> bool {
    t.split_once('/').is_some_and(|(t, s)| {
        let token = |x: &str| {
            !x.is_empty()
                && x.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
        };
        token(t) && token(s)
    })
}

fn to_address(a: &Addr<'_>) -> Option<Address> {
    a.address().map(|email| Address {
        name: a.name().map(clean),
        email: clean(email),
    })
}

/// A header value from outside, with NUL and other control characters (a tab aside)
/// replaced, so that a workflow can quote it in a header of its own.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\t' {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
