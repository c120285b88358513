//! Turns raw messages into `received-message`s, and refuses malformed ones with a reason.

use mail_parser::{Addr, HeaderName, Message, MessageParser, MimeHeaders, PartType};

use crate::mailbox::{Content, RawMessage};
use crate::types::{Address, Attachment, AttachmentInfo, ReceivedMessage};

/// Parses `raw`, or says why it is malformed.
pub fn parse(raw: &RawMessage) -> Result<ReceivedMessage, String> {
    let omitted = match raw.content {
        Content::Complete => false,
        Content::WithoutAttachments => true,
        Content::Omitted => return Err("was not fetched".into()),
    };
    let message = parse_checked(&raw.data)?;
    let sender = message.from().and_then(|a| a.first()).and_then(to_address);
    let list = |a: Option<&mail_parser::Address<'_>>| -> Vec<Address> {
        a.map(|a| a.iter().filter_map(to_address).collect())
            .unwrap_or_default()
    };
    let date = message
        .date()
        .map(|d| mail_parser::DateTime::from_timestamp(d.to_timestamp()).to_rfc3339());
    let attachments = attachments_of(&message)
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
    Ok(ReceivedMessage {
        id: raw.id.clone(),
        message_id: message.message_id().map(clean),
        sender,
        to: list(message.to()),
        cc: list(message.cc()),
        date,
        subject: clean(message.subject().unwrap_or_default()),
        text: message.body_text(0).map(|t| t.into_owned()),
        html: html.filter(|h| !h.is_empty()),
        attachments: if omitted { Vec::new() } else { attachments },
        flags: raw.flags.clone(),
        size: raw.size,
        attachments_omitted: omitted,
    })
}

/// The attachments of `raw`, with their decoded bytes, for forwarding.
pub fn attachments(raw: &RawMessage) -> Result<Vec<Attachment>, String> {
    if raw.content != Content::Complete {
        return Err("came without its attachments".into());
    }
    let message = parse_checked(&raw.data)?;
    Ok(attachments_of(&message)
        .map(|(name, content_type, data)| Attachment {
            name,
            content_type,
            data: data.to_vec(),
            content_id: None,
        })
        .collect())
}

fn attachments_of<'m>(
    message: &'m Message<'m>,
) -> impl Iterator<Item = (String, String, &'m [u8])> + 'm {
    message.attachments().enumerate().map(|(i, part)| {
        // What a sender wrote is made usable here, so that forwarding it never fails the
        // checks of an outgoing attachment: the last path segment of the name, without
        // control characters, and a MIME type, or application/octet-stream.
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
            .unwrap_or_else(|| format!("attachment-{i}"));
        let content_type = part
            .content_type()
            .and_then(|ct| ct.subtype().map(|sub| format!("{}/{}", ct.ctype(), sub)))
            .map(|t| t.to_ascii_lowercase())
            .filter(|t| is_mime_type(t))
            .unwrap_or_else(|| "application/octet-stream".to_owned());
        (name, content_type, part.contents())
    })
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

/// Parses and applies the checks that make a message usable: mail-parser itself accepts
/// nearly any bytes, so these catch what would otherwise arrive silently mangled.
fn parse_checked(data: &[u8]) -> Result<Message<'_>, String> {
    // An mbox `From ` separator line before the header is dropped, as mail readers do.
    let data = match data.strip_prefix(b"From ") {
        Some(rest) => rest
            .iter()
            .position(|b| *b == b'\n')
            .map_or(&data[data.len()..], |n| &rest[n + 1..]),
        None => data,
    };
    let first_line = data.split(|b| *b == b'\n').next().unwrap_or_default();
    let looks_like_header = first_line
        .iter()
        .position(|b| *b == b':')
        .is_some_and(|colon| {
            colon > 0 && first_line[..colon].iter().all(|b| (33..=126).contains(b))
        });
    if !looks_like_header {
        return Err("does not start with a header field; it is not an RFC 5322 message".into());
    }
    let message = MessageParser::default()
        .parse(data)
        .ok_or_else(|| "could not be parsed as an RFC 5322 message".to_owned())?;
    if message.header(HeaderName::From).is_none() {
        return Err("has no From header".into());
    }
    if message
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .is_none()
    {
        return Err("has a From header without a valid address".into());
    }
    let depth = multipart_depth(&message);
    if depth > MAX_DEPTH {
        return Err(format!(
            "has multiparts nested {depth} deep, over the limit of {MAX_DEPTH}; no mail client builds such a message"
        ));
    }
    let closings = ClosingDelimiters::scan(data);
    for part in &message.parts {
        if part.is_encoding_problem {
            return Err("has a body part whose transfer encoding is broken".into());
        }
        if let PartType::Multipart(_) = part.body {
            let boundary = part.content_type().and_then(|ct| ct.attribute("boundary"));
            let Some(boundary) = boundary else {
                return Err("has a multipart body without a boundary".into());
            };
            if !closings.within(
                boundary.as_bytes(),
                part.offset_body as usize,
                part.offset_end as usize,
            ) {
                return Err(format!(
                    "has a multipart body that is truncated: its closing boundary `--{boundary}--` is missing"
                ));
            }
        }
    }
    Ok(message)
}

/// How deeply multiparts may nest: real mail stays in single digits; beyond this a message
/// is built to exhaust its readers.
pub const MAX_DEPTH: usize = 64;

/// How deeply the multiparts of `message` nest (0 for a single-part message).
fn multipart_depth(message: &Message<'_>) -> usize {
    let mut deepest = 0;
    let mut todo: Vec<(usize, usize)> = vec![(0, 0)];
    while let Some((index, depth)) = todo.pop() {
        if let Some(PartType::Multipart(children)) = message.parts.get(index).map(|p| &p.body) {
            deepest = deepest.max(depth + 1);
            // Each part is listed by one parent, so this visits every part once.
            todo.extend(children.iter().map(|c| (*c as usize, depth + 1)));
        }
    }
    deepest
}

/// Where the closing delimiters (`--boundary--` at the start of a line) of a message are,
/// found in one pass, so that checking every multipart costs no more than reading the
/// message once.
struct ClosingDelimiters<'a> {
    at: std::collections::HashMap<&'a [u8], Vec<usize>>,
}

impl<'a> ClosingDelimiters<'a> {
    fn scan(data: &'a [u8]) -> Self {
        let mut at: std::collections::HashMap<&'a [u8], Vec<usize>> =
            std::collections::HashMap::new();
        let mut start = 0;
        while start < data.len() {
            let end = data[start..]
                .iter()
                .position(|b| *b == b'\n')
                .map_or(data.len(), |n| start + n);
            let line = data[start..end].trim_ascii_end();
            if line.len() >= 4 && line.starts_with(b"--") && line.ends_with(b"--") {
                at.entry(&line[2..line.len() - 2]).or_default().push(start);
            }
            start = end + 1;
        }
        Self { at }
    }

    /// Whether the closing delimiter of `boundary` starts a line in `from..to`.
    fn within(&self, boundary: &[u8], from: usize, to: usize) -> bool {
        self.at.get(boundary).is_some_and(|lines| {
            // The positions are ascending: the first at or after `from` decides.
            let i = lines.partition_point(|p| *p < from);
            lines.get(i).is_some_and(|p| *p < to)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(uid: u32, s: &str) -> RawMessage {
        RawMessage {
            id: format!("1:{uid}"),
            flags: vec![],
            size: s.len() as u64,
            data: s.as_bytes().to_vec(),
            content: Content::Complete,
        }
    }

    #[test]
    fn parses_a_multipart_with_attachment() {
        let m = "From: Alert Bot <bot@example.com>\r\nTo: ops@example.com\r\nSubject: =?UTF-8?B?w6TDtsO8?=\r\n\
                 Date: Tue, 3 Nov 2026 10:00:00 +0100\r\nMessage-ID: <a1@example.com>\r\n\
                 Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nhello\r\n\
                 --b1\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"r.pdf\"\r\n\
                 Content-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--b1--\r\n";
        let r = parse(&raw(7, m)).unwrap();
        assert_eq!(r.id, "1:7");
        assert_eq!(r.subject, "äöü");
        assert_eq!(r.date.as_deref(), Some("2026-11-03T09:00:00Z"));
        assert_eq!(r.message_id.as_deref(), Some("a1@example.com"));
        assert_eq!(
            r.sender.as_ref().map(|a| a.email.as_str()),
            Some("bot@example.com")
        );
        assert_eq!(r.text.as_deref().map(str::trim), Some("hello"));
        assert_eq!(r.attachments.len(), 1);
        assert_eq!(r.attachments[0].name, "r.pdf");
        assert_eq!(r.attachments[0].content_type, "application/pdf");
        let a = attachments(&raw(7, m)).unwrap();
        assert_eq!(a[0].data, b"%PDF-");
    }

    #[test]
    fn refuses_malformed_messages() {
        for (m, needle) in [
            ("just some text\r\nwithout headers\r\n", "header field"),
            ("Subject: x\r\n\r\nbody\r\n", "no From"),
            (
                "From: not an address\r\nSubject: x\r\n\r\nbody\r\n",
                "without a valid address",
            ),
            (
                "From: a@example.com\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\nContent-Type: text/plain\r\n\r\ncut off",
                "truncated",
            ),
        ] {
            let err = parse(&raw(1, m)).unwrap_err();
            assert!(err.contains(needle), "{m:?}: {err}");
        }
    }

    /// A multipart nested `depth` deep, each level closed properly, with a text leaf.
    fn nested(depth: usize) -> String {
        let mut m = String::from("From: a@example.com\r\nSubject: deep\r\n");
        for level in 0..depth {
            m.push_str(&format!(
                "Content-Type: multipart/mixed; boundary=\"b{level}\"\r\n\r\n--b{level}\r\n"
            ));
        }
        m.push_str("Content-Type: text/plain\r\n\r\nleaf\r\n");
        for level in (0..depth).rev() {
            m.push_str(&format!("--b{level}--\r\n"));
        }
        m
    }

    #[test]
    fn nesting_is_checked_in_one_pass_and_capped() {
        let ok = parse(&raw(1, &nested(10))).unwrap();
        assert_eq!(ok.text.as_deref(), Some("leaf"));
        // 20,000 levels: the check reads the message once, so this is quick, and the
        // message is refused with its depth named.
        let deep = nested(20_000);
        let err = parse(&raw(2, &deep)).unwrap_err();
        assert!(
            err.contains("nested") && err.contains("limit of 64"),
            "{err}"
        );
        let depth: usize = err.split_whitespace().find_map(|w| w.parse().ok()).unwrap();
        assert!(depth > 64, "{err}");
    }

    #[test]
    fn a_closing_delimiter_counts_only_at_the_start_of_a_line_of_its_own_part() {
        // The inner part never closes; the outer closing delimiter does not close it.
        let m = "From: a@example.com\r\nContent-Type: multipart/mixed; boundary=out\r\n\r\n--out\r\n\
                 Content-Type: multipart/alternative; boundary=in\r\n\r\n--in\r\nContent-Type: text/plain\r\n\r\n\
                 text mentioning --in-- mid-line\r\n--out--\r\n";
        let err = parse(&raw(1, m)).unwrap_err();
        assert!(err.contains("`--in--` is missing"), "{err}");
        // Transport padding after a delimiter is allowed.
        let padded = m.replace("--out--\r\n", "--in--  \r\n--out--\t\r\n");
        assert!(parse(&raw(2, &padded)).is_ok());
    }

    #[test]
    fn outside_text_is_made_safe_and_a_text_only_message_has_no_html() {
        let m = "From sender@example.com Mon Nov 23 08:00:00 2026\r\nFrom: Bot\u{1} <bot@example.com>\r\n\
                 Subject: disk\u{0} full\r\n\r\nplain text only\r\n";
        let r = parse(&raw(1, m)).unwrap();
        assert_eq!(r.subject, "disk\u{fffd} full");
        assert_eq!(r.sender.unwrap().name.as_deref(), Some("Bot\u{fffd}"));
        assert_eq!(r.text.as_deref(), Some("plain text only\r\n"));
        assert_eq!(
            r.html, None,
            "mail-parser's rendering of the text is not an HTML part"
        );
        let html = "From: a@example.com\r\nContent-Type: text/html\r\n\r\n<p>hi</p>\r\n";
        assert!(parse(&raw(2, html)).unwrap().html.is_some());
    }
}
