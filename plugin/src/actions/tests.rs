use std::cell::RefCell;

use mail_parser::{MessageParser, MimeHeaders};

use super::*;
use crate::host::CredentialInfo;
use crate::mailbox::{Batch, Oversize, RawMessage};
use crate::tokens::AuthKind;
use crate::transport::{AccountPolicy, Delivery, DeliveryStatus, Envelope};
use crate::types::{Address, AttachmentRef, Header};

struct Fake {
    policy: AccountPolicy,
    state: CredentialState,
    mailbox: Vec<RawMessage>,
    sent: RefCell<Vec<(Envelope, Vec<u8>)>>,
    warnings: RefCell<Vec<String>>,
    searches: RefCell<Vec<Search>>,
}

impl Fake {
    fn new() -> Self {
        Fake {
            policy: AccountPolicy {
                default_sender: Some(addr("Flowmail", "flows@example.com")),
                required_sender: None,
                max_message_bytes: 1 << 20,
                max_attachment_bytes: 1000,
            },
            state: CredentialState::Ready,
            mailbox: Vec::new(),
            sent: RefCell::new(Vec::new()),
            warnings: RefCell::new(Vec::new()),
            searches: RefCell::new(Vec::new()),
        }
    }
}

impl Host for Fake {
    fn policy(&self, account: &str) -> Result<AccountPolicy, MailError> {
        if account == "demo" {
            Ok(self.policy.clone())
        } else {
            Err(MailError::NotFound(account.into()))
        }
    }
    fn credential(&self, _: &str) -> Result<CredentialInfo, MailError> {
        Ok(CredentialInfo {
            kind: AuthKind::Basic,
            username: Some("u".into()),
            state: self.state.clone(),
        })
    }
    fn send(&self, _: &str, envelope: &Envelope, message: &[u8]) -> Result<Delivery, MailError> {
        self.sent
            .borrow_mut()
            .push((envelope.clone(), message.to_vec()));
        Ok(Delivery {
            transport: "fake".into(),
            status: DeliveryStatus::Queued,
            accepted: envelope.recipients.clone(),
            reference: None,
        })
    }
    fn fetch_after(
        &self,
        _: &str,
        after: Option<&str>,
        limit: u32,
        search: &Search,
        cap: Option<SizeCap>,
    ) -> Result<Batch, MailError> {
        self.searches.borrow_mut().push(search.clone());
        // This fake's ids and cursors are plain numbers.
        let number = |id: &str| id.parse::<u32>().unwrap();
        let from = after.map(number).unwrap_or(0);
        let rest: Vec<_> = self
            .mailbox
            .iter()
            .filter(|m| number(&m.id) > from)
            .cloned()
            .map(|mut m| {
                if let Some(cap) = cap.filter(|c| m.size > c.max_size) {
                    match cap.oversize {
                        Oversize::Skip => {
                            m.data.clear();
                            m.content = Content::Omitted;
                        }
                        Oversize::WithoutAttachments => {
                            let text = String::from_utf8_lossy(&m.data);
                            let head = text.split("\r\n\r\n").next().unwrap_or_default();
                            m.data = format!("{head}\r\n\r\n").into_bytes();
                            m.content = Content::WithoutAttachments;
                        }
                    }
                }
                m
            })
            .collect();
        let more = rest.len() > limit as usize;
        let messages: Vec<_> = rest.into_iter().take(limit as usize).collect();
        Ok(Batch {
            next: messages
                .last()
                .map(|m| number(&m.id))
                .unwrap_or(from)
                .to_string(),
            restarted: false,
            messages,
            more,
        })
    }
    fn fetch(&self, _: &str, id: &str) -> Result<RawMessage, MailError> {
        self.mailbox
            .iter()
            .find(|m| m.id == id)
            .cloned()
            .ok_or(MailError::NotFound(format!("id {id}")))
    }
    fn warn(&self, message: &str) {
        self.warnings.borrow_mut().push(message.into());
    }
    fn now(&self) -> i64 {
        1_793_696_400
    }
    fn random(&self) -> u128 {
        0xfeed
    }
}

fn addr(name: &str, email: &str) -> Address {
    Address {
        name: Some(name.into()),
        email: email.into(),
    }
}

fn message() -> OutgoingMessage {
    OutgoingMessage {
        sender: None,
        to: vec![addr("Ops", "ops@example.com")],
        cc: vec![addr("Lead", "lead@example.com")],
        bcc: vec![Address {
            name: None,
            email: "audit@example.com".into(),
        }],
        reply_to: vec![],
        subject: "Störung: Datenbank überlastet".into(),
        text: Some("Plain body ✓".into()),
        html: Some("<p>HTML body ✓</p>".into()),
        attachments: vec![Attachment {
            name: "bericht-ü.bin".into(),
            content_type: "application/octet-stream".into(),
            data: (0u8..=255).collect(),
            content_id: None,
        }],
        forward_attachments: vec![],
        extra_headers: vec![Header {
            name: "X-Ticket".into(),
            value: "T-1".into(),
        }],
    }
}

fn field_of(r: Result<Receipt, MailError>) -> String {
    match r {
        Err(MailError::InvalidInput(e)) => e.field,
        other => panic!("expected invalid-input, got {other:?}"),
    }
}

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

const WITH_ATTACHMENT: &str = "From: bot@example.com\r\nSubject: [ALERT] x\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
    --b\r\nContent-Type: text/plain\r\n\r\nsee file\r\n--b\r\nContent-Type: image/png\r\n\
    Content-Disposition: attachment; filename=graph.png\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--b--\r\n";

fn raw(uid: u32, s: &str) -> RawMessage {
    RawMessage {
        id: uid.to_string(),
        flags: vec![],
        size: s.len() as u64,
        data: s.as_bytes().to_vec(),
        content: Content::Complete,
    }
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
fn reads_filters_skips_malformed_and_advances_the_cursor() {
    let mut host = Fake::new();
    host.mailbox.push(raw(1, WITH_ATTACHMENT));
    host.mailbox.push(raw(
        2,
        "From: a@example.com\r\nSubject: weekly report\r\n\r\nhi\r\n",
    ));
    host.mailbox.push(raw(3, "garbage without headers"));
    host.mailbox.push(raw(
        4,
        "From: b@example.com\r\nSubject: [ALERT] y\r\n\r\nhi\r\n",
    ));
    let filter = Filter {
        sender_contains: None,
        subject_contains: Some("[alert]".into()),
        has_attachment: None,
        since: None,
        unseen: None,
    };
    let page = read_mailbox(&host, "demo", &filter, None, 3, None).unwrap();
    assert_eq!(
        page.messages
            .iter()
            .map(|m| m.id.as_str())
            .collect::<Vec<_>>(),
        ["1"]
    );
    assert_eq!(page.skipped.len(), 1);
    assert_eq!(page.skipped[0].id, "3");
    assert_eq!(host.warnings.borrow().len(), 1);
    assert_eq!(
        page.next_cursor, "3",
        "the backend's cursor, passed on unchanged"
    );
    assert!(page.more && !page.restarted);
    let page = read_mailbox(&host, "demo", &filter, Some(&page.next_cursor), 3, None).unwrap();
    assert_eq!(
        page.messages
            .iter()
            .map(|m| m.id.as_str())
            .collect::<Vec<_>>(),
        ["4"]
    );
    assert!(!page.more);
    let page = read_mailbox(&host, "demo", &filter, Some(&page.next_cursor), 3, None).unwrap();
    assert!(page.messages.is_empty());
    assert_eq!(page.next_cursor, "4", "an empty read keeps the cursor");
    assert!(matches!(
        read_mailbox(&host, "demo", &filter, None, 0, None),
        Err(MailError::InvalidInput(_))
    ));
}

#[test]
fn passes_the_searchable_conditions_to_the_host() {
    let host = Fake::new();
    let filter = Filter {
        sender_contains: Some("grafana".into()),
        subject_contains: Some("[ALERT]".into()),
        has_attachment: Some(true),
        since: Some("2026-11-03T09:00:00Z".into()),
        unseen: Some(true),
    };
    read_mailbox(&host, "demo", &filter, None, 3, None).unwrap();
    let searches = host.searches.borrow();
    assert_eq!(searches[0].sender_contains.as_deref(), Some("grafana"));
    assert_eq!(searches[0].subject_contains.as_deref(), Some("[ALERT]"));
    assert!(searches[0].unseen);
    assert_eq!(searches[0].sent_since.as_deref(), Some("2026-11-02"));
}

#[test]
fn oversized_messages_are_reported_with_their_size_or_read_without_attachments() {
    let mut host = Fake::new();
    host.mailbox.push(raw(1, WITH_ATTACHMENT));
    host.mailbox.push(raw(
        2,
        "From: a@example.com\r\nSubject: small\r\n\r\nhi\r\n",
    ));
    let filter = Filter {
        sender_contains: None,
        subject_contains: None,
        has_attachment: None,
        since: None,
        unseen: None,
    };
    let size = WITH_ATTACHMENT.len() as u64;
    let cap = |oversize| {
        Some(SizeCap {
            max_size: 100,
            oversize,
        })
    };
    let page = read_mailbox(&host, "demo", &filter, None, 10, cap(Oversize::Skip)).unwrap();
    assert_eq!(
        page.messages
            .iter()
            .map(|m| m.id.as_str())
            .collect::<Vec<_>>(),
        ["2"]
    );
    assert_eq!(page.skipped[0].id, "1");
    assert!(
        page.skipped[0].reason.contains(&format!("is {size} bytes")),
        "{}",
        page.skipped[0].reason
    );
    assert_eq!(page.next_cursor, "2");

    let page = read_mailbox(
        &host,
        "demo",
        &filter,
        None,
        10,
        cap(Oversize::WithoutAttachments),
    )
    .unwrap();
    assert!(page.skipped.is_empty());
    let first = &page.messages[0];
    assert!(first.attachments_omitted);
    assert!(first.attachments.is_empty());
    assert_eq!(first.size, size);
    assert!(!page.messages[1].attachments_omitted);
    assert!(matches!(
        read_mailbox(&host, "demo", &filter, None, 10, Some(SizeCap { max_size: 0, oversize: Oversize::Skip })),
        Err(MailError::InvalidInput(e)) if e.field == "cap.max_size"
    ));
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
