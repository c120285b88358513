//! The checks that make a parsed message usable: it starts with a header, its parts'
//! headers end where they should (mended where the empty line is missing), its multiparts
//! close and nest no deeper than [`MAX_DEPTH`]. Each check is linear in the message's size.

use mail_parser::{HeaderName, Message, MessageParser, MessagePart, MimeHeaders, PartType};
/// Parses `data` as mail readers do, applies the checks that make a message usable, and
/// hands the message to `f`.
///
/// mail-parser itself accepts nearly any bytes, so the checks catch what would otherwise
/// arrive silently mangled. A part whose header runs into its body without the empty line
/// between them is mended first, as Python's `email` package does, so its text is kept.
pub(super) fn read<R>(data: &[u8], f: impl FnOnce(&Message<'_>) -> R) -> Result<R, String> {
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
    for (start, line) in lines(data) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
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
        for (start, line) in lines(data) {
            let line = line.trim_ascii_end();
            if line.len() >= 4 && line.starts_with(b"--") && line.ends_with(b"--") {
                at.entry(&line[2..line.len() - 2]).or_default().push(start);
            }
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

/// The lines of `data`, each with the offset it starts at, without its `\n`; a last line
/// without one is a line too.
fn lines(data: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= data.len() {
            return None;
        }
        let end = data[start..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(data.len(), |n| start + n);
        let line = (start, &data[start..end]);
        start = end + 1;
        Some(line)
    })
}
