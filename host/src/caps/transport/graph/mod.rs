//! Microsoft Graph as a transport: `POST /users/{user}/sendMail` with the MIME the plugin
//! composed, as the documented contract says (base64, `Content-Type: text/plain`). The
//! token comes from the token store (client credentials, or a delegated authorization);
//! the HTTP client uses the shared TLS policy.

mod classify;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;

use self::classify::{Outcome, classify, request_id};
use super::Transport;
use crate::BoxFuture;
use crate::auth::TokenSource;
use crate::bindings::MailError;
use crate::bindings::transport::{Delivery, DeliveryStatus, Envelope};
use crate::bindings::types::FieldError;

/// The largest request Graph takes in one piece; larger messages need an upload session.
pub const MAX_REQUEST: usize = 4 * 1024 * 1024;

/// One account's Graph mailbox for sending.
pub struct Graph {
    base: String,
    user: String,
    token: Arc<dyn TokenSource>,
    http: reqwest::Client,
    /// The longest total wait for throttling before the send fails.
    max_wait: Duration,
}

impl Graph {
    /// Sends as `user` through the Graph API at `base` (for example
    /// `https://graph.microsoft.com/v1.0`).
    pub fn new(
        base: &str,
        user: &str,
        token: Arc<dyn TokenSource>,
        http: reqwest::Client,
        max_wait: Duration,
    ) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            user: user.to_owned(),
            token,
            http,
            max_wait,
        }
    }

    async fn send_mime(&self, envelope: &Envelope, message: &[u8]) -> Result<Delivery, MailError> {
        let mime = with_bcc(message, envelope);
        let body = base64::engine::general_purpose::STANDARD.encode(&mime);
        if body.len() > MAX_REQUEST {
            return Err(MailError::InvalidInput(FieldError {
                field: "message".into(),
                reason: format!(
                    "the message is {} bytes in base64, over the {MAX_REQUEST} bytes Graph takes in one request; \
                     this version sends larger messages only through SMTP: send smaller attachments, or use an SMTP account",
                    body.len()
                ),
            }));
        }
        let url = format!("{}/users/{}/sendMail", self.base, path_segment(&self.user));
        let started = Instant::now();
        let mut token = self.token.access_token().await?;
        let mut token_at = crate::unix_now();
        let mut refreshed = false;
        loop {
            let response = self
                .http
                .post(&url)
                .bearer_auth(token.expose())
                .header(reqwest::header::CONTENT_TYPE, "text/plain")
                .body(body.clone())
                .send()
                .await
                .map_err(|e| {
                    MailError::Transient(format!(
                        "Graph sendMail for {} could not be reached: {}",
                        self.user,
                        http_error(&e)
                    ))
                })?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            if status == 202 || status == 200 {
                return Ok(Delivery {
                    transport: "graph".into(),
                    // 202 Accepted: queued for delivery, not delivered.
                    status: DeliveryStatus::Queued,
                    accepted: envelope.recipients.clone(),
                    reference: request_id(&headers),
                });
            }
            let body = response.bytes().await.unwrap_or_default();
            match classify("sendMail", &self.user, status, &headers, &body) {
                Outcome::RetryAfter(wait) => {
                    if started.elapsed() + wait > self.max_wait {
                        return Err(MailError::Transient(format!(
                            "Graph throttled sendMail for {} and asks to wait {wait:?}, past the limit of {:?} for one send; \
                             the send is tried again later",
                            self.user, self.max_wait
                        )));
                    }
                    tracing::info!(
                        "Graph throttled sendMail for {}; waiting {wait:?}",
                        self.user
                    );
                    tokio::time::sleep(wait).await;
                }
                Outcome::Refresh if !refreshed => {
                    refreshed = true;
                    token = self.token.refresh_after_rejection(token_at).await?;
                    token_at = crate::unix_now();
                }
                Outcome::Refresh => {
                    return Err(MailError::AuthFailed(format!(
                        "Graph refused the token for {} again after a refresh; check the app's client ID, secret and tenant",
                        self.user
                    )));
                }
                Outcome::Fail(e) => return Err(e),
            }
        }
    }
}

impl Transport for Graph {
    fn send<'a>(
        &'a self,
        envelope: &'a Envelope,
        message: &'a [u8],
    ) -> BoxFuture<'a, Result<Delivery, MailError>> {
        Box::pin(self.send_mime(envelope, message))
    }
}

/// A reqwest error with its causes, as one line.
fn http_error(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// `user` as one URL path segment.
fn path_segment(user: &str) -> String {
    user.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'@' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The message with a `Bcc:` header for the envelope's recipients that its `To` and `Cc`
/// do not name: Graph takes the recipients of a MIME send from its header, and keeps
/// `Bcc` out of what the others receive.
fn with_bcc(message: &[u8], envelope: &Envelope) -> Vec<u8> {
    let named: Vec<String> = mail_parser::MessageParser::default()
        .parse_headers(message)
        .map(|m| {
            [m.to(), m.cc()]
                .into_iter()
                .flatten()
                .flat_map(|a| a.iter())
                .filter_map(|a| a.address())
                .map(str::to_ascii_lowercase)
                .collect()
        })
        .unwrap_or_default();
    let hidden: Vec<&str> = envelope
        .recipients
        .iter()
        .filter(|r| !named.contains(&r.to_ascii_lowercase()))
        .map(String::as_str)
        .collect();
    if hidden.is_empty() {
        return message.to_vec();
    }
    let mut out = format!("Bcc: {}\r\n", hidden.join(", ")).into_bytes();
    out.extend_from_slice(message);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn bcc_recipients_go_into_the_mime_header_for_graph() {
        let message = b"From: a@x.example\r\nTo: b@x.example\r\nCc: C <c@x.example>\r\nSubject: s\r\n\r\nbody\r\n";
        let envelope = Envelope {
            sender: "a@x.example".into(),
            recipients: vec![
                "b@x.example".into(),
                "C@x.example".into(),
                "hidden@x.example".into(),
            ],
        };
        let out = with_bcc(message, &envelope);
        assert!(out.starts_with(b"Bcc: hidden@x.example\r\nFrom: a@x.example\r\n"));
        let plain = Envelope {
            recipients: vec!["b@x.example".into()],
            ..envelope
        };
        assert_eq!(with_bcc(message, &plain), message.to_vec());
        assert_eq!(path_segment("a b@x.example"), "a%20b@x.example");
    }
}
