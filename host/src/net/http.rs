//! The HTTP client for token endpoints and web APIs, on the same TLS policy as the mail
//! connections: the given roots and minimum version, certificate checks always on.

use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;

/// An HTTP client that follows no redirects (a token endpoint that redirects is
/// misconfigured, and a redirect could carry credentials elsewhere) and gives up after
/// `timeout`. TLS uses `tls`, built by [`super::tls_config`].
pub fn http_client(tls: &Arc<ClientConfig>, timeout: Duration) -> Result<reqwest::Client, String> {
    let mut tls = ClientConfig::clone(tls);
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::ClientBuilder::new()
        .use_preconfigured_tls(tls)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| format!("building the HTTP client: {e}"))
}
