//! What Microsoft Graph answers to a mailbox's reads and changes, classified once: wait
//! and retry, refresh the token once, pass an expired delta link back to the reader, or a
//! `mail-error` with Graph's code, message, request id and the fix.

use reqwest::header::HeaderMap;

use crate::bindings::MailError;
use crate::bindings::types::FieldError;
use crate::net::graph::{Outcome, retry_after, said};

/// Whether an answer says the delta link is no longer honoured: the reader starts again
/// from the folder's start.
pub fn sync_state_lost(status: u16, code: &str) -> bool {
    status == 410
        || matches!(
            code,
            "SyncStateNotFound" | "SyncStateInvalid" | "resyncRequired" | "syncStateNotFound"
        )
}

/// Classifies a non-success answer of `what` for mailbox `user`.
pub fn classify(what: &str, user: &str, status: u16, headers: &HeaderMap, body: &[u8]) -> Outcome {
    let (code, said) = said(status, headers, body);
    let text = |fix: &str| format!("Graph {what} for {user} failed with {said}{fix}");
    match status {
        429 | 503 | 504 => Outcome::RetryAfter(retry_after(headers)),
        401 => Outcome::Refresh,
        _ if sync_state_lost(status, &code) => Outcome::Answer,
        403 => Outcome::Fail(MailError::AccessDenied(text(
            "; grant the app the Mail.Read application permission with admin consent (Mail.ReadWrite to mark read, \
             flag, move or delete), and check that no application access policy keeps it from this mailbox",
        ))),
        404 if code == "ErrorItemNotFound" => Outcome::Fail(MailError::NotFound(text(
            "; the message was removed or moved since it was read",
        ))),
        404 => Outcome::Fail(MailError::NotFound(text(&format!(
            "; check that the tenant has a mailbox {user} (`user`) and that the folder exists (`folder`)"
        )))),
        400 if code == "ErrorInvalidIdMalformed" => {
            Outcome::Fail(MailError::InvalidInput(FieldError {
                field: "id".into(),
                reason: text("; pass back an id this mailbox returned, unchanged"),
            }))
        }
        400..=499 => Outcome::Fail(MailError::Permanent(text(""))),
        _ => Outcome::Fail(MailError::Transient(text(
            "; Graph had a problem; the read is tried again later",
        ))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn reads_get_their_case_and_fix() {
        let h = HeaderMap::new();
        assert!(matches!(
            classify("delta", "u@x", 410, &h, b""),
            Outcome::Answer
        ));
        let expired = br#"{"error":{"code":"SyncStateNotFound","message":"gone"}}"#;
        assert!(matches!(
            classify("delta", "u@x", 400, &h, expired),
            Outcome::Answer
        ));
        let denied = br#"{"error":{"code":"ErrorAccessDenied","message":"Access is denied."}}"#;
        let Outcome::Fail(e) = classify("delta", "u@x", 403, &h, denied) else {
            panic!()
        };
        assert_eq!(e.kind_name(), "access-denied");
        assert!(e.message().contains("Mail.ReadWrite"), "{e:?}");
        let gone = br#"{"error":{"code":"ErrorItemNotFound","message":"not found"}}"#;
        let Outcome::Fail(e) = classify("$value", "u@x", 404, &h, gone) else {
            panic!()
        };
        assert_eq!(e.kind_name(), "not-found");
        assert!(e.message().contains("removed or moved"), "{e:?}");
        let Outcome::Fail(e) = classify("delta", "u@x", 502, &h, b"") else {
            panic!()
        };
        assert!(e.is_retryable());
    }
}
