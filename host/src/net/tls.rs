//! The TLS policy: rustls with the ring provider, the account's CA file or the public web
//! PKI roots, TLS 1.2 or 1.3 at least. Certificate checks cannot be switched off: there is no
//! setting, and no code path, that builds a verifier which accepts any certificate.

use std::io;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The lowest TLS version an account accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinTls {
    V12,
    V13,
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn a_ca_file_must_hold_a_certificate() {
        let e = tls_config(Some(b"not a certificate"), MinTls::V12).unwrap_err();
        assert!(e.contains("no certificate"), "{e}");
        assert!(tls_config(None, MinTls::V13).is_ok());
    }

    #[test]
    fn the_http_client_takes_the_same_policy() {
        let tls = tls_config(None, MinTls::V13).unwrap();
        assert!(
            crate::net::http_client(&tls, std::time::Duration::from_secs(5)).is_ok(),
            "reqwest accepts the shared rustls configuration"
        );
    }
}
