//! The stream type every protocol client of the host runs on.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A connection to a server: plaintext or TLS, optionally replaying bytes before the
/// server's own. After SMTP STARTTLS the server sends no new greeting, but lettre's
/// connection starts by reading one; a replayed `220` lets it go straight on to the second
/// EHLO. A [`Recording`] keeps a copy of what the server sends until it is taken: what a
/// protocol library reads and does not expose, such as the extensions an SMTP server
/// lists in its EHLO reply.
#[derive(Debug)]
pub struct Stream {
    pending: Vec<u8>,
    read: usize,
    inner: Inner,
    recording: Option<Recording>,
}

/// A copy of the bytes a [`Stream`] reads from its server, from when it is attached until
/// [`Recording::take`]; it keeps at most [`Recording::LIMIT`] bytes.
#[derive(Debug, Clone, Default)]
pub struct Recording(Arc<Mutex<Option<Vec<u8>>>>);

impl Recording {
    /// The most a recording keeps: the first bytes of a session are what it is for.
    pub const LIMIT: usize = 64 * 1024;

    pub fn new() -> Self {
        Self(Arc::new(Mutex::new(Some(Vec::new()))))
    }

    /// What was read so far; the recording stops.
    pub fn take(&self) -> Vec<u8> {
        match self.0.lock() {
            Ok(mut bytes) => bytes.take().unwrap_or_default(),
            Err(poisoned) => poisoned.into_inner().take().unwrap_or_default(),
        }
    }

    fn keep(&self, read: &[u8]) {
        if let Ok(mut bytes) = self.0.lock()
            && let Some(bytes) = bytes.as_mut()
        {
            let room = Self::LIMIT.saturating_sub(bytes.len());
            bytes.extend_from_slice(&read[..read.len().min(room)]);
        }
    }
}

#[derive(Debug)]
enum Inner {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    pub fn plain(tcp: TcpStream) -> Self {
        Self {
            pending: Vec::new(),
            read: 0,
            inner: Inner::Plain(tcp),
            recording: None,
        }
    }

    pub fn tls(tls: TlsStream<TcpStream>) -> Self {
        Self {
            pending: Vec::new(),
            read: 0,
            inner: Inner::Tls(Box::new(tls)),
            recording: None,
        }
    }

    /// Replays `bytes` to the reader before the server's own bytes.
    pub fn replaying(mut self, bytes: Vec<u8>) -> Self {
        self.pending = bytes;
        self.read = 0;
        self
    }

    /// Copies what the server sends from now on into `recording`, until it is taken.
    pub fn recording(mut self, recording: Recording) -> Self {
        self.recording = Some(recording);
        self
    }

    /// The address of the peer.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        match &self.inner {
            Inner::Plain(s) => s.peer_addr(),
            Inner::Tls(s) => s.get_ref().0.peer_addr(),
        }
    }
}

impl AsyncRead for Stream {
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
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = match &mut this.inner {
            Inner::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        if let (Some(recording), Poll::Ready(Ok(()))) = (&this.recording, &polled) {
            recording.keep(&buf.filled()[before..]);
        }
        polled
    }
}

impl AsyncWrite for Stream {
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
