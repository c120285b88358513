//! send-mail: composing, the checks of every field, limits, OAuth2 accounts, and
//! forwarded attachments.

use super::*;

#[test]
fn composes_what_was_asked_and_keeps_bcc_out_of_headers() {
    let host = Fake::new();
    let receipt = send_mail(&host, "demo", &message()).unwrap();
    assert_eq!(
        receipt.accepted,
        ["ops@example.com", "lead@example.com", "audit@example.com"]
    );
    let sent = host.sent.borrow();
    let (envelope, bytes) = &sent[0];
    assert_eq!(envelope.sender, "flows@example.com");
    let parsed = MessageParser::default().parse(bytes).unwrap();
    assert_eq!(parsed.subject(), Some("Störung: Datenbank überlastet"));
    assert_eq!(parsed.message_id(), Some(receipt.message_id.as_str()));
    assert_eq!(
        parsed.body_text(0).as_deref().map(str::trim),
        Some("Plain body ✓")
    );
    assert!(parsed.body_html(0).unwrap().contains("HTML body ✓"));
    let att = parsed.attachment(0).unwrap();
    assert_eq!(att.attachment_name(), Some("bericht-ü.bin"));
    assert_eq!(att.contents(), (0u8..=255).collect::<Vec<_>>().as_slice());
    assert!(parsed.bcc().is_none(), "Bcc must not appear in headers");
    assert_eq!(parsed.header_raw("X-Ticket").map(str::trim), Some("T-1"));
    assert!(!String::from_utf8_lossy(bytes).contains("audit@example.com"));
}

#[test]
fn bad_inputs_name_the_field_and_send_nothing() {
    type Edit = fn(&mut OutgoingMessage);
    let cases: Vec<(Edit, &str)> = vec![
        (
            |m| m.to[0].email = "not-an-address".into(),
            "message.to[0].email",
        ),
        (
            |m| m.subject = "hi\r\nBcc: evil@example.net".into(),
            "message.subject",
        ),
        (
            |m| m.attachments[0].data = vec![0; 1001],
            "message.attachments[0].data",
        ),
        (
            |m| m.extra_headers[0].name = "Content-Type".into(),
            "message.extra_headers[0].name",
        ),
        (
            |m| m.extra_headers[0].value = "x\ny".into(),
            "message.extra_headers[0].value",
        ),
        (
            |m| m.attachments[0].name = "../etc/passwd".into(),
            "message.attachments[0].name",
        ),
        (
            |m| m.cc[0].name = Some("Lead\nBcc: x@y.z".into()),
            "message.cc[0].name",
        ),
        (
            |m| {
                m.to.clear();
                m.cc.clear();
                m.bcc.clear();
            },
            "message.to",
        ),
    ];
    for (edit, field) in cases {
        let host = Fake::new();
        let mut m = message();
        edit(&mut m);
        assert_eq!(field_of(send_mail(&host, "demo", &m)), field);
        assert!(
            host.sent.borrow().is_empty(),
            "{field}: nothing may be sent"
        );
    }
}

#[test]
fn the_whole_message_has_a_limit_too() {
    let mut host = Fake::new();
    host.policy.max_message_bytes = 500;
    assert_eq!(field_of(send_mail(&host, "demo", &message())), "message");
    assert!(host.sent.borrow().is_empty());
}

#[test]
fn oauth2_accounts_send_only_as_their_user() {
    let mut host = Fake::new();
    host.policy.required_sender = Some("owner@example.com".into());
    assert_eq!(
        field_of(send_mail(&host, "demo", &message())),
        "message.sender"
    );
    let mut m = message();
    m.sender = Some(addr("Owner", "Owner@Example.com"));
    assert!(send_mail(&host, "demo", &m).is_ok());
}

#[test]
fn an_account_that_needs_authorization_fails_fast() {
    let mut host = Fake::new();
    host.state = CredentialState::NeedsAuthorization("refresh token revoked".into());
    assert!(
        matches!(send_mail(&host, "demo", &message()), Err(MailError::AuthFailed(m)) if m.contains("revoked"))
    );
    assert!(host.sent.borrow().is_empty());
}

#[test]
fn forwards_attachments_byte_for_byte() {
    let mut host = Fake::new();
    host.mailbox.push(raw(5, WITH_ATTACHMENT));
    let mut m = message();
    m.attachments.clear();
    m.forward_attachments = vec![AttachmentRef {
        account: "demo".into(),
        message: "5".into(),
        index: None,
    }];
    send_mail(&host, "demo", &m).unwrap();
    let sent = host.sent.borrow();
    let parsed = MessageParser::default().parse(&sent[0].1).unwrap();
    let att = parsed.attachment(0).unwrap();
    assert_eq!(att.attachment_name(), Some("graph.png"));
    assert_eq!(att.contents(), b"\x89PNG\r\n\x1a\n");

    m.forward_attachments[0].index = Some(3);
    assert_eq!(
        field_of(send_mail(&host, "demo", &m)),
        "message.forward_attachments[0].index"
    );
    m.forward_attachments[0] = AttachmentRef {
        account: "demo".into(),
        message: "99".into(),
        index: None,
    };
    assert_eq!(
        field_of(send_mail(&host, "demo", &m)),
        "message.forward_attachments[0]"
    );
}

#[test]
fn forwarded_attachments_are_made_usable_or_left_out_with_a_warning() {
    let mut host = Fake::new();
    // A sender's path in the name, a bare `text` type, and one attachment over the
    // account's attachment limit (1000 bytes in this fake).
    let big = "A".repeat(2000);
    let hostile = format!(
        "From: bot@example.com\r\nSubject: [ALERT] x\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
         --b\r\nContent-Type: text/plain\r\n\r\nsee files\r\n\
         --b\r\nContent-Type: text\r\nContent-Disposition: attachment; filename=\"../../etc/evil.sh\"\r\n\r\necho hi\r\n\
         --b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=big.bin\r\n\r\n{big}\r\n--b--\r\n"
    );
    host.mailbox.push(raw(7, &hostile));
    let mut m = message();
    m.attachments.clear();
    m.forward_attachments = vec![AttachmentRef {
        account: "demo".into(),
        message: "7".into(),
        index: None,
    }];
    send_mail(&host, "demo", &m).unwrap();
    let sent = host.sent.borrow();
    let parsed = MessageParser::default().parse(&sent[0].1).unwrap();
    let names: Vec<&str> = parsed
        .attachments()
        .filter_map(|a| a.attachment_name())
        .collect();
    assert_eq!(
        names,
        ["evil.sh"],
        "the path is dropped, the big one left out"
    );
    let evil = parsed.attachment(0).unwrap();
    // A bare `text` type is text/plain (RFC 2045 §5.2).
    assert_eq!(
        evil.content_type()
            .map(|c| (c.ctype(), c.subtype().unwrap_or_default())),
        Some(("text", "plain"))
    );
    let warnings = host.warnings.borrow();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("left out the forwarded attachment `big.bin`")),
        "{warnings:?}"
    );
}
