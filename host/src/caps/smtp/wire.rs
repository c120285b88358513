//! The host's own SMTP connections: TCP with `TCP_NODELAY`, TLS by rustls with the
//! account's trust and minimum version, and the STARTTLS exchange, before lettre takes
//! the stream over. Owning the socket is what makes stage timing, TLS details and
//! throughput (no Nagle stall on the final `.`) possible.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The lowest TLS version an account accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinTls {
    V12,
    V13,
}

/// What went wrong below SMTP, before lettre has the stream.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("the server does not offer STARTTLS: {0}")]
    NoStartTls(String),
    #[error("the server refused STARTTLS: {0}")]
    StartTlsRefused(String),
    #[error("the server's greeting or reply is not SMTP: {0}")]
    Protocol(String),
}

/// Builds the rustls configuration: the account's CA file alone if it has one, else the
/// public web PKI roots; TLS 1.2 and 1.3, or 1.3 only.
pub fn tls_config(ca_pem: Option<&[u8]>, min: MinTls) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            use rustls::pki_types::pem::PemObject;
            let mut found = 0;
            for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("the CA file is not PEM: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("the CA file holds an unusable certificate: {e}"))?;
                found += 1;
            }
            if found == 0 {
                return Err("the CA file holds no certificate".into());
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let versions: &[&rustls::SupportedProtocolVersion] = match min {
        MinTls::V12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        MinTls::V13 => &[&rustls::version::TLS13],
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Resolves `host:port`.
pub async fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{host} has no address"),
        ));
    }
    Ok(addrs)
}

/// Connects to the first address that answers, with `TCP_NODELAY`.
pub async fn connect(addrs: &[SocketAddr], timeout: Duration) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address to connect to");
    for addr in addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => {
                tcp.set_nodelay(true)?;
                return Ok(tcp);
            }
            Ok(Err(e)) => last = e,
            Err(_) => {
                last = io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connecting to {addr} timed out"),
                )
            }
        }
    }
    Err(last)
}

/// Reads one SMTP reply (all its lines) byte by byte, so nothing after it is consumed.
async fn reply(tcp: &mut TcpStream) -> Result<(u16, String), WireError> {
    let mut text = String::new();
    loop {
        let mut line = Vec::new();
        loop {
            let b = tcp.read_u8().await?;
            line.push(b);
            if b == b'\n' || line.len() > 4096 {
                break;
            }
        }
        let line = String::from_utf8_lossy(&line).trim_end().to_owned();
        let code = line
            .get(..3)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| WireError::Protocol(line.clone()))?;
        let last = line.as_bytes().get(3) != Some(&b'-');
        text.push_str(&line);
        text.push('\n');
        if last {
            return Ok((code, text.trim_end().to_owned()));
        }
    }
}

/// The plaintext part of a STARTTLS session: greeting, EHLO, STARTTLS.
pub async fn starttls(tcp: &mut TcpStream, hello: &str) -> Result<String, WireError> {
    let (code, greeting) = reply(tcp).await?;
    if code != 220 {
        return Err(WireError::Protocol(greeting));
    }
    tcp.write_all(format!("EHLO {hello}\r\n").as_bytes())
        .await?;
    let (code, ehlo) = reply(tcp).await?;
    if code != 250 {
        return Err(WireError::Protocol(ehlo));
    }
    if !ehlo.lines().any(|l| {
        l.get(4..)
            .is_some_and(|k| k.eq_ignore_ascii_case("STARTTLS"))
    }) {
        return Err(WireError::NoStartTls(ehlo));
    }
    tcp.write_all(b"STARTTLS\r\n").await?;
    let (code, text) = reply(tcp).await?;
    if code != 220 {
        return Err(WireError::StartTlsRefused(text));
    }
    Ok(greeting)
}

/// Runs the TLS handshake for `host`.
pub async fn handshake(
    tcp: TcpStream,
    host: &str,
    config: Arc<ClientConfig>,
) -> io::Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    TlsConnector::from(config).connect(name, tcp).await
}

/// What the TLS handshake agreed on, for Test Mail.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TlsInfo {
    pub version: String,
    pub cipher: String,
    pub subject: String,
    pub issuer: String,
    pub not_before: String,
    pub not_after: String,
}

impl TlsInfo {
    pub fn of(tls: &TlsStream<TcpStream>) -> Self {
        let conn = tls.get_ref().1;
        let version = conn
            .protocol_version()
            .map(|v| format!("{v:?}"))
            .unwrap_or_default();
        let cipher = conn
            .negotiated_cipher_suite()
            .map(|c| format!("{:?}", c.suite()))
            .unwrap_or_default();
        let cert = conn.peer_certificates().and_then(|c| c.first());
        let parsed = cert.and_then(|c| {
            x509_parser::parse_x509_certificate(c.as_ref())
                .ok()
                .map(|(_, x)| x)
        });
        let (subject, issuer, not_before, not_after) = match parsed {
            Some(x) => (
                x.subject().to_string(),
                x.issuer().to_string(),
                x.validity().not_before.to_string(),
                x.validity().not_after.to_string(),
            ),
            None => Default::default(),
        };
        Self {
            version,
            cipher,
            subject,
            issuer,
            not_before,
            not_after,
        }
    }
}

/// The stream lettre drives: plaintext or TLS, optionally replaying a synthetic greeting.
/// After STARTTLS the server sends no new greeting, but lettre's connection starts by
/// reading one; the replayed `220` lets it go straight on to the required second EHLO.
#[derive(Debug)]
pub struct Wire {
    pending: Vec<u8>,
    read: usize,
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Wire {
    pub fn plain(tcp: TcpStream) -> Self {
        Self {
            pending: Vec::new(),
            read: 0,
            inner: Inner::Plain(tcp),
        }
    }

    pub fn tls(tls: TlsStream<TcpStream>) -> Self {
        Self {
            pending: Vec::new(),
            read: 0,
            inner: Inner::Tls(Box::new(tls)),
        }
    }

    /// Replays `greeting` to the reader before the server's own bytes.
    pub fn replaying(mut self, greeting: &str) -> Self {
        self.pending = format!("220 {greeting}\r\n").into_bytes();
        self
    }
}

impl AsyncRead for Wire {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.read < self.pending.len() {
            let n = buf.remaining().min(self.pending.len() - self.read);
            let start = self.read;
            buf.put_slice(&self.pending[start..start + n]);
            self.read += n;
            return Poll::Ready(Ok(()));
        }
        match &mut self.inner {
            Inner::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Wire {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.inner {
            Inner::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.inner {
            Inner::Plain(s) => Pin::new(s).poll_flush(cx),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.inner {
            Inner::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl lettre::transport::smtp::client::AsyncTokioStream for Wire {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        match &self.inner {
            Inner::Plain(s) => s.peer_addr(),
            Inner::Tls(s) => s.get_ref().0.peer_addr(),
        }
    }
}
