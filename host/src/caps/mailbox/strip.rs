//! Messages over the size cap, read without their attachments: the header and the text
//! parts, put together again as one `multipart/mixed` message that any parser reads.

use mail_parser::{MessageParser, MimeHeaders};

/// Fields of the original header that describe the original body, and must not describe
/// the rebuilt one.
const BODY_FIELDS: [&str; 3] = ["content-type", "content-transfer-encoding", "mime-version"];

/// Drops the body-describing fields (with their folded lines) from a header block.
fn header_without_body_fields(header: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(header.len());
    let mut dropping = false;
    for line in header.split_inclusive(|b| *b == b'\n') {
        let trimmed = line.strip_suffix(b"\n").unwrap_or(line);
        let trimmed = trimmed.strip_suffix(b"\r").unwrap_or(trimmed);
        if trimmed.is_empty() {
            break;
        }
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            if !dropping {
                out.extend_from_slice(trimmed);
                out.extend_from_slice(b"\r\n");
            }
            continue;
        }
        let name = trimmed
            .split(|b| *b == b':')
            .next()
            .map(|n| String::from_utf8_lossy(n).trim().to_ascii_lowercase())
            .unwrap_or_default();
        dropping = BODY_FIELDS.contains(&name.as_str());
        if !dropping {
            out.extend_from_slice(trimmed);
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

/// Cuts `body` to at most `cap` bytes, at a line end so that an encoding stays whole.
pub fn cut(body: &[u8], cap: usize) -> &[u8] {
    if body.len() <= cap {
        return body;
    }
    let head = &body[..cap];
    match head.iter().rposition(|b| *b == b'\n') {
        Some(end) => &head[..=end],
        None => head,
    }
}

/// One text part: its MIME header block and its (still encoded) body.
pub struct TextPart {
    pub mime_header: Vec<u8>,
    pub body: Vec<u8>,
}

/// The message's `header` with `parts` as the body of a new `multipart/mixed`.
pub fn assemble(header: &[u8], parts: &[TextPart]) -> Vec<u8> {
    let boundary = "flowmail-attachments-omitted";
    let mut out = header_without_body_fields(header);
    out.extend_from_slice(b"MIME-Version: 1.0\r\n");
    out.extend_from_slice(
        format!("Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n").as_bytes(),
    );
    for part in parts {
        out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        out.extend_from_slice(&header_without_trailing_blank(&part.mime_header));
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&part.body);
        if !part.body.ends_with(b"\n") {
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

fn header_without_trailing_blank(header: &[u8]) -> Vec<u8> {
    let mut h = header.to_vec();
    while h.ends_with(b"\r\n\r\n") || h.ends_with(b"\n\n") {
        h.truncate(h.len() - if h.ends_with(b"\r\n") { 2 } else { 1 });
    }
    if !h.ends_with(b"\n") && !h.is_empty() {
        h.extend_from_slice(b"\r\n");
    }
    h
}

/// `raw` without its attachments: the header, and each plain or HTML body part cut to
/// `part_cap` bytes.
pub fn without_attachments(raw: &[u8], part_cap: usize) -> Vec<u8> {
    let Some(message) = MessageParser::default().parse(raw) else {
        // Not a message at all: keep what looks like its header, for the parser to judge.
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|p| p + 4)
            .unwrap_or(raw.len().min(part_cap));
        return raw[..end].to_vec();
    };
    let slice =
        |from: u32, to: u32| -> &[u8] { raw.get(from as usize..to as usize).unwrap_or_default() };
    let root = message.root_part();
    let header = slice(root.raw_header_offset(), root.raw_body_offset());
    let mut ids: Vec<u32> = message
        .text_body
        .iter()
        .chain(message.html_body.iter())
        .copied()
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let parts: Vec<TextPart> = ids
        .into_iter()
        .filter_map(|id| message.part(id))
        .filter(|p| p.is_text() && p.content_disposition().is_none_or(|d| !d.is_attachment()))
        .map(|p| {
            let mime_header = if p.raw_header_offset() == root.raw_header_offset() {
                // A single-part message: its type fields sit in the message header.
                content_fields(header)
            } else {
                slice(p.raw_header_offset(), p.raw_body_offset()).to_vec()
            };
            TextPart {
                mime_header,
                body: cut(slice(p.raw_body_offset(), p.raw_end_offset()), part_cap).to_vec(),
            }
        })
        .collect();
    assemble(header, &parts)
}

/// The Content-* fields of a header block, for a single-part message's one part.
pub fn content_fields(header: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut keeping = false;
    for line in header.split_inclusive(|b| *b == b'\n') {
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            if keeping {
                out.extend_from_slice(line);
            }
            continue;
        }
        keeping = line
            .get(..8)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"content-"));
        if keeping {
            out.extend_from_slice(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_text_parts_and_drops_attachments() {
        let raw = b"From: a@example.com\r\nSubject: big\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed;\r\n boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhello there\r\n--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=x.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nAAAAAAAAAAAAAAAAAAAAAAAA\r\n--b--\r\n";
        let out = without_attachments(raw, 1000);
        let parsed = MessageParser::default().parse(&out).unwrap();
        assert_eq!(parsed.subject(), Some("big"));
        assert_eq!(parsed.body_text(0).as_deref(), Some("hello there"));
        assert_eq!(parsed.attachment_count(), 0);
        assert!(!String::from_utf8_lossy(&out).contains("AAAA"));
    }

    #[test]
    fn a_single_part_text_message_is_cut() {
        let mut raw = b"From: a@example.com\r\nSubject: long\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n".to_vec();
        for _ in 0..100 {
            raw.extend_from_slice(b"0123456789\r\n");
        }
        let out = without_attachments(&raw, 120);
        let parsed = MessageParser::default().parse(&out).unwrap();
        let text = parsed.body_text(0).unwrap_or_default().into_owned();
        assert!(text.starts_with("0123456789"));
        assert!(text.len() <= 120, "{}", text.len());
    }
}
