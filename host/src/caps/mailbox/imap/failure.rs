//! What goes wrong talking to an IMAP server, and the one place it becomes a [`MailError`].

use std::time::Duration;

use crate::bindings::MailError;

/// An IMAP backend failure, before classification.
#[derive(Debug)]
pub(super) enum Failure {
    /// A command failed: the server said NO or BAD, or the connection broke under it.
    Command(String, async_imap::error::Error),
    /// No connection: name resolution, TCP or the greeting failed.
    Unreachable(std::io::Error),
    /// The TLS handshake failed: an untrusted certificate, or a version below `min_tls`.
    Tls(std::io::Error),
    /// A step outlasted its limit: the server accepts but does not answer.
    Silent { during: String, limit: Duration },
    /// The server named no UIDVALIDITY for the folder, as while it is being recreated.
    NoValidity { folder: String },
    /// No message has this UID.
    NoMessage(u32),
    /// The server ended IDLE by closing the connection.
    IdleDropped,
    /// A session broke again right after being reopened.
    KeepsBreaking,
    /// The server refused the access token, and refreshing it failed too.
    TokenRefused { reply: String, refresh: String },
}

impl Failure {
    /// Classifies the failure for `server` (`host:port`), with the fix where one is known.
    pub(super) fn classify(self, server: &str) -> MailError {
        use async_imap::error::Error as E;
        match self {
            Failure::Command(what, e) => match e.tidy() {
                E::No(text)
                    if text.contains("AUTHENTICATIONFAILED") || what == "authentication" =>
                {
                    MailError::AuthFailed(format!(
                        "{server} refused the credentials: {text}; check the account's username and password or token"
                    ))
                }
                E::No(text)
                    if text.contains("NONEXISTENT")
                        || text.to_ascii_lowercase().contains("doesn't exist") =>
                {
                    MailError::NotFound(format!("{server}: {what}: {text}"))
                }
                E::No(text) | E::Bad(text) => {
                    MailError::Permanent(format!("{server} refused {what}: {text}"))
                }
                E::Io(e) => MailError::Transient(format!(
                    "the connection to {server} failed during {what}: {e}"
                )),
                E::ConnectionLost => {
                    MailError::Transient(format!("{server} closed the connection during {what}"))
                }
                E::Parse(e) => parse_failure(server, &what, e),
                E::Validate(e) => MailError::Permanent(format!(
                    "{what} could not be sent to {server}: the character {:?} is not allowed in an IMAP string; \
                     check the folder name and the search terms",
                    e.0
                )),
                E::Append => MailError::Permanent(format!(
                    "{server} would not store the message ({what}); check the folder and its quota"
                )),
                other => MailError::Transient(format!("{what} with {server} failed: {other}")),
            },
            Failure::Unreachable(e) => MailError::Transient(format!("cannot reach {server}: {e}")),
            Failure::Tls(e) => {
                MailError::Permanent(crate::net::explain_tls(&e, server).unwrap_or_else(|| {
                    format!("TLS with {server} failed: {e}; check ca_file and min_tls")
                }))
            }
            Failure::Silent { during, limit } => {
                MailError::Transient(format!("{server} did not answer {during} within {limit:?}"))
            }
            Failure::NoValidity { folder } => MailError::Transient(format!(
                "{server} reported no UIDVALIDITY for {folder}; the folder may be being recreated"
            )),
            Failure::NoMessage(uid) => {
                MailError::NotFound(format!("no message with UID {uid} on {server}"))
            }
            Failure::IdleDropped => {
                MailError::Transient(format!("{server} closed the connection during IDLE"))
            }
            Failure::KeepsBreaking => {
                MailError::Transient(format!("the IMAP session to {server} keeps breaking"))
            }
            Failure::TokenRefused { reply, refresh } => MailError::AuthFailed(format!(
                "{server} refused the access token ({reply}), and refreshing it failed: {refresh}"
            )),
        }
    }
}

/// The server's reply as a person reads it. async-imap hands NO and BAD replies over as
/// the `Debug` text of their parts (`code: Some(Nonexistent), info: Some("...")`); this
/// turns that back into `[NONEXISTENT] ...`.
fn reply_text(raw: &str) -> String {
    let info = raw
        .split_once("info: Some(\"")
        .and_then(|(_, rest)| rest.rsplit_once("\")"))
        .map(|(info, _)| info.replace("\\\"", "\"").replace("\\\\", "\\"));
    let code = raw
        .strip_prefix("code: Some(")
        .and_then(|rest| rest.split_once("), info:"))
        .map(|(code, _)| code.to_ascii_uppercase());
    match (code, info) {
        (Some(code), Some(info)) => format!("[{code}] {info}"),
        (None, Some(info)) => info,
        (Some(code), None) => format!("[{code}]"),
        (None, None) => raw.to_owned(),
    }
}

trait Tidy {
    fn tidy(self) -> Self;
}

impl Tidy for async_imap::error::Error {
    fn tidy(self) -> Self {
        use async_imap::error::Error as E;
        match self {
            E::No(text) => E::No(reply_text(&text)),
            E::Bad(text) => E::Bad(reply_text(&text)),
            other => other,
        }
    }
}

/// A reply async-imap could not read, as a sentence: what came, and what to check.
fn parse_failure(server: &str, what: &str, e: async_imap::error::ParseError) -> MailError {
    use async_imap::error::ParseError as P;
    let shown = |bytes: &[u8]| -> String {
        let text = String::from_utf8_lossy(bytes);
        let line = text.lines().next().unwrap_or_default().trim();
        let mut short: String = line.chars().take(100).collect();
        if short.len() < line.len() {
            short.push('…');
        }
        short
    };
    match e {
        P::Invalid(bytes) => MailError::Transient(format!(
            "{server} answered {what} with `{}`, which is not an IMAP reply; is this an IMAP port, \
             and does the ssl setting match it (993 is implicit TLS, 143 STARTTLS)?",
            shown(&bytes)
        )),
        P::Unexpected(reply) => MailError::Transient(format!(
            "{server} answered {what} with a reply that does not belong to it: {}",
            shown(reply.as_bytes())
        )),
        P::Authentication(reply, _) => MailError::AuthFailed(format!(
            "{server} sent an authentication challenge that could not be read ({}); \
             check that it supports the account's mechanism",
            shown(reply.as_bytes())
        )),
        P::DataNotUtf8(bytes, _) => MailError::Transient(format!(
            "{server} answered {what} with text that is not UTF-8: `{}`",
            shown(&bytes)
        )),
        P::ExpectedResponseNotFound(expected) => MailError::Transient(format!(
            "{server} did not send the {expected} reply that {what} needs"
        )),
    }
}

/// Classifies a failed IMAP command `what`.
pub(super) fn classify(server: &str, what: &str, e: async_imap::error::Error) -> MailError {
    Failure::Command(what.to_owned(), e).classify(server)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use async_imap::error::Error as E;

    #[test]
    fn server_replies_read_as_sentences() {
        assert_eq!(
            reply_text("code: None, info: Some(\"[AUTHENTICATIONFAILED] Authentication failed.\")"),
            "[AUTHENTICATIONFAILED] Authentication failed."
        );
        assert_eq!(
            reply_text("code: Some(Nonexistent), info: Some(\"Mailbox doesn't exist: Nope\")"),
            "[NONEXISTENT] Mailbox doesn't exist: Nope"
        );
        let e = Failure::Command(
            "SELECT".into(),
            E::No("code: Some(Nonexistent), info: Some(\"Mailbox doesn't exist: Nope\")".into()),
        )
        .classify("imap.example:993");
        assert_eq!(e.kind_name(), "not-found");
        assert!(!e.message().contains("info:"), "{e:?}");
    }

    #[test]
    fn each_failure_gets_its_case_and_fix() {
        let s = "imap.example:993";
        let kind = |f: Failure| f.classify(s).kind_name();
        assert_eq!(
            kind(Failure::Command(
                "authentication".into(),
                E::No("[AUTHENTICATIONFAILED] no".into())
            )),
            "auth-failed"
        );
        assert_eq!(
            kind(Failure::Command(
                "SELECT".into(),
                E::No("[NONEXISTENT] Mailbox doesn't exist".into())
            )),
            "not-found"
        );
        assert_eq!(
            kind(Failure::Command("UID MOVE".into(), E::Bad("syntax".into()))),
            "permanent"
        );
        assert_eq!(
            kind(Failure::Command("NOOP".into(), E::ConnectionLost)),
            "transient"
        );
        let tls = Failure::Tls(std::io::Error::other("invalid peer certificate")).classify(s);
        assert!(tls.message().contains("ca_file"), "{tls:?}");
        assert_eq!(tls.kind_name(), "permanent");
        assert!(
            Failure::Silent {
                during: "IDLE".into(),
                limit: Duration::from_secs(3)
            }
            .classify(s)
            .is_retryable()
        );
        assert_eq!(kind(Failure::NoMessage(7)), "not-found");
    }

    #[test]
    fn replies_that_cannot_be_read_say_what_came() {
        use async_imap::error::{ParseError as P, ValidateError};
        let s = "imap.example:993";
        let garbage = Failure::Command(
            "the greeting".into(),
            E::Parse(P::Invalid(b"220 mx.example ESMTP Postfix\r\n".to_vec())),
        )
        .classify(s);
        let text = garbage.message();
        assert!(
            text.contains("`220 mx.example ESMTP Postfix`") && text.contains("IMAP port"),
            "{text}"
        );
        assert!(!text.contains("[50,"), "no byte lists: {text}");
        let binary = Failure::Command(
            "FETCH".into(),
            E::Parse(P::DataNotUtf8(
                vec![0xff, 0xfe, b'x'],
                std::str::from_utf8(&[b'x', 0xff][..]).unwrap_err(),
            )),
        )
        .classify(s);
        assert!(!binary.message().contains("Utf8Error"), "{binary:?}");
        let bad = Failure::Command("SELECT".into(), E::Validate(ValidateError('\n'))).classify(s);
        assert_eq!(bad.kind_name(), "permanent");
        assert!(bad.message().contains("folder name"), "{bad:?}");
    }
}
