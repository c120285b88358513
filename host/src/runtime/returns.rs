//! What a plugin returns is checked before the host keeps it.

use crate::bindings::actions::{MailboxPage, Receipt};
use crate::bindings::types::OutgoingMessage;

use super::StepError;

/// The most bytes a receipt's message id may have: it is a header line's worth.
const MAX_MESSAGE_ID: usize = 998;
/// The most bytes of a receipt's transport name and reference (a server's reply, an
/// outbox file, an id).
const MAX_REFERENCE: usize = 64 << 10;

/// What the plugin returns is checked before the host keeps it (in runs, receipts and
/// logs): a receipt names at most the step's recipients, and its strings are of the size
/// their meaning allows. Memory for the copy is bounded by the plugin's own memory cap.
pub(super) fn check_receipt(receipt: &Receipt, message: &OutgoingMessage) -> Result<(), StepError> {
    let recipients = message.to.len() + message.cc.len() + message.bcc.len();
    let oversized = |what: String| Err(StepError::Oversized(what));
    if receipt.accepted.len() > recipients {
        return oversized(format!(
            "a receipt accepting {} recipients, more than the step's {recipients}",
            receipt.accepted.len()
        ));
    }
    if let Some(long) = receipt.accepted.iter().find(|a| a.len() > 254) {
        return oversized(format!(
            "a receipt with an accepted address of {} bytes, over the 254 an address may have",
            long.len()
        ));
    }
    if receipt.message_id.len() > MAX_MESSAGE_ID {
        return oversized(format!(
            "a receipt whose message id is {} bytes, over the limit of {MAX_MESSAGE_ID}",
            receipt.message_id.len()
        ));
    }
    let reference = receipt.reference.as_deref().map_or(0, str::len);
    if reference.max(receipt.transport.len()) > MAX_REFERENCE {
        return oversized(format!(
            "a receipt whose reference or transport is {} bytes, over the limit of {MAX_REFERENCE}",
            reference.max(receipt.transport.len())
        ));
    }
    Ok(())
}

/// A page holds at most the messages the call asked for.
pub(super) fn check_page(page: &MailboxPage, limit: u32) -> Result<(), StepError> {
    let listed = page.messages.len() + page.skipped.len();
    if listed > limit as usize || page.scanned > limit {
        return Err(StepError::Oversized(format!(
            "a page of {listed} message(s) ({} scanned), more than the {limit} asked for",
            page.scanned
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;
    use crate::bindings::actions::SkippedMessage;
    use crate::bindings::transport::DeliveryStatus;
    use crate::bindings::types::Address;
    use crate::bindings::types::OutgoingMessage;

    fn one_recipient() -> OutgoingMessage {
        OutgoingMessage {
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
            attachments: vec![],
            forward_attachments: vec![],
            extra_headers: vec![],
        }
    }

    fn receipt() -> Receipt {
        Receipt {
            message_id: "1@example.com".into(),
            accepted: vec!["ops@example.com".into()],
            transport: "outbox".into(),
            status: DeliveryStatus::Queued,
            reference: Some("var/outbox/1.eml".into()),
            size: 10,
        }
    }

    fn refused(r: Result<(), StepError>) -> String {
        match r {
            Err(e @ StepError::Oversized(_)) => e.to_string(),
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn a_receipt_is_kept_only_at_the_sizes_its_fields_allow() {
        assert!(check_receipt(&receipt(), &one_recipient()).is_ok());
        let mut r = receipt();
        r.message_id = "x".repeat(999);
        assert!(refused(check_receipt(&r, &one_recipient())).contains("message id is 999 bytes"));
        let mut r = receipt();
        r.reference = Some("x".repeat(MAX_REFERENCE + 1));
        assert!(refused(check_receipt(&r, &one_recipient())).contains("reference"));
        let mut r = receipt();
        r.accepted = vec!["a".repeat(255)];
        assert!(refused(check_receipt(&r, &one_recipient())).contains("255 bytes"));
    }

    #[test]
    fn a_page_holds_no_more_than_was_asked_for() {
        let page = |n: usize| MailboxPage {
            messages: vec![],
            skipped: (0..n)
                .map(|i| SkippedMessage {
                    id: i.to_string(),
                    reason: "r".into(),
                })
                .collect(),
            next_cursor: "c".into(),
            scanned: n as u32,
            more: false,
            restarted: false,
        };
        assert!(check_page(&page(10), 10).is_ok());
        let e = refused(check_page(&page(11), 10));
        assert!(
            e.contains("11 message(s)") && e.contains("the 10 asked for"),
            "{e}"
        );
    }
}
