//! The stream type every protocol client of the host runs on.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A connection to a server: plaintext or TLS, optionally replaying bytes before the
/// server's own. After SMTP STARTTLS the server sends no new greeting, but lettre's
/// connection starts by reading one; a replayed `220` lets it go straight on to the second
/// EHLO.
#[derive(Debug)]
pub struct Stream {
    pending: Vec<u8>,
    read: usize,
    inner: Inner,
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
        }
    }

    pub fn tls(tls: TlsStream<TcpStream>) -> Self {
        Self {
            pending: Vec::new(),
            read: 0,
            inner: Inner::Tls(Box::new(tls)),
        }
    }

    /// Replays `bytes` to the reader before the server's own bytes.
    pub fn replaying(mut self, bytes: Vec<u8>) -> Self {
        self.pending = bytes;
        self.read = 0;
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
        match &mut self.inner {
            Inner::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
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
