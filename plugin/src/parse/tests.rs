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
    let no_boundary =
        "From: a@example.com\r\nContent-Type: multipart/mixed\r\n\r\nhello body\r\n--x\r\nmore\r\n";
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
