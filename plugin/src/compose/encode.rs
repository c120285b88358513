//! Header and body encodings that read back exactly as they were given, where
//! mail-builder's own choice would not: text that looks like an encoded word, and files
//! whose Content-Disposition is written here.

use std::borrow::Cow;

use base64::Engine as _;
use mail_builder::headers::HeaderType;
use mail_builder::headers::address::Address as MbAddress;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::raw::Raw;
use mail_builder::headers::text::Text;

use crate::types::Address;

/// An unstructured header value (RFC 5322 §3.2.5) that reads back as it was given.
///
/// Text that already holds `=?`, the start of an encoded word (RFC 2047), is encoded
/// whole, since a reader would otherwise decode what the author typed literally:
/// `=?utf-8?q?a_b?=` would arrive as `a b`. Anything else is left to mail-builder,
/// which encodes only when the text needs it.
pub(super) fn unstructured(value: &str) -> HeaderType<'_> {
    if value.contains("=?") {
        Raw::new(encoded_words(value)).into()
    } else {
        Text::new(value).into()
    }
}

/// `value` as RFC 2047 encoded words, base64 of UTF-8: 45 bytes of UTF-8 make 60 of
/// base64, so each word stays within 75 characters; blanks between them let the header
/// fold.
fn encoded_words(value: &str) -> String {
    let mut words = Vec::new();
    let mut start = 0;
    while start < value.len() {
        let mut end = (start + 45).min(value.len());
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        words.push(format!(
            "=?utf-8?B?{}?=",
            base64::engine::general_purpose::STANDARD.encode(&value.as_bytes()[start..end])
        ));
        start = end;
    }
    words.join(" ")
}

/// An address list header. A display name that holds `=?` is written as encoded words,
/// for the same reason as in [`unstructured`]: mail-builder would quote it, and readers
/// decode encoded words even inside quotes.
pub(super) fn address_header(list: &[Address]) -> HeaderType<'_> {
    if !list
        .iter()
        .any(|a| a.name.as_deref().is_some_and(|n| n.contains("=?")))
    {
        return MbAddress::new_list(list.iter().map(mb_address).collect()).into();
    }
    let items: Vec<String> = list
        .iter()
        .map(|a| match &a.name {
            Some(name) => format!("{} <{}>", encoded_words(name), a.email),
            None => format!("<{}>", a.email),
        })
        .collect();
    Raw::new(items.join(", ")).into()
}

/// A Content-Disposition of `kind` whose file name reads back as it was given.
///
/// A name that holds `=?` is written in RFC 2231's extended form, percent-encoded in
/// sections, because readers decode encoded words even inside a quoted file name.
pub(super) fn disposition<'a>(kind: &'static str, name: &'a str) -> HeaderType<'a> {
    if !name.contains("=?") {
        return ContentType::new(kind).attribute("filename", name).into();
    }
    const ATTR_CHAR: &[u8] = b"!#$&+-.^_`|~";
    // Sections end between characters: readers decode each section's bytes on its own.
    let mut sections = vec![String::new()];
    for c in name.chars() {
        let mut buf = [0u8; 4];
        let mut encoded = String::new();
        for b in c.encode_utf8(&mut buf).bytes() {
            if b.is_ascii_alphanumeric() || ATTR_CHAR.contains(&b) {
                encoded.push(b as char);
            } else {
                encoded.push_str(&format!("%{b:02X}"));
            }
        }
        if sections
            .last()
            .is_some_and(|s| s.len() + encoded.len() > 60)
        {
            sections.push(String::new());
        }
        if let Some(last) = sections.last_mut() {
            last.push_str(&encoded);
        }
    }
    let mut value = kind.to_owned();
    for (i, section) in sections.iter().enumerate() {
        let charset = if i == 0 { "utf-8''" } else { "" };
        value.push_str(&format!("; filename*{i}*={charset}{section}"));
    }
    Raw::new(value).into()
}

fn mb_address(a: &Address) -> MbAddress<'_> {
    MbAddress::new_address(
        a.name.as_deref().map(Cow::Borrowed),
        Cow::Borrowed(a.email.as_str()),
    )
}

/// `data` in base64, in lines of 76 characters, each ended by CRLF (RFC 2045 §6.8).
pub(super) fn base64_lines(data: &[u8]) -> Vec<u8> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(data);
    let mut out = Vec::with_capacity(encoded.len() + encoded.len() / 38 + 2);
    for line in encoded.as_bytes().chunks(76) {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out
}
