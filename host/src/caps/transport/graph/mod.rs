//! Microsoft Graph as a transport: `POST /users/{user}/sendMail` with the MIME the plugin
//! composed, as the documented contract says (base64, `Content-Type: text/plain`), and for
//! a request that would pass 4 MB a draft with upload sessions ([`large`]). The token
//! comes from the token store (client credentials, or a delegated authorization); the
//! HTTP client uses the shared TLS policy. Every answer is classified once, in
//! [`classify`].

mod classify;
mod large;
pub mod test_mail;

use base64::Engine as _;

use self::classify::classify;
use super::Transport;
use crate::BoxFuture;
use crate::bindings::MailError;
use crate::bindings::transport::{Delivery, DeliveryStatus, Envelope};
use crate::net::graph::{Answer, Call, GraphApi, Token, request_id};

/// The largest request Graph takes in one piece; larger messages need an upload session.
pub const MAX_REQUEST: usize = 4 * 1024 * 1024;

/// One account's Graph mailbox for sending.
pub struct Graph {
    api: GraphApi,
}

impl Graph {
    /// Sends as the mailbox `api` serves.
    pub fn new(api: GraphApi) -> Self {
        Self { api }
    }

    async fn send_mime(&self, envelope: &Envelope, message: &[u8]) -> Result<Delivery, MailError> {
        let mime = with_bcc(message, envelope);
        let body = base64::engine::general_purpose::STANDARD.encode(&mime);
        let mut token = self.api.token().await?;
        let headers = if body.len() <= MAX_REQUEST {
            let call = Call::new(
                "sendMail",
                reqwest::Method::POST,
                self.api.url("/sendMail"),
                "text/plain",
                body.into_bytes(),
            );
            self.call(call, &mut token).await?.headers
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

    /// Makes `call`, with the failures of sending classified.
    async fn call(&self, call: Call<'_>, token: &mut Token) -> Result<Answer, MailError> {
        let user = self.api.user.clone();
        let classify = move |what: &str, status, headers: &_, body: &[u8]| {
            classify(what, &user, status, headers, body)
        };
        self.api.call(call, token, &classify).await
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

    fn kind(&self) -> &'static str {
        "graph"
    }
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
        assert_eq!(
            crate::net::graph::path_segment("a b@x.example"),
            "a%20b@x.example"
        );
    }
}
