//! The plaintext part of an SMTP session that the host drives itself before lettre takes
//! the stream over: the greeting, EHLO and STARTTLS.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::net::Stream;

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

impl lettre::transport::smtp::client::AsyncTokioStream for Stream {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        Stream::peer_addr(self)
    }
}
