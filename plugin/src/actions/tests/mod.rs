//! The plugin's actions against a fake host: sending in [`sending`], reading in
//! [`reading`].

mod reading;
mod sending;

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
