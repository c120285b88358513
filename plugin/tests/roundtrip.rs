//! Property tests of what the plugin writes: every message that validation accepts is
//! composed into MIME that a mail reader (the plugin's own parser, on mail-parser) reads
//! back field for field and byte for byte, with no header it did not ask for; and every
//! header-bound field with a line break in it is refused, naming the field.
//!
//! The number of cases comes from `PROPTEST_CASES` (256 by default); a long run is
//! `PROPTEST_CASES=100000 cargo test -p flowmail-plugin --release --test roundtrip`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use flowmail_plugin::address::{check_email, check_header_text};
use flowmail_plugin::compose::{self, Context};
use flowmail_plugin::mailbox::{Content, RawMessage};
use flowmail_plugin::parse;
use flowmail_plugin::transport::AccountPolicy;
use flowmail_plugin::types::{Address, Attachment, Header, MailError, OutgoingMessage};
use proptest::prelude::*;

const ATEXT: &str = "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]";

/// Dot-atom local parts, as RFC 5322 §3.4.1 defines them.
fn local_part() -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("{ATEXT}{{1,12}}(\\.{ATEXT}{{1,8}}){{0,3}}"))
        .expect("the local-part pattern is a valid regex")
}

fn domain() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::string::string_regex(
            "([a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?\\.){1,3}[a-z]{2,6}"
        )
        .expect("the domain pattern is a valid regex"),
        1 => (0u8..=255, 0u8..=255, 0u8..=255, 1u8..=254)
            .prop_map(|(a, b, c, d)| format!("[{a}.{b}.{c}.{d}]")),
    ]
}

fn email() -> impl Strategy<Value = String> {
    (local_part(), domain()).prop_map(|(l, d)| format!("{l}@{d}"))
}

/// One line of any Unicode without control characters, as a subject or a display name
/// can be: letters of several scripts, emoji, punctuation, RFC 2047 look-alikes.
fn one_line(max: usize) -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        6 => proptest::string::string_regex("[a-zA-Z0-9 ]{1,8}").expect("valid regex"),
        2 => proptest::string::string_regex("[àéîõüßçñ€日本語中文한국어Ωπ]{1,4}")
            .expect("valid regex"),
        1 => Just("=?utf-8?q?not_encoded?=".to_owned()),
        1 => Just("\"quoted\", <angle> (comment);".to_owned()),
        1 => Just("\u{1F4E7}\u{1F600}".to_owned()),
        1 => Just("\t".to_owned()),
        1 => "\\PC{1,6}",
    ];
    proptest::collection::vec(piece, 0..max).prop_map(|p| p.concat())
}

fn address() -> impl Strategy<Value = Address> {
    (
        proptest::option::of(
            one_line(6).prop_filter("a display name has a visible character", |n| {
                !n.trim().is_empty()
            }),
        ),
        email(),
    )
        .prop_map(|(name, email)| Address { name, email })
}

fn attachment() -> impl Strategy<Value = Attachment> {
    let content_type = prop_oneof![
        Just("application/octet-stream"),
        Just("application/pdf"),
        Just("image/png"),
        Just("text/plain"),
        Just("text/csv"),
        Just("application/zip"),
    ];
    let data = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..3000),
        // Text-like bytes with every kind of line end and trailing blanks.
        proptest::collection::vec(
            prop_oneof![
                Just(b"line".to_vec()),
                Just(b"\r\n".to_vec()),
                Just(b"\n".to_vec()),
                Just(b"\r".to_vec()),
                Just(b"  ".to_vec()),
                Just(b".\r\n".to_vec()),
                Just("é".as_bytes().to_vec()),
            ],
            0..60
        )
        .prop_map(|v| v.concat()),
    ];
    let name = one_line(5)
        .prop_map(|n| n.replace(['/', '\\'], "_"))
        .prop_filter("a file name has a visible character", |n| {
            !matches!(n.trim(), "" | "." | "..")
        });
    (name, content_type, data).prop_map(|(name, content_type, data)| Attachment {
        name,
        content_type: content_type.into(),
        data,
        content_id: None,
    })
}

fn message() -> impl Strategy<Value = OutgoingMessage> {
    (
        proptest::collection::vec(address(), 1..4),
        proptest::collection::vec(address(), 0..3),
        proptest::collection::vec(address(), 0..3),
        one_line(12),
        proptest::option::of(body_text()),
        proptest::option::of(body_text().prop_map(|t| format!("<p>{t}</p>"))),
        proptest::collection::vec(attachment(), 0..4),
        proptest::collection::vec(
            (
                proptest::string::string_regex("X-[A-Za-z0-9-]{1,12}").expect("valid regex"),
                one_line(6),
            ),
            0..3,
        ),
    )
        .prop_map(
            |(to, cc, bcc, subject, text, html, attachments, headers)| OutgoingMessage {
                sender: None,
                to,
                cc,
                bcc,
                reply_to: vec![],
                subject,
                text,
                html,
                attachments,
                forward_attachments: vec![],
                extra_headers: headers
                    .into_iter()
                    .map(|(name, value)| Header { name, value })
                    .collect(),
            },
        )
}

/// A body of several lines: long ones, blank ones, a lone dot, `From ` at a line start.
fn body_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            4 => one_line(10),
            1 => Just(".".to_owned()),
            1 => Just("From the start".to_owned()),
            1 => Just(String::new()),
            1 => "[a-z ]{990,1200}",
        ],
        0..8,
    )
    .prop_map(|lines| lines.join("\n"))
}

fn policy() -> AccountPolicy {
    AccountPolicy {
        default_sender: Some(Address {
            name: Some("Flows".into()),
            email: "flows@example.com".into(),
        }),
        required_sender: None,
        max_message_bytes: 64 << 20,
        max_attachment_bytes: 16 << 20,
    }
}

fn compose_ok(message: &OutgoingMessage) -> Result<Vec<u8>, MailError> {
    let policy = policy();
    let sender = compose::sender_of(message, &policy)?;
    compose::validate(message, &sender, &policy)?;
    let ctx = Context {
        policy: &policy,
        forwarded: vec![],
        now: 1_790_000_000,
        random: 0x0123_4567_89ab_cdef,
    };
    Ok(compose::compose(message, &sender, ctx)?.bytes)
}

fn raw(bytes: Vec<u8>) -> RawMessage {
    RawMessage {
        id: "1:1".into(),
        flags: vec![],
        size: bytes.len() as u64,
        data: bytes,
        content: Content::Complete,
    }
}

/// The body as a reader sees it: line ends are the transport's business.
fn lines(text: &str) -> String {
    text.replace("\r\n", "\n").trim_end_matches('\n').to_owned()
}

/// The field names of the top-level header block, lower-cased.
fn header_names(bytes: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    head.split("\r\n")
        .filter(|l| !l.starts_with([' ', '\t']))
        .filter_map(|l| l.split_once(':').map(|(n, _)| n.to_ascii_lowercase()))
        .collect()
}

proptest! {
    #[test]
    fn generated_addresses_pass_validation(email in email()) {
        prop_assert!(check_email("to", &email).is_ok(), "{email} was refused");
    }

    #[test]
    fn validation_never_panics_and_names_the_field(text in "\\PC{0,80}|.{0,80}") {
        if let Err(MailError::InvalidInput(e)) = check_email("message.to[0].email", &text) {
            prop_assert_eq!(e.field, "message.to[0].email");
            prop_assert!(!e.reason.is_empty());
        }
    }

    #[test]
    fn any_line_break_in_a_header_field_is_refused(
        message in message(),
        which in 0usize..5,
        at in any::<prop::sample::Index>(),
        brk in prop_oneof![Just("\r\n"), Just("\n"), Just("\r")],
    ) {
        let mut message = message;
        let inject = |s: &mut String| {
            let chars: Vec<char> = s.chars().collect();
            let i = at.index(chars.len() + 1);
            let (a, b): (String, String) = (chars[..i].iter().collect(), chars[i..].iter().collect());
            *s = format!("{a}{brk}Bcc: victim@example.net{b}");
        };
        let field = match which {
            0 => { inject(&mut message.subject); "message.subject".to_owned() }
            1 => { inject(&mut message.to[0].email); "message.to[0].email".to_owned() }
            2 => {
                let name = message.to[0].name.get_or_insert_with(|| "Ops".into());
                inject(name);
                "message.to[0].name".to_owned()
            }
            3 => {
                message.extra_headers.push(Header { name: "X-Ticket".into(), value: "1".into() });
                let last = message.extra_headers.len() - 1;
                inject(&mut message.extra_headers[last].value);
                format!("message.extra_headers[{last}].value")
            }
            _ => {
                message.attachments.push(Attachment {
                    name: "report.pdf".into(),
                    content_type: "application/pdf".into(),
                    data: vec![1, 2, 3],
                    content_id: None,
                });
                let last = message.attachments.len() - 1;
                inject(&mut message.attachments[last].name);
                format!("message.attachments[{last}].name")
            }
        };
        match compose_ok(&message) {
            Err(MailError::InvalidInput(e)) => {
                prop_assert_eq!(e.field, field);
                prop_assert!(e.reason.contains("line break"), "{}", e.reason);
            }
            other => prop_assert!(false, "{field} with a line break was not refused: {other:?}"),
        }
    }

    #[test]
    fn accepted_messages_read_back_as_they_were_written(message in message()) {
        let bytes = match compose_ok(&message) {
            Ok(bytes) => bytes,
            Err(e) => return Err(TestCaseError::fail(format!("a valid message was refused: {e:?}"))),
        };
        let received = parse::parse(&raw(bytes.clone())).map_err(TestCaseError::fail)?;

        // Readers drop the blanks around a header value (RFC 5322 §3.2.2 makes them
        // folding white space); everything between them must arrive as written.
        prop_assert_eq!(received.subject.trim(), message.subject.trim());
        for (got, want) in [(&received.to, &message.to), (&received.cc, &message.cc)] {
            let emails: Vec<&str> = got.iter().map(|a| a.email.as_str()).collect();
            let wanted: Vec<&str> = want.iter().map(|a| a.email.as_str()).collect();
            prop_assert_eq!(emails, wanted);
            let names: Vec<Option<&str>> = got.iter().map(|a| a.name.as_deref().map(str::trim)).collect();
            let wanted: Vec<Option<&str>> = want.iter().map(|a| a.name.as_deref().map(str::trim)).collect();
            prop_assert_eq!(names, wanted);
        }
        prop_assert_eq!(received.sender.map(|s| s.email), Some("flows@example.com".to_owned()));

        match (&message.text, &message.html) {
            (Some(text), _) => prop_assert_eq!(
                received.text.as_deref().map(lines),
                Some(lines(text))
            ),
            (None, Some(html)) => prop_assert_eq!(
                received.html.as_deref().map(lines),
                Some(lines(html))
            ),
            (None, None) => {}
        }

        // Attachments arrive with their names and exactly their bytes.
        let got = parse::attachments(&raw(bytes.clone())).map_err(TestCaseError::fail)?;
        prop_assert_eq!(got.len(), message.attachments.len());
        for (got, want) in got.iter().zip(&message.attachments) {
            // A received file name loses control characters (a tab) so that it can be
            // forwarded; the rest arrives as written.
            let name: String = want.name.chars().filter(|c| !c.is_control()).collect();
            prop_assert_eq!(got.name.trim(), name.trim());
            prop_assert_eq!(&got.content_type, &want.content_type);
            prop_assert!(got.data == want.data, "the bytes of `{}` changed", want.name);
        }
        for (info, want) in received.attachments.iter().zip(&message.attachments) {
            prop_assert_eq!(info.size, want.data.len() as u64);
        }

        // The header block holds what the composer writes and the extra headers, no more:
        // nothing a field's text could have injected, and never Bcc.
        let mut expected: Vec<String> = ["from", "subject", "date", "message-id", "mime-version", "content-type"]
            .iter().map(|s| (*s).to_owned()).collect();
        expected.push("to".into());
        if !message.cc.is_empty() { expected.push("cc".into()); }
        expected.extend(message.extra_headers.iter().map(|h| h.name.to_ascii_lowercase()));
        let mut names = header_names(&bytes);
        names.retain(|n| n != "content-transfer-encoding");
        names.sort();
        expected.sort();
        prop_assert_eq!(names, expected);
        for h in &message.bcc {
            prop_assert!(
                !String::from_utf8_lossy(&bytes).contains(&h.email)
                    || message.to.iter().chain(&message.cc).any(|a| a.email == h.email)
                    || message.attachments.iter().any(|a| a.name.contains(&h.email)),
                "a Bcc address is in the message: {}", h.email
            );
        }
    }

    #[test]
    fn header_text_refuses_exactly_the_control_characters(text in "\\PC{0,40}", c in any::<char>()) {
        let s = format!("{text}{c}");
        let refused = check_header_text("message.subject", &s).is_err();
        prop_assert_eq!(refused, c.is_control() && c != '\t');
    }
}

/// The findings of the properties above, kept as plain examples: text that looks like an
/// encoded word arrives as typed, in the subject, a display name and a file name; a text
/// file keeps its bytes, whatever its charset and line ends.
#[test]
fn text_that_looks_encoded_and_text_files_arrive_as_written() {
    let literal = "=?utf-8?q?not_encoded?= and caf\u{e9} \u{1F4E7}";
    let message = OutgoingMessage {
        sender: None,
        to: vec![Address {
            name: Some(literal.into()),
            email: "ops@example.com".into(),
        }],
        cc: vec![],
        bcc: vec![],
        reply_to: vec![],
        subject: literal.into(),
        text: Some("body".into()),
        html: None,
        attachments: vec![
            Attachment {
                name: literal.into(),
                content_type: "text/plain".into(),
                data: b"lf\nonly\n".to_vec(),
                content_id: None,
            },
            Attachment {
                name: "latin1.csv".into(),
                content_type: "text/csv".into(),
                data: b"Jos\xe9;K\xf6ln\r\n".to_vec(),
                content_id: None,
            },
        ],
        forward_attachments: vec![],
        extra_headers: vec![Header {
            name: "X-Note".into(),
            value: literal.into(),
        }],
    };
    let bytes = compose_ok(&message).unwrap();
    let received = parse::parse(&raw(bytes.clone())).unwrap();
    assert_eq!(received.subject, literal);
    assert_eq!(received.to[0].name.as_deref(), Some(literal));
    let files = parse::attachments(&raw(bytes)).unwrap();
    assert_eq!(files[0].name, literal);
    assert_eq!(files[0].data, b"lf\nonly\n");
    assert_eq!(files[1].data, b"Jos\xe9;K\xf6ln\r\n");
}

/// A file name of `.` or `..` is refused: a reader would have to rename it.
#[test]
fn dot_file_names_are_refused_naming_the_field() {
    for name in [".", "..", " . "] {
        let message = OutgoingMessage {
            sender: None,
            to: vec![Address {
                name: None,
                email: "ops@example.com".into(),
            }],
            cc: vec![],
            bcc: vec![],
            reply_to: vec![],
            subject: "s".into(),
            text: None,
            html: None,
            attachments: vec![Attachment {
                name: name.into(),
                content_type: "application/pdf".into(),
                data: vec![1],
                content_id: None,
            }],
            forward_attachments: vec![],
            extra_headers: vec![],
        };
        match compose_ok(&message) {
            Err(MailError::InvalidInput(e)) => {
                assert_eq!(e.field, "message.attachments[0].name");
                assert!(e.reason.contains("not a file name"), "{}", e.reason);
            }
            other => panic!("`{name}` was not refused: {other:?}"),
        }
    }
}
