//! Turns raw messages into `received-message`s, and refuses malformed ones with a reason.

use std::borrow::Cow;

use mail_parser::decoders::base64::base64_decode;
use mail_parser::decoders::quoted_printable::quoted_printable_decode;
use mail_parser::{
    Addr, Encoding, HeaderName, Message, MessageParser, MessagePart, MimeHeaders, PartType,
};

use crate::mailbox::{Content, RawMessage};
use crate::types::{Address, Attachment, AttachmentInfo, ReceivedMessage};

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

/// Parses `data` as mail readers do, applies the checks that make a message usable, and
/// hands the message to `f`.
///
/// mail-parser itself accepts nearly any bytes, so the checks catch what would otherwise
/// arrive silently mangled. A part whose header runs into its body without the empty line
/// between them is mended first, as Python's `email` package does, so its text is kept.
fn read<R>(data: &[u8], f: impl FnOnce(&Message<'_>) -> R) -> Result<R, String> {
    // An mbox `From ` separator line before the header is dropped, as mail readers do.
    let data = match data.strip_prefix(b"From ") {
        Some(rest) => rest
            .iter()
            .position(|b| *b == b'\n')
            .map_or(&data[data.len()..], |n| &rest[n + 1..]),
        None => data,
    };
    let first_line = data.split(|b| *b == b'\n').next().unwrap_or_default();
    if !is_header_field(first_line) {
        return Err("does not start with a header field; it is not an RFC 5322 message".into());
    }
    let parse = |data| {
        MessageParser::default()
            .parse(data)
            .ok_or_else(|| "could not be parsed as an RFC 5322 message".to_owned())
    };
    let message = parse(data)?;
    match mended(data, &message) {
        None => {
            check(data, &message)?;
            Ok(f(&message))
        }
        Some(mended) => {
            drop(message);
            let message = parse(&mended)?;
            check(&mended, &message)?;
            Ok(f(&message))
        }
    }
}

/// `Name: value`, the start of a header field (obsolete syntax allows blanks before `:`).
fn is_header_field(line: &[u8]) -> bool {
    line.iter().position(|b| *b == b':').is_some_and(|colon| {
        let name = line[..colon].trim_ascii_end();
        !name.is_empty() && name.iter().all(|b| (33..=126).contains(b))
    })
}

/// `data` with the missing empty lines between headers and bodies put in, or `None` when
/// nothing is missing. A header ends at the first line that is neither a field nor a
/// continuation; a message that is all header gets an empty body. One pass over the lines.
fn mended(data: &[u8], message: &Message<'_>) -> Option<Vec<u8>> {
    let boundaries: std::collections::HashSet<&[u8]> = message
        .parts
        .iter()
        .filter_map(|p| p.content_type())
        .filter(|ct| ct.ctype().eq_ignore_ascii_case("multipart"))
        .filter_map(|ct| ct.attribute("boundary"))
        .map(str::as_bytes)
        .collect();
    let mut inserts: Vec<usize> = Vec::new();
    // Whether the line being read belongs to a header, and whether that is the message's.
    let mut in_header = true;
    let mut top = true;
    let mut start = 0;
    while start < data.len() {
        let end = data[start..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(data.len(), |n| start + n);
        let line = data[start..end]
            .strip_suffix(b"\r")
            .unwrap_or(&data[start..end]);
        let delimiter = line.strip_prefix(b"--").map(|rest| rest.trim_ascii_end());
        if let Some(rest) = delimiter.filter(|rest| {
            boundaries.contains(rest)
                || rest
                    .strip_suffix(b"--")
                    .is_some_and(|b| boundaries.contains(b))
        }) {
            // A delimiter starts a part's header; a closing one ends the multipart.
            in_header = boundaries.contains(rest);
            top = false;
        } else if in_header {
            if line.is_empty() {
                in_header = false;
            } else if !(line.starts_with(b" ") || line.starts_with(b"\t") || is_header_field(line))
            {
                inserts.push(start);
                in_header = false;
            }
        }
        start = end + 1;
    }
    let all_header = in_header && top;
    if inserts.is_empty() && !all_header {
        return None;
    }
    let newline: &[u8] = if data.windows(2).any(|w| w == b"\r\n") {
        b"\r\n"
    } else {
        b"\n"
    };
    let mut out = Vec::with_capacity(data.len() + newline.len() * (inserts.len() + 2));
    let mut from = 0;
    for at in inserts {
        out.extend_from_slice(&data[from..at]);
        out.extend_from_slice(newline);
        from = at;
    }
    out.extend_from_slice(&data[from..]);
    if all_header {
        if !out.ends_with(b"\n") {
            out.extend_from_slice(newline);
        }
        out.extend_from_slice(newline);
    }
    Some(out)
}

/// The checks a parsed message must pass, each failure naming the defect.
fn check(data: &[u8], message: &Message<'_>) -> Result<(), String> {
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
    let parents = parents(message);
    let depth = multipart_depth(message);
    if depth > MAX_DEPTH {
        return Err(format!(
            "has multiparts nested {depth} deep, over the limit of {MAX_DEPTH}; no mail client builds such a message"
        ));
    }
    let closings = ClosingDelimiters::scan(data);
    let boundary = |part: &MessagePart<'_>| {
        part.content_type()
            .and_then(|ct| ct.attribute("boundary"))
            .map(str::to_owned)
    };
    for (index, part) in message.parts.iter().enumerate() {
        if !matches!(part.body, PartType::Multipart(_)) {
            continue;
        }
        let Some(own) = boundary(part) else { continue };
        // Nesting is capped above, so walking up costs at most MAX_DEPTH steps.
        let mut up = parents.get(index).copied().flatten();
        while let Some(parent) = up {
            if message.parts.get(parent).and_then(boundary).as_deref() == Some(own.as_str()) {
                return Err(format!(
                    "has a nested multipart that reuses the boundary `{own}` of a multipart \
                     around it, which RFC 2046 §5.1.1 forbids: its parts cannot be told apart"
                ));
            }
            up = parents.get(parent).copied().flatten();
        }
        if !closings.within(
            own.as_bytes(),
            part.offset_body as usize,
            part.offset_end as usize,
        ) {
            return Err(format!(
                "has a multipart body that is truncated: its closing boundary `--{own}--` is missing"
            ));
        }
    }
    for part in &message.parts {
        if part.is_encoding_problem {
            let declared = part
                .content_transfer_encoding()
                .map(|e| e.trim().to_ascii_lowercase())
                .filter(|e| e == "base64" || e == "quoted-printable");
            return Err(match declared {
                Some(encoding) => {
                    format!("has a body part whose {encoding} transfer encoding is broken")
                }
                None => "has a body part that is cut off: the boundary that should end it \
                         never comes, so the message is truncated"
                    .into(),
            });
        }
    }
    Ok(())
}

/// How deeply multiparts may nest: real mail stays in single digits; beyond this a message
/// is built to exhaust its readers.
pub const MAX_DEPTH: usize = 64;

/// Each part's parent multipart, by index.
fn parents(message: &Message<'_>) -> Vec<Option<usize>> {
    let mut parents = vec![None; message.parts.len()];
    for (index, part) in message.parts.iter().enumerate() {
        if let PartType::Multipart(children) = &part.body {
            for child in children {
                if let Some(slot) = parents.get_mut(*child as usize) {
                    *slot = Some(index);
                }
            }
        }
    }
    parents
}

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

    #[test]
    fn a_bare_or_invalid_content_type_is_read_as_text_plain() {
        for ct in ["text", "foo bar", "text/"] {
            let m = format!("From: a@example.com\r\nContent-Type: {ct}\r\n\r\nhello body\r\n");
            let r = parse(&raw(1, &m)).unwrap();
            assert_eq!(r.text.as_deref(), Some("hello body\r\n"), "{ct}");
            assert!(r.attachments.is_empty(), "{ct}: {:?}", r.attachments);
        }
        // Sent as a file, it stays an attachment, typed as a reader would type it.
        let file = "From: a@example.com\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
                    Content-Type: text/plain\r\n\r\nsee file\r\n--b\r\nContent-Type: bogus\r\n\
                    Content-Disposition: attachment; filename=notes\r\n\r\nnotes\r\n--b--\r\n";
        let r = parse(&raw(2, file)).unwrap();
        assert_eq!(r.text.as_deref(), Some("see file"));
        assert_eq!(r.attachments[0].name, "notes");
        assert_eq!(r.attachments[0].content_type, "text/plain");
    }

    #[test]
    fn a_multipart_that_cannot_be_split_is_one_text_body() {
        let no_boundary = "From: a@example.com\r\nContent-Type: multipart/mixed\r\n\r\nhello body\r\n--x\r\nmore\r\n";
        let never = "From: a@example.com\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\nhello body\r\nmore\r\n";
        for (m, text) in [
            (no_boundary, "hello body\r\n--x\r\nmore\r\n"),
            (never, "hello body\r\nmore\r\n"),
        ] {
            let r = parse(&raw(1, m)).unwrap();
            assert_eq!(r.text.as_deref(), Some(text));
            assert!(r.attachments.is_empty(), "{:?}", r.attachments);
        }
    }

    #[test]
    fn the_parts_of_a_digest_are_messages() {
        let m = "From: a@example.com\r\nContent-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\n\
                 From: b@example.com\r\nSubject: inner\r\n\r\ninner body\r\n--d--\r\n";
        let r = parse(&raw(1, m)).unwrap();
        assert_eq!(r.attachments.len(), 1);
        assert_eq!(r.attachments[0].content_type, "message/rfc822");
        let a = attachments(&raw(1, m)).unwrap();
        assert!(a[0].data.starts_with(b"From: b@example.com\r\n"));
    }

    #[test]
    fn a_header_without_its_empty_line_keeps_the_text_after_it() {
        let cases = [
            // A part with no header at all, and one whose header runs into its body.
            (
                "From: a@example.com\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
                 no header here\r\n--b\r\nContent-Type: text/plain\r\n\r\nsecond\r\n--b--\r\n",
                "no header here",
            ),
            (
                "From: a@example.com\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
                 Content-Type: text/plain\r\nhello there\r\n--b--\r\n",
                "hello there",
            ),
            // The message's own header, in LF-only mail.
            (
                "From: a@example.com\nSubject: x\nbody text here\nmore\n",
                "body text here\nmore\n",
            ),
        ];
        for (m, text) in cases {
            let r = parse(&raw(1, m)).unwrap_or_else(|e| panic!("{m:?}: {e}"));
            assert_eq!(r.text.as_deref(), Some(text), "{m:?}");
        }
        // A message that is all header is valid (RFC 5322 §3.5): it has no body.
        let r = parse(&raw(2, "From: a@example.com\r\nSubject: header only\r\n")).unwrap();
        assert_eq!(r.subject, "header only");
        assert!(r.text.unwrap_or_default().is_empty());
    }

    #[test]
    fn skip_reasons_name_the_real_defect() {
        for (m, needle) in [
            (
                "From: a@example.com\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
                 Content-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n\
                 x\r\n--b--\r\n--b--\r\n",
                "reuses the boundary `b`",
            ),
            (
                "From: a@example.com\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
                 Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n\
                 JVBE*Ri0=!!\r\n--b--\r\n",
                "base64 transfer encoding is broken",
            ),
        ] {
            let err = parse(&raw(1, m)).unwrap_err();
            assert!(err.contains(needle), "{m:?}: {err}");
        }
    }

    #[test]
    fn folding_keeps_the_whitespace_it_folded() {
        let m = "From: a@example.com\r\nSubject: one\r\n\ttwo\r\n  three\r\n\r\nbody\r\n";
        assert_eq!(parse(&raw(1, m)).unwrap().subject, "one\ttwo  three");
        let encoded = "From: a@example.com\r\nSubject: =?UTF-8?Q?caf=C3=A9?=\r\n =?UTF-8?Q?_au_lait?=\r\n\r\nx\r\n";
        assert_eq!(parse(&raw(2, encoded)).unwrap().subject, "café au lait");
    }
}
