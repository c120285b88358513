//! A plugin that misbehaves on request, to prove the host's limits: `send-mail` with the
//! subject `loop` never returns, with `hog` it allocates without bound; any other subject
//! sends a minimal message, so a test can see the host serve the next call.

wit_bindgen::generate!({
    world: "mail-plugin",
    path: "../../wit",
});

use exports::flowmail::mail::actions::{Filter, Guest, MailboxPage, Receipt};
use flowmail::mail::mailbox::{self, Cursor, Search, SizeCap};
use flowmail::mail::smtp::{self, Envelope};
use flowmail::mail::types::{MailError, OutgoingMessage};

struct Misbehave;

impl Guest for Misbehave {
    fn send_mail(account: String, message: OutgoingMessage) -> Result<Receipt, MailError> {
        match message.subject.as_str() {
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "hog" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            _ => {
                let to = message
                    .to
                    .first()
                    .map(|a| a.email.clone())
                    .unwrap_or_default();
                let envelope = Envelope {
                    sender: "misbehave@example.com".into(),
                    recipients: vec![to],
                };
                let body = format!("Subject: {}\r\n\r\nok\r\n", message.subject);
                let d = smtp::send(&account, &envelope, body.as_bytes())?;
                Ok(Receipt {
                    message_id: "misbehave@example.com".into(),
                    accepted: d.accepted,
                    transport: d.transport,
                    status: d.status,
                    reference: d.reference,
                    size: body.len() as u64,
                })
            }
        }
    }

    fn read_mailbox(
        account: String,
        _filter: Filter,
        after: Option<Cursor>,
        limit: u32,
        cap: Option<SizeCap>,
    ) -> Result<MailboxPage, MailError> {
        let search = Search {
            sender_contains: None,
            subject_contains: None,
            unseen: false,
            sent_since: None,
        };
        let batch = mailbox::fetch_after(&account, after, limit, &search, cap)?;
        Ok(MailboxPage {
            messages: Vec::new(),
            skipped: Vec::new(),
            next_cursor: Cursor {
                uid_validity: batch.uid_validity,
                last_uid: 0,
            },
            scanned: batch.messages.len() as u32,
            more: batch.more,
        })
    }
}

export!(Misbehave);
