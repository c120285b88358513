//! The TLS policy: rustls with the ring provider, the account's CA file or the public web
//! PKI roots, TLS 1.2 or 1.3 at least. Certificate checks cannot be switched off: there is no
//! setting, and no code path, that builds a verifier which accepts any certificate.
//!
//! One case goes beyond the chain of trust: a server that presents, as its own certificate,
//! exactly a certificate of the CA file. Internal relays often use a self-signed certificate
//! that is also marked as a CA (`CA:TRUE`), which the web PKI rules refuse to accept as a
//! server's certificate even when it is the trust anchor itself. Such a certificate is
//! trusted as itself (pinned): byte for byte the one in the CA file, for the names it lists,
//! within its validity, and with the handshake signed by its key.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, LazyLock, Mutex, Weak};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The lowest TLS version an account accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MinTls {
    V12,
    V13,
}

/// What a configuration is built from: the CA file's bytes (`None`: the web PKI) and the
/// lowest version.
type Policy = (Option<Vec<u8>>, MinTls);

/// The configurations in use, by the policy they were built from. Accounts with the same
/// CA file and minimum version share one: one parse of the roots instead of one per
/// account (the web PKI's are some 150), and one cache of TLS sessions, so that a
/// connection to a server another account of the same policy reached before resumes that
/// session instead of a full handshake (the server then signs nothing). A resumed session
/// was verified by the same roots and rules, so sharing it trusts nothing the account
/// would not. Held weakly: a policy no account uses any more is dropped.
static SHARED: LazyLock<Mutex<HashMap<Policy, Weak<ClientConfig>>>> =
    LazyLock::new(Default::default);

/// The shared configurations. A poisoned lock only means that another thread panicked
/// while it held the map, which cannot be left half-written.
fn shared() -> std::sync::MutexGuard<'static, HashMap<Policy, Weak<ClientConfig>>> {
    SHARED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The rustls configuration of an account: the account's CA file alone if it has one,
/// else the public web PKI roots; TLS 1.2 and 1.3, or 1.3 only. Shared with every other
/// account of the same policy.
pub fn tls_config(ca_pem: Option<&[u8]>, min: MinTls) -> Result<Arc<ClientConfig>, String> {
    let policy = (ca_pem.map(<[u8]>::to_vec), min);
    if let Some(config) = shared().get(&policy).and_then(Weak::upgrade) {
        return Ok(config);
    }
    let config = build(ca_pem, min)?;
    let mut map = shared();
    map.retain(|_, c| c.strong_count() > 0);
    // Two threads may have built the same policy at once: the first one stored is kept.
    if let Some(first) = map.get(&policy).and_then(Weak::upgrade) {
        return Ok(first);
    }
    map.insert(policy, Arc::downgrade(&config));
    Ok(config)
}

/// The same policy without session resumption: every handshake shows and checks the
/// server's certificate as it is now. For Test Mail, which reports the certificate.
pub fn full_handshakes(config: &Arc<ClientConfig>) -> Arc<ClientConfig> {
    let mut config = ClientConfig::clone(config);
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// Builds a configuration of its own for the policy.
fn build(ca_pem: Option<&[u8]>, min: MinTls) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    let mut pinned = Vec::new();
    match ca_pem {
        Some(pem) => {
            use rustls::pki_types::pem::PemObject;
            let mut found = 0;
            for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("the CA file is not PEM: {e}"))?;
                roots
                    .add(cert.clone())
                    .map_err(|e| format!("the CA file holds an unusable certificate: {e}"))?;
                pinned.push(cert);
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
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?;
    let config = if pinned.is_empty() {
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        let chain = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| format!("the CA file cannot be used: {e}"))?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainOrPinned { chain, pinned }))
            .with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// The chain of trust from the CA file, and besides it the CA file's own certificates,
/// each trusted as itself when a server presents exactly it.
#[derive(Debug)]
struct ChainOrPinned {
    chain: Arc<WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for ChainOrPinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let by_chain = self.chain.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        if by_chain.is_ok()
            || !self
                .pinned
                .iter()
                .any(|p| p.as_ref() == end_entity.as_ref())
        {
            return by_chain;
        }
        // Exactly a certificate the CA file holds: its names and its validity still count.
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        cert.verify_is_valid_for_subject_name(server_name)
            .map_err(|e| match e {
                webpki::Error::CertNotValidForName(context) => {
                    CertificateError::NotValidForNameContext {
                        expected: context.expected,
                        presented: context.presented,
                    }
                }
                _ => CertificateError::NotValidForName,
            })?;
        let (_, parsed) = x509_parser::parse_x509_certificate(end_entity.as_ref())
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let seconds = |t: x509_parser::time::ASN1Time| {
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(
                u64::try_from(t.timestamp()).unwrap_or(0),
            ))
        };
        let (not_before, not_after) = (
            seconds(parsed.validity().not_before),
            seconds(parsed.validity().not_after),
        );
        if now.as_secs() < not_before.as_secs() {
            return Err(CertificateError::NotValidYetContext {
                time: now,
                not_before,
            }
            .into());
        }
        if now.as_secs() > not_after.as_secs() {
            return Err(CertificateError::ExpiredContext {
                time: now,
                not_after,
            }
            .into());
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

/// A sentence for a failed TLS handshake, with the fix, or `None` when `e` is no TLS error.
pub fn explain(e: &io::Error, server: &str) -> Option<String> {
    let error = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(match error {
        rustls::Error::InvalidCertificate(why) => format!(
            "the certificate of {server} is not accepted: {}. flowmail never skips certificate checks",
            certificate_problem(why)
        ),
        rustls::Error::AlertReceived(alert) => format!(
            "{server} ended the TLS handshake ({alert:?}); it most likely does not support the minimum \
             TLS version this account requires (min_tls). Upgrade the server, or lower min_tls to \"1.2\""
        ),
        other => format!("TLS with {server} failed: {other}"),
    })
}

/// What is wrong with a server's certificate, and how to fix it.
fn certificate_problem(why: &CertificateError) -> String {
    match why {
        CertificateError::UnknownIssuer => {
            "it was issued by a CA that is not trusted; set ca_file to the PEM \
             of the CA that issued it, or, for a self-signed certificate, to the certificate itself"
                .into()
        }
        CertificateError::NotValidForNameContext {
            expected,
            presented,
        } => format!(
            "it is not valid for {expected:?} (it names {}); connect with a name it lists, or \
             reissue it with that name in subjectAltName",
            presented.join(", ")
        ),
        CertificateError::NotValidForName => {
            "it is not valid for the server's name; connect with a name it \
             lists in subjectAltName, or reissue it"
                .into()
        }
        CertificateError::ExpiredContext { not_after, .. } => format!(
            "it expired at {} (Unix time); renew it on the server",
            not_after.as_secs()
        ),
        CertificateError::Expired => "it has expired; renew it on the server".into(),
        CertificateError::NotValidYetContext { not_before, .. } => format!(
            "it is valid only from {} (Unix time); check the clocks of both machines",
            not_before.as_secs()
        ),
        CertificateError::NotValidYet => {
            "it is not valid yet; check the clocks of both machines".into()
        }
        CertificateError::Other(other)
            if other
                .0
                .downcast_ref::<webpki::Error>()
                .is_some_and(|e| matches!(e, webpki::Error::CaUsedAsEndEntity)) =>
        {
            "the server presents a CA certificate (CA:TRUE) as its own, which only counts when \
             ca_file holds exactly that certificate; set ca_file to the PEM of the server's own \
             certificate, or give the server a certificate issued by that CA"
                .into()
        }
        other => format!(
            "{other:?}; set ca_file to the PEM of the CA that issued it, or fix the certificate"
        ),
    }
}

/// Runs the TLS handshake for `host`.
pub async fn handshake(
    tcp: TcpStream,
    host: &str,
    config: Arc<ClientConfig>,
) -> io::Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let tls = TlsConnector::from(config).connect(name, tcp).await?;
    tracing::debug!(
        "TLS with {host}: {:?}, {}",
        tls.get_ref().1.protocol_version(),
        if resumed(&tls) {
            "an earlier session resumed"
        } else {
            "a full handshake"
        }
    );
    Ok(tls)
}

/// Whether the handshake resumed an earlier session instead of a full one.
fn resumed(tls: &TlsStream<TcpStream>) -> bool {
    tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
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
    /// The handshake resumed an earlier session: the certificate is the one checked then.
    pub resumed: bool,
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
            resumed: resumed(tls),
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

    /// A CA certificate of this test alone, so that no other test holds its policy.
    const CA: &str = "-----BEGIN CERTIFICATE-----\n\
MIIBmDCCAT2gAwIBAgIUeoGvLzNntzPjuZ3iAiKl111VbrcwCgYIKoZIzj0EAwIw\n\
IDEeMBwGA1UEAwwVZmxvd21haWwgdW5pdCB0ZXN0IENBMCAXDTI2MTIwNzIxNDMy\n\
OVoYDzIxMjYxMTEzMjE0MzI5WjAgMR4wHAYDVQQDDBVmbG93bWFpbCB1bml0IHRl\n\
c3QgQ0EwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAS5kcyMlbE9aLkqaIdN6p3B\n\
2/Bnm1RYgkZavB4VdVOk8lSGYvRPeWJ5yxgs8qPmTybaDjdHozh4/XhkX4UM3qLg\n\
o1MwUTAdBgNVHQ4EFgQUtSXnwcfAlratZPbuUABhHjauQNIwHwYDVR0jBBgwFoAU\n\
tSXnwcfAlratZPbuUABhHjauQNIwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQD\n\
AgNJADBGAiEA+DkZMK98MepwTW5GTZ2IgtWknKEJBxoP2PJcJOwYpKwCIQCU7GHo\n\
NwMUnhuHLUlIyLUIe+zrLNha0x7uLISF2C2Ukg==\n\
-----END CERTIFICATE-----\n\
";

    #[test]
    fn accounts_of_one_policy_share_a_configuration_while_one_holds_it() {
        let one = tls_config(Some(CA.as_bytes()), MinTls::V13).unwrap();
        let read_again = CA.as_bytes().to_vec();
        assert!(Arc::ptr_eq(
            &one,
            &tls_config(Some(&read_again), MinTls::V13).unwrap()
        ));
        assert!(!Arc::ptr_eq(
            &one,
            &tls_config(Some(CA.as_bytes()), MinTls::V12).unwrap()
        ));
        assert!(!Arc::ptr_eq(&one, &tls_config(None, MinTls::V13).unwrap()));
        // Once no account holds a policy, it is built anew (its sessions are gone).
        let weak = Arc::downgrade(&one);
        drop(one);
        assert!(weak.upgrade().is_none());
        let again = tls_config(Some(CA.as_bytes()), MinTls::V13).unwrap();
        assert!(weak.upgrade().is_none());
        assert!(Arc::ptr_eq(
            &again,
            &tls_config(Some(CA.as_bytes()), MinTls::V13).unwrap()
        ));
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
