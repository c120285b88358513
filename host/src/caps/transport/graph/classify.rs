//! What Microsoft Graph answers, classified once: retry after a wait, refresh the token
//! once, or a `mail-error` with Graph's code, message, request id and the fix.

use crate::bindings::MailError;
use crate::bindings::types::FieldError;
pub use crate::net::graph::Outcome;
use crate::net::graph::{retry_after, said};

/// Classifies a non-success answer of `what` (for example `sendMail`) for mailbox `user`.
pub fn classify(
    what: &str,
    user: &str,
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &[u8],
) -> Outcome {
    let (code, said) = said(status, headers, body);
    let text = |fix: &str| format!("Graph {what} for {user} failed with {said}{fix}");
    match status {
        429 | 503 | 504 => Outcome::RetryAfter(retry_after(headers)),
        401 => Outcome::Refresh,
        403 => Outcome::Fail(MailError::AccessDenied(text(
            "; grant the app the Mail.Send application permission with admin consent (Mail.ReadWrite for messages over 4 MB), \
             and check that no application access policy keeps it from this mailbox",
        ))),
        404 => Outcome::Fail(MailError::NotFound(text(&format!(
            "; there is no mailbox {user} in the tenant: check `user`"
        )))),
        413 => Outcome::Fail(MailError::Permanent(text(
            "; the message is over the mailbox's size limit (35 MB by default): send smaller attachments or a link",
        ))),
        400 if code == "ErrorMessageSizeExceeded" => Outcome::Fail(MailError::Permanent(text(
            "; the message is over the mailbox's size limit (35 MB by default): send smaller attachments or a link",
        ))),
        400 if code == "ErrorInvalidRecipients" || code == "ErrorInvalidUser" => {
            Outcome::Fail(MailError::InvalidInput(FieldError {
                field: "message".into(),
                reason: text("; check the recipients' addresses"),
            }))
        }
        400..=499 => Outcome::Fail(MailError::Permanent(text(""))),
        _ => Outcome::Fail(MailError::Transient(text(
            "; Graph had a problem; the send is tried again later",
        ))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::time::Duration;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> reqwest::header::HeaderMap {
        let mut h = reqwest::header::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn each_answer_gets_its_case_and_fix() {
        let h = headers(&[("request-id", "abc-123"), ("retry-after", "7")]);
        assert!(matches!(
            classify("sendMail", "u@x", 429, &h, b""),
            Outcome::RetryAfter(d) if d == Duration::from_secs(7)
        ));
        assert!(matches!(
            classify("sendMail", "u@x", 401, &h, b""),
            Outcome::Refresh
        ));
        let denied = br#"{"error":{"code":"ErrorAccessDenied","message":"Access is denied."}}"#;
        let Outcome::Fail(e) = classify("sendMail", "u@x", 403, &h, denied) else {
            panic!()
        };
        assert_eq!(e.kind_name(), "access-denied");
        assert!(
            e.message().contains("ErrorAccessDenied")
                && e.message().contains("abc-123")
                && e.message().contains("Mail.Send application permission"),
            "{e:?}"
        );
        let Outcome::Fail(e) = classify("sendMail", "nobody@x", 404, &h, b"") else {
            panic!()
        };
        assert!(e.message().contains("no mailbox nobody@x"), "{e:?}");
        let Outcome::Fail(e) = classify("sendMail", "u@x", 500, &h, b"") else {
            panic!()
        };
        assert!(e.is_retryable());
    }
}
