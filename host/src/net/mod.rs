//! The network layer every capability and the auth layer share: TCP with `TCP_NODELAY`,
//! the TLS policy, the stream type protocol clients run on, the HTTP client for token
//! endpoints and web APIs, and the Microsoft Graph client that the Graph transport and
//! mailbox share ([`graph`]). It knows no capability, no account and no config; only the
//! Graph client takes its tokens from the auth layer's `TokenSource`.

pub mod graph;
mod http;
mod stream;
mod tcp;
mod tls;

use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;

pub use self::http::http_client;
pub use self::stream::{Recording, Stream};
pub use self::tcp::{connect, resolve};
pub use self::tls::{
    MinTls, TlsInfo, explain as explain_tls, full_handshakes, handshake, tls_config,
};

/// How a connection to a mail server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// TLS from the first byte (SMTPS on 465, IMAPS on 993).
    Implicit,
    /// STARTTLS, required (SMTP submission on 587, IMAP on 143).
    StartTls,
    /// Plaintext, only when the config says `tls = "none"`.
    None,
}

/// Where and how to reach a mail server, checked.
#[derive(Clone)]
pub struct Settings {
    pub host: String,
    pub port: u16,
    pub security: Security,
    /// The TLS policy: trusted roots and the minimum version.
    pub tls: Arc<ClientConfig>,
    /// The limit for each network step.
    pub timeout: Duration,
    /// The name given in EHLO (SMTP only).
    pub hello: String,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}
