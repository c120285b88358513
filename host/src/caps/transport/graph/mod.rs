//! Microsoft Graph as a transport: `POST /users/{user}/sendMail` with the MIME the plugin
//! composed, as the documented contract says (base64, `Content-Type: text/plain`), and for
//! a request that would pass 4 MB a draft with upload sessions ([`large`]). The token
//! comes from the token store (client credentials, or a delegated authorization); the
//! HTTP client uses the shared TLS policy. Every answer is classified once, in
//! [`classify`].

mod classify;
mod large;
pub mod test_mail;

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;

use base64::Engine as _;

use self::classify::{Outcome, classify, request_id};
use super::Transport;
use crate::BoxFuture;
use crate::auth::TokenSource;
use crate::bindings::MailError;
use crate::bindings::transport::{Delivery, DeliveryStatus, Envelope};

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
        let mut token = Token::new(self.token.access_token().await?);
        let headers = if body.len() <= MAX_REQUEST {
            let url = format!("{}/users/{}/sendMail", self.base, path_segment(&self.user));
            let call = Call::new(
                "sendMail",
                reqwest::Method::POST,
                url,
                "text/plain",
                body.into_bytes(),
            );
            self.call(call, &mut token).await?.1
        } else {
            large::send(self, &mime, envelope, &mut token).await?
        };
        Ok(Delivery {
            transport: "graph".into(),
            // 202 Accepted: queued for delivery, not delivered.
            status: DeliveryStatus::Queued,
            accepted: envelope.recipients.clone(),
            reference: request_id(&headers),
        })
    }

    /// Makes `call` with the bearer token: waits out throttling up to the cap, refreshes a
    /// refused token once, and classifies any other failure. Returns a success's status,
    /// headers and body.
    async fn call(
        &self,
        call: Call<'_>,
        token: &mut Token,
    ) -> Result<(u16, HeaderMap, Vec<u8>), MailError> {
        let started = Instant::now();
        loop {
            let mut request = self
                .http
                .request(call.method.clone(), &call.url)
                .header(reqwest::header::CONTENT_TYPE, call.content_type)
                .body(call.body.clone());
            if call.authorized {
                request = request.bearer_auth(token.secret.expose());
            }
            for (name, value) in &call.headers {
                request = request.header(*name, value);
            }
            let response = request.send().await.map_err(|e| {
                MailError::Transient(format!(
                    "Graph {} for {} could not be reached: {}",
                    call.what,
                    self.user,
                    http_error(&e)
                ))
            })?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response
                .bytes()
                .await
                .map(|b| b.to_vec())
                .unwrap_or_default();
            if (200..300).contains(&status) {
                return Ok((status, headers, body));
            }
            match classify(call.what, &self.user, status, &headers, &body) {
                Outcome::RetryAfter(wait) => {
                    if started.elapsed() + wait > self.max_wait {
                        return Err(MailError::Transient(format!(
                            "Graph throttled {} for {} and asks to wait {wait:?}, past the limit of {:?} for one send; \
                             the send is tried again later",
                            call.what, self.user, self.max_wait
                        )));
                    }
                    tracing::info!(
                        "Graph throttled {} for {}; waiting {wait:?}",
                        call.what,
                        self.user
                    );
                    tokio::time::sleep(wait).await;
                }
                Outcome::Refresh if call.authorized && !token.refreshed => {
                    token.secret = self.token.refresh_after_rejection(token.at).await?;
                    token.at = crate::unix_now();
                    token.refreshed = true;
                }
                Outcome::Refresh => {
                    return Err(MailError::AuthFailed(format!(
                        "Graph refused the token for {} ({}) again after a refresh; check the app's client ID, secret and tenant",
                        self.user, call.what
                    )));
                }
                Outcome::Fail(e) => return Err(e),
            }
        }
    }
}

/// The access token of one send, and whether it was refreshed already.
struct Token {
    secret: crate::secret::Secret,
    at: i64,
    refreshed: bool,
}

impl Token {
    fn new(secret: crate::secret::Secret) -> Self {
        Self {
            secret,
            at: crate::unix_now(),
            refreshed: false,
        }
    }
}

/// One request to Graph.
struct Call<'a> {
    what: &'a str,
    method: reqwest::Method,
    url: String,
    content_type: &'a str,
    body: Vec<u8>,
    /// Upload URLs carry their own authorization: no bearer token goes to them.
    authorized: bool,
    headers: Vec<(&'static str, String)>,
}

impl<'a> Call<'a> {
    fn new(
        what: &'a str,
        method: reqwest::Method,
        url: String,
        content_type: &'a str,
        body: Vec<u8>,
    ) -> Self {
        Self {
            what,
            method,
            url,
            content_type,
            body,
            authorized: true,
            headers: Vec::new(),
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
