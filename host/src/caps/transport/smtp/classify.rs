//! The SMTP capability's one place of error classification: every failure becomes a
//! `mail-error` case with the server's reply (secrets redacted) and, where one is known,
//! the fix.

use std::io;

use super::session::{Auth, Cause, Failure, Stage};
use super::wire::WireError;
use crate::bindings::MailError;

/// Replies that providers send, with what the user has to do.
const KNOWN_REPLIES: &[(&str, &str)] = &[
    (
        "5.7.139",
        "SMTP AUTH is disabled for the tenant. Enable it for the mailbox, or use the Graph communication type",
    ),
    (
        "5.7.3",
        "the token was issued for another account than the username; authorize as that user, or change the username",
    ),
    (
        "5.7.57",
        "the server requires authentication before sending; turn authentication on for this account",
    ),
    (
        "Must issue a STARTTLS command first",
        "the server accepts mail only over TLS; use STARTTLS (the default) or ssl = true",
    ),
];

fn fix_for(text: &str) -> Option<&'static str> {
    KNOWN_REPLIES
        .iter()
        .find(|(needle, _)| text.contains(needle))
        .map(|(_, fix)| *fix)
}

fn redact(mut text: String, secrets: &[&str]) -> String {
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        text = text.replace(s, "[redacted]");
    }
    text
}

fn io_kind(e: &io::Error) -> io::ErrorKind {
    e.kind()
}

fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

/// Turns `failure` into the `mail-error` the guest sees. `server` names the endpoint;
/// `auth` is how the session authenticates (its password is redacted from the text).
pub fn classify(failure: &Failure, server: &str, auth: &Auth) -> MailError {
    let secrets: Vec<&str> = match auth {
        Auth::Basic { password, .. } => vec![password.expose()],
        _ => Vec::new(),
    };
    let anonymous = matches!(auth, Auth::None);
    let stage = failure.stage.title();
    let (case, text): (fn(String) -> MailError, String) = match &failure.cause {
        Cause::TimedOut(limit) => (
            MailError::Transient,
            format!(
                "{server} did not answer within {limit:?} at the {stage} stage; check that it is up, or raise timeout_secs"
            ),
        ),
        Cause::Token(e) => return e.clone(),
        Cause::Address(e) => (
            MailError::Permanent,
            format!("an envelope address was refused before sending: {e}"),
        ),
        Cause::Wire(WireError::NoStartTls(ehlo)) => (
            MailError::Permanent,
            format!(
                "{server} does not offer STARTTLS (it said: {}); use ssl = true if it speaks implicit TLS, \
                 or tls = \"none\" only for a trusted relay on a private network",
                ehlo.replace('\n', " / ")
            ),
        ),
        Cause::Wire(WireError::StartTlsRefused(reply)) => (
            MailError::Transient,
            format!("{server} refused STARTTLS: {reply}"),
        ),
        Cause::Wire(WireError::Protocol(line)) => {
            let case: fn(String) -> MailError = if line.starts_with('4') {
                MailError::Transient
            } else {
                MailError::Permanent
            };
            (
                case,
                format!("{server} answered `{line}` at the {stage} stage; is this an SMTP port?"),
            )
        }
        Cause::Wire(WireError::Io(e)) => match (failure.stage, rustls_error(e)) {
            (Stage::Tls, Some(_)) => (
                MailError::Permanent,
                crate::net::explain_tls(e, server)
                    .unwrap_or_else(|| format!("TLS with {server} failed: {e}")),
            ),
            (Stage::Dns, _) => (
                MailError::Transient,
                format!("cannot resolve {server}: {e}; check the SMTP host name"),
            ),
            _ => match io_kind(e) {
                io::ErrorKind::ConnectionRefused => (
                    MailError::Transient,
                    format!(
                        "{server} refused the connection: is the server up, and is the port right?"
                    ),
                ),
                _ => (
                    MailError::Transient,
                    format!("the connection to {server} failed at the {stage} stage: {e}"),
                ),
            },
        },
        Cause::AfterData(e) if e.status().is_none() => (
            MailError::Transient,
            format!(
                "the session with {server} broke after the message was sent, before the server confirmed it ({e}); it may have been queued, so it was not sent again automatically"
            ),
        ),
        Cause::Smtp(e) | Cause::AfterData(e) => {
            let text = e.to_string();
            let code = e.status().map(|c| c.to_string()).unwrap_or_default();
            let auth_reply = failure.stage == Stage::Auth && (e.is_permanent() || e.is_transient());
            let auth_code = matches!(code.as_str(), "535" | "534" | "530" | "538")
                && failure.stage == Stage::Auth;
            let known_auth = ["5.7.139", "5.7.3"].iter().any(|k| text.contains(k));
            if auth_code || known_auth || (auth_reply && e.is_permanent()) {
                (
                    MailError::AuthFailed,
                    format!(
                        "{server} refused the credentials: {text}{}",
                        match fix_for(&text) {
                            Some(_) => "",
                            None => {
                                "; check the account's username and password, or for OAuth2 run `flowmail authorize` again"
                            }
                        }
                    ),
                )
            } else if failure.stage == Stage::Auth && e.is_client() {
                (
                    MailError::Permanent,
                    format!(
                        "{server} offers no authentication mechanism flowmail can use here ({text}); AUTH is often offered only over TLS"
                    ),
                )
            } else if e.is_transient() {
                (MailError::Transient, format!("{server} answered {text}"))
            } else if e.is_permanent() {
                let hint = if anonymous
                    && failure.stage == Stage::Transaction
                    && text.contains("5.7.1")
                {
                    "; the server may require authentication for relaying: give the account an auth section"
                } else {
                    ""
                };
                (
                    MailError::Permanent,
                    format!("{server} refused: {text}{hint}"),
                )
            } else {
                (
                    MailError::Transient,
                    format!("the session with {server} broke at the {stage} stage: {text}"),
                )
            }
        }
    };
    let text = match fix_for(&text) {
        Some(fix) => format!("{text}. Fix: {fix}"),
        None => text,
    };
    case(redact(text, &secrets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_secrets_and_adds_known_fixes() {
        let f = Failure {
            stage: Stage::Tcp,
            cause: Cause::TimedOut(std::time::Duration::from_secs(1)),
        };
        assert!(matches!(
            classify(&f, "h:1", &Auth::None),
            MailError::Transient(_)
        ));
        assert_eq!(
            redact("token abcd1234 bad".into(), &["abcd1234"]),
            "token [redacted] bad"
        );
        assert!(
            fix_for("535 5.7.139 Authentication unsuccessful").is_some_and(|f| f.contains("Graph"))
        );
        assert!(
            fix_for("530 5.7.0 Must issue a STARTTLS command first")
                .is_some_and(|f| f.contains("STARTTLS"))
        );
    }
}
