//! How attachments of each kind come out of the composer.

use mail_parser::{MessageParser, MimeHeaders, PartType};

use super::*;
use crate::mailbox::{Content, RawMessage};
use crate::parse;

fn policy() -> AccountPolicy {
    AccountPolicy {
        default_sender: None,
        required_sender: None,
        max_message_bytes: 1 << 20,
        max_attachment_bytes: 1 << 20,
    }
}

fn sender() -> Address {
    Address {
        name: None,
        email: "flows@example.com".into(),
    }
}

fn with(attachments: Vec<Attachment>) -> OutgoingMessage {
    OutgoingMessage {
        sender: None,
        to: vec![Address {
            name: None,
            email: "ops@example.com".into(),
        }],
        cc: vec![],
        bcc: vec![],
        reply_to: vec![],
        subject: "forwarded".into(),
        text: Some("see the attachments".into()),
        html: None,
        attachments,
        forward_attachments: vec![],
        extra_headers: vec![],
    }
}

fn composed(message: &OutgoingMessage, forwarded: Vec<(String, Attachment)>) -> Vec<u8> {
    let policy = policy();
    let ctx = Context {
        policy: &policy,
        forwarded,
        now: 1_790_000_000,
        random: 7,
    };
    compose(message, &sender(), ctx).unwrap().bytes
}

/// The header block of the MIME part whose body holds `needle`.
fn part_header<'a>(bytes: &'a str, needle: &str) -> &'a str {
    let at = bytes.find(needle).unwrap();
    let head_end = bytes[..at].rfind("\r\n\r\n").unwrap();
    let head_start = bytes[..head_end].rfind("\r\n--").unwrap();
    &bytes[head_start..head_end]
}

#[test]
fn forwarded_messages_travel_as_text_and_open_as_messages() {
    let received = "From: a@example.com\r\nSubject: bounce\r\n\
                    Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n\
                    --b\r\nContent-Type: text/plain\r\n\r\nIt bounced.\r\n\
                    --b\r\nContent-Type: message/delivery-status\r\n\r\n\
                    Reporting-MTA: dns; mx.example.com\r\n\r\nFinal-Recipient: rfc822; y@example.org\r\nAction: failed\r\n\
                    --b\r\nContent-Type: message/rfc822\r\n\r\n\
                    From: c@example.com\r\nSubject: original\r\n\r\nthe original body, caf\u{e9}\r\n--b--\r\n";
    let raw = RawMessage {
        id: "1:1".into(),
        flags: vec![],
        size: received.len() as u64,
        data: received.as_bytes().to_vec(),
        content: Content::Complete,
    };
    let forwarded: Vec<(String, Attachment)> = parse::attachments(&raw)
        .unwrap()
        .into_iter()
        .map(|a| ("message.forward_attachments[0]".to_owned(), a))
        .collect();
    assert_eq!(forwarded.len(), 2);
    let bytes = composed(&with(vec![]), forwarded);
    let text = String::from_utf8(bytes.clone()).unwrap();

    let status = part_header(&text, "Reporting-MTA: dns; mx.example.com");
    assert!(
        status.contains("Content-Type: message/delivery-status"),
        "{status}"
    );
    assert!(
        status.contains("Content-Transfer-Encoding: 7bit"),
        "{status}"
    );
    let original = part_header(&text, "Subject: original");
    assert!(
        original.contains("Content-Type: message/rfc822"),
        "{original}"
    );
    assert!(
        original.contains("Content-Transfer-Encoding: 8bit"),
        "{original}"
    );
    assert!(!text.contains("base64"), "{text}");

    // A reader sees the forwarded message as a message, with its own subject.
    let parsed = MessageParser::default().parse(&bytes).unwrap();
    let inner = parsed
        .attachments()
        .find_map(|p| match &p.body {
            PartType::Message(m) => Some(m),
            _ => None,
        })
        .unwrap();
    assert_eq!(inner.subject(), Some("original"));
    assert_eq!(
        inner.body_text(0).as_deref(),
        Some("the original body, café")
    );
}

#[test]
fn a_multipart_attachment_keeps_its_boundary() {
    let body = b"preamble\n--inner7\nContent-Type: text/plain\n\none\n--inner7\nContent-Type: text/plain\n\ntwo\n--inner7--\n";
    let message = with(vec![Attachment {
        name: "parts".into(),
        content_type: "multipart/mixed".into(),
        data: body.to_vec(),
        content_id: None,
    }]);
    let bytes = composed(&message, vec![]);
    let text = String::from_utf8(bytes.clone()).unwrap();
    let header = part_header(&text, "preamble");
    assert!(
        header.contains("boundary=\"inner7\"") || header.contains("boundary=inner7"),
        "{header}"
    );
    assert!(
        header.contains("Content-Transfer-Encoding: 7bit"),
        "{header}"
    );
    // Line ends became CRLF, as SMTP needs; the parts inside open as parts.
    assert!(text.contains("--inner7\r\nContent-Type: text/plain\r\n\r\none\r\n"));
    let parsed = MessageParser::default().parse(&bytes).unwrap();
    let texts: Vec<&str> = parsed
        .parts
        .iter()
        .filter_map(|p| match &p.body {
            PartType::Text(t) => Some(t.as_ref()),
            _ => None,
        })
        .collect();
    assert!(
        texts.contains(&"one") && texts.contains(&"two"),
        "{texts:?}"
    );
}

#[test]
fn what_cannot_travel_as_text_goes_byte_for_byte_in_base64() {
    let cases: [(&str, Vec<u8>); 3] = [
        (
            "message/rfc822",
            b"From: a@example.com\r\n\r\nnul \0 inside\r\n".to_vec(),
        ),
        (
            "message/rfc822",
            [b"From: a@example.com\r\n\r\n".to_vec(), vec![b'x'; 2000]].concat(),
        ),
        ("multipart/mixed", b"no delimiter lines at all\r\n".to_vec()),
    ];
    for (content_type, data) in cases {
        let message = with(vec![Attachment {
            name: "odd".into(),
            content_type: content_type.into(),
            data: data.clone(),
            content_id: None,
        }]);
        let bytes = composed(&message, vec![]);
        let parsed = MessageParser::default().parse(&bytes).unwrap();
        let part = parsed.attachment(0).unwrap();
        assert_eq!(
            part.content_transfer_encoding(),
            Some("base64"),
            "{content_type}"
        );
        assert_eq!(part.contents(), data.as_slice(), "{content_type}");
    }
}
