//! Checks an outgoing message against the account's policy and composes it as MIME.

use std::borrow::Cow;

use mail_builder::MessageBuilder;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::date::Date;
use mail_builder::mime::{BodyPart, MimePart};

use self::encode::{address_header, base64_lines, disposition, unstructured};
use crate::address::{check_address, check_header_text};
use crate::host::invalid;
use crate::transport::{AccountPolicy, Envelope};
use crate::types::{Address, Attachment, MailError, OutgoingMessage};

/// Headers that the composer writes itself and a step may not set.
const RESERVED_HEADERS: &[&str] = &[
    "from",
    "to",
    "cc",
    "bcc",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "sender",
    "mime-version",
    "return-path",
    "received",
];

/// A message ready for the transport.
#[derive(Debug)]
pub struct Composed {
    pub envelope: Envelope,
    pub bytes: Vec<u8>,
    pub message_id: String,
}

/// Everything `compose` needs besides the message itself.
pub struct Context<'a> {
    pub policy: &'a AccountPolicy,
    /// Attachments fetched for `forward-attachments`, in order, each with the field
    /// path of the reference it came from.
    pub forwarded: Vec<(String, Attachment)>,
    pub now: i64,
    pub random: u128,
}

/// Resolves the From address: the message's, else the account default.
pub fn sender_of(message: &OutgoingMessage, policy: &AccountPolicy) -> Result<Address, MailError> {
    match (&message.sender, &policy.default_sender) {
        (Some(sender), _) => Ok(sender.clone()),
        (None, Some(default)) => Ok(default.clone()),
        (None, None) => Err(invalid(
            "message.sender",
            "no From address: set `sender` on the step, or `from` on the account",
        )),
    }
}

/// Validates every header-bound field of `message`, before anything is composed.
pub fn validate(
    message: &OutgoingMessage,
    sender: &Address,
    policy: &AccountPolicy,
) -> Result<(), MailError> {
    check_address("message.sender", sender)?;
    if let Some(required) = &policy.required_sender
        && !sender.email.eq_ignore_ascii_case(required)
    {
        return Err(invalid(
            "message.sender",
            format!(
                "this account may only send as {required} (OAuth2 accounts send as their own \
                 user); set sender to {required} or use another account"
            ),
        ));
    }
    for (name, list) in [
        ("to", &message.to),
        ("cc", &message.cc),
        ("bcc", &message.bcc),
        ("reply_to", &message.reply_to),
    ] {
        for (i, a) in list.iter().enumerate() {
            check_address(&format!("message.{name}[{i}]"), a)?;
        }
    }
    if message.to.is_empty() && message.cc.is_empty() && message.bcc.is_empty() {
        return Err(invalid(
            "message.to",
            "no recipients: give at least one in to, cc or bcc",
        ));
    }
    check_header_text("message.subject", &message.subject)?;
    for (i, h) in message.extra_headers.iter().enumerate() {
        let field = format!("message.extra_headers[{i}]");
        let name_ok =
            !h.name.is_empty() && h.name.bytes().all(|b| (33..=126).contains(&b) && b != b':');
        if !name_ok {
            return Err(invalid(
                format!("{field}.name"),
                format!(
                    "`{}` is not a header name: use printable ASCII without spaces or `:`",
                    h.name
                ),
            ));
        }
        let lower = h.name.to_ascii_lowercase();
        if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("content-") {
            return Err(invalid(
                format!("{field}.name"),
                format!(
                    "`{}` is written by flowmail itself; use the message field instead",
                    h.name
                ),
            ));
        }
        check_header_text(&format!("{field}.value"), &h.value)?;
    }
    for (i, a) in message.attachments.iter().enumerate() {
        check_attachment(&format!("message.attachments[{i}]"), a, policy)?;
    }
    Ok(())
}

/// Validates one attachment's metadata and size.
pub fn check_attachment(
    field: &str,
    a: &Attachment,
    policy: &AccountPolicy,
) -> Result<(), MailError> {
    check_header_text(&format!("{field}.name"), &a.name)?;
    if a.name.trim().is_empty() {
        return Err(invalid(
            format!("{field}.name"),
            "is empty; give the file a name",
        ));
    }
    if matches!(a.name.trim(), "." | "..") {
        return Err(invalid(
            format!("{field}.name"),
            format!(
                "`{}` is not a file name; give the file a name",
                a.name.trim()
            ),
        ));
    }
    if a.name.contains(['/', '\\']) {
        return Err(invalid(
            format!("{field}.name"),
            "contains a path separator; give only the file name",
        ));
    }
    if !crate::parse::is_mime_type(&a.content_type) {
        return Err(invalid(
            format!("{field}.content_type"),
            format!(
                "`{}` is not a MIME type like application/pdf",
                a.content_type
            ),
        ));
    }
    if let Some(cid) = &a.content_id {
        check_header_text(&format!("{field}.content_id"), cid)?;
        if cid.is_empty() || cid.contains(['<', '>', ' ']) {
            return Err(invalid(
                format!("{field}.content_id"),
                "must be non-empty, without `<`, `>` or spaces",
            ));
        }
    }
    let size = a.data.len() as u64;
    if size > policy.max_attachment_bytes {
        return Err(invalid(
            format!("{field}.data"),
            format!(
                "`{}` is {} bytes, over this account's attachment limit of {} bytes; \
                 send a smaller file or a link to it",
                a.name, size, policy.max_attachment_bytes
            ),
        ));
    }
    Ok(())
}

fn domain_of(email: &str) -> &str {
    email
        .rsplit_once('@')
        .map(|(_, d)| d)
        .unwrap_or("localhost")
}

/// Builds the envelope: the sender, and every recipient once, Bcc included.
fn envelope(sender: &Address, message: &OutgoingMessage) -> Envelope {
    let mut recipients: Vec<String> = Vec::new();
    for a in message.to.iter().chain(&message.cc).chain(&message.bcc) {
        if !recipients.iter().any(|r| r.eq_ignore_ascii_case(&a.email)) {
            recipients.push(a.email.clone());
        }
    }
    Envelope {
        sender: sender.email.clone(),
        recipients,
    }
}

/// Composes `message` (already validated) into RFC 5322 bytes.
pub fn compose(
    message: &OutgoingMessage,
    sender: &Address,
    ctx: Context<'_>,
) -> Result<Composed, MailError> {
    for (field, a) in &ctx.forwarded {
        check_attachment(field, a, ctx.policy)?;
    }
    let message_id = format!(
        "{:032x}.{}@{}",
        ctx.random,
        ctx.now,
        domain_of(&sender.email)
    );

    let mut builder = MessageBuilder::new()
        .header("From", address_header(std::slice::from_ref(sender)))
        .header("Subject", unstructured(&message.subject))
        .date(Date::new(ctx.now))
        .message_id(message_id.as_str());
    if !message.to.is_empty() {
        builder = builder.header("To", address_header(&message.to));
    }
    if !message.cc.is_empty() {
        builder = builder.header("Cc", address_header(&message.cc));
    }
    if !message.reply_to.is_empty() {
        builder = builder.header("Reply-To", address_header(&message.reply_to));
    }
    for h in &message.extra_headers {
        builder = builder.header(h.name.as_str(), unstructured(&h.value));
    }

    let all_attachments: Vec<&Attachment> = message
        .attachments
        .iter()
        .chain(ctx.forwarded.iter().map(|(_, a)| a))
        .collect();
    builder = builder.body(body_tree(message, &all_attachments));

    let bytes = builder
        .write_to_vec()
        .map_err(|e| MailError::Permanent(format!("composing the message failed: {e}")))?;
    if bytes.len() as u64 > ctx.policy.max_message_bytes {
        return Err(invalid(
            "message",
            format!(
                "the composed message is {} bytes, over this account's limit of {} bytes; \
                 send fewer or smaller attachments",
                bytes.len(),
                ctx.policy.max_message_bytes
            ),
        ));
    }
    Ok(Composed {
        envelope: envelope(sender, message),
        bytes,
        message_id,
    })
}

/// text and html as alternatives, inline parts related to them, attachments mixed in.
fn body_tree<'a>(message: &'a OutgoingMessage, attachments: &[&'a Attachment]) -> MimePart<'a> {
    let text = message
        .text
        .as_deref()
        .map(|t| MimePart::new("text/plain", BodyPart::Text(Cow::Borrowed(t))));
    let html = message
        .html
        .as_deref()
        .map(|h| MimePart::new("text/html", BodyPart::Text(Cow::Borrowed(h))));
    let mut core = match (text, html) {
        (Some(t), Some(h)) => MimePart::new("multipart/alternative", vec![t, h]),
        (Some(t), None) => t,
        (None, Some(h)) => h,
        (None, None) => MimePart::new("text/plain", BodyPart::Text(Cow::Borrowed(""))),
    };
    let part = |a: &'a Attachment| match as_text_entity(a) {
        Some((content_type, encoding, data)) => {
            MimePart::new(content_type, BodyPart::Binary(data)).transfer_encoding(encoding)
        }
        // mail-builder picks a file's encoding from a Content-Disposition it wrote
        // itself; with the extended-form one of `disposition`, it would send a text file
        // as text and change its line ends, so the file is written in base64 here.
        None if a.name.contains("=?") => MimePart::new(
            a.content_type.as_str(),
            BodyPart::Binary(Cow::Owned(base64_lines(&a.data))),
        )
        .transfer_encoding("base64"),
        None => MimePart::new(
            a.content_type.as_str(),
            BodyPart::Binary(Cow::Borrowed(a.data.as_slice())),
        ),
    };
    let inline: Vec<MimePart<'a>> = attachments
        .iter()
        .filter_map(|a| {
            a.content_id.as_deref().map(|cid| {
                part(a)
                    .cid(cid)
                    .header("Content-Disposition", disposition("inline", &a.name))
            })
        })
        .collect();
    if !inline.is_empty() {
        let mut parts = vec![core];
        parts.extend(inline);
        core = MimePart::new("multipart/related", parts);
    }
    let regular: Vec<MimePart<'a>> = attachments
        .iter()
        .filter(|a| a.content_id.is_none())
        .map(|a| part(a).header("Content-Disposition", disposition("attachment", &a.name)))
        .collect();
    if regular.is_empty() {
        return core;
    }
    let mut parts = vec![core];
    parts.extend(regular);
    MimePart::new("multipart/mixed", parts)
}

/// A `message/*` or `multipart/*` attachment as RFC 2046 §5.2.1 and §5.1 want it: not
/// base64 but 7bit or 8bit, in CRLF lines, so that mail clients open the message or the
/// parts inside; a multipart keeps the boundary its own delimiter lines use.
///
/// `None` when the attachment is of another type, or when its bytes cannot travel as
/// text (a NUL, a line over 998 octets, a multipart without delimiter lines): it is then
/// sent as it was given, in base64, byte for byte.
fn as_text_entity(a: &Attachment) -> Option<(ContentType<'_>, &'static str, Cow<'_, [u8]>)> {
    let (kind, _) = a.content_type.split_once('/')?;
    let is_message = kind.eq_ignore_ascii_case("message");
    if !is_message && !kind.eq_ignore_ascii_case("multipart") {
        return None;
    }
    let data = crlf_lines(&a.data);
    if data.contains(&0) || data.split(|b| *b == b'\n').any(|line| line.len() > 999) {
        return None;
    }
    let encoding = if data.is_ascii() { "7bit" } else { "8bit" };
    let mut content_type = ContentType::new(a.content_type.as_str());
    if !is_message {
        content_type = content_type.attribute("boundary", first_boundary(&data)?);
    }
    Some((content_type, encoding, data))
}

/// `data` with every line ending a CRLF, borrowed when it already is.
fn crlf_lines(data: &[u8]) -> Cow<'_, [u8]> {
    let bare = data.iter().enumerate().any(|(i, b)| {
        (*b == b'\n' && (i == 0 || data[i - 1] != b'\r'))
            || (*b == b'\r' && data.get(i + 1) != Some(&b'\n'))
    });
    if !bare {
        return Cow::Borrowed(data);
    }
    let mut out = Vec::with_capacity(data.len() + data.len() / 32);
    let mut i = 0;
    while i < data.len() {
        match data[i] {
            b'\r' if data.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(out)
}

/// The boundary of a multipart body: the first `--boundary` line whose closing
/// `--boundary--` line comes later.
fn first_boundary(data: &[u8]) -> Option<String> {
    let lines: Vec<&[u8]> = data
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l).trim_ascii_end())
        .collect();
    let closings: std::collections::HashSet<&[u8]> = lines
        .iter()
        .filter_map(|l| l.strip_prefix(b"--")?.strip_suffix(b"--"))
        .collect();
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(b"--"))
        .find(|b| !b.is_empty() && b.len() <= 70 && closings.contains(b))
        .and_then(|b| std::str::from_utf8(b).ok())
        .map(str::to_owned)
}

mod encode;
#[cfg(test)]
mod tests;
