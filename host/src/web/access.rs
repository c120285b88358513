//! Who may use the settings page: users with argon2id password hashes, sessions in the
//! store under the hash of their cookie's token, a CSRF token on every form, refusal of
//! cross-site requests, and a limit on failed logins per user and per address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use axum::http::{HeaderMap, Method, header};
use base64::Engine as _;
use sha2::Digest as _;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "flowmail_session";
/// The cookie that carries the login form's CSRF token before there is a session.
pub const LOGIN_COOKIE: &str = "flowmail_login";

/// A random token for cookies and forms: 32 bytes, URL-safe base64.
pub fn token() -> String {
    let mut bytes = [0u8; 32];
    crate::auth::seal::fill_random(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What the store keeps of a session token: its SHA-256, so a copy of the store does not
/// log anyone in.
pub fn token_hash(token: &str) -> String {
    let digest = sha2::Sha256::digest(token.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
}

/// The argon2id hash of `password`, in PHC form.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing the password failed: {e}"))
}

/// Whether `password` matches the PHC `hash`.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// Compares two tokens in time that does not depend on where they differ.
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The value of cookie `name` in the request.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// A `Set-Cookie` value: `HttpOnly`, `SameSite=Strict`, and `Secure` when served over TLS.
pub fn set_cookie(name: &str, value: &str, max_age: Option<u64>, secure: bool) -> String {
    let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        c.push_str("; Secure");
    }
    c
}

/// Why a state-changing request from another site is refused, or `None` when it comes
/// from the page itself. Browsers say where a request comes from in `Sec-Fetch-Site` and
/// `Origin`; either one naming another site is enough to refuse.
pub fn cross_site(method: &Method, headers: &HeaderMap) -> Option<String> {
    if method == Method::GET || method == Method::HEAD {
        return None;
    }
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && site != "same-origin"
        && site != "none"
    {
        return Some(format!(
            "this request came from another site (Sec-Fetch-Site: {site}) and was refused; use the settings page itself"
        ));
    }
    if let (Some(origin), Some(host)) = (text(header::ORIGIN), text(header::HOST)) {
        let same = origin
            .split_once("://")
            .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(host));
        if !same {
            return Some(format!(
                "this request came from {origin}, not from this page ({host}), and was refused"
            ));
        }
    }
    None
}

/// Failed logins per user and per address; past the limit, logins wait.
pub struct LoginLimits {
    failures: Mutex<HashMap<String, Vec<Instant>>>,
}

/// Failed logins allowed per user within [`WINDOW`].
const PER_USER: usize = 5;
/// Failed logins allowed per address within [`WINDOW`].
const PER_ADDRESS: usize = 20;
const WINDOW: Duration = Duration::from_secs(15 * 60);

impl Default for LoginLimits {
    fn default() -> Self {
        Self {
            failures: Mutex::new(HashMap::new()),
        }
    }
}

impl LoginLimits {
    fn keys(login: &str, addr: IpAddr) -> [(String, usize); 2] {
        [
            (format!("user:{}", login.to_lowercase()), PER_USER),
            (format!("addr:{addr}"), PER_ADDRESS),
        ]
    }

    /// How long `login` from `addr` must wait before trying again, if it must.
    pub fn wait(&self, login: &str, addr: IpAddr) -> Option<Duration> {
        let mut failures = self.failures.lock().ok()?;
        let now = Instant::now();
        Self::keys(login, addr)
            .into_iter()
            .filter_map(|(key, limit)| {
                let times = failures.get_mut(&key)?;
                times.retain(|t| now.duration_since(*t) < WINDOW);
                (times.len() >= limit)
                    .then(|| {
                        times
                            .first()
                            .map(|t| WINDOW.saturating_sub(now.duration_since(*t)))
                    })
                    .flatten()
            })
            .max()
    }

    /// Counts a failed login.
    pub fn failed(&self, login: &str, addr: IpAddr) {
        if let Ok(mut failures) = self.failures.lock() {
            for (key, _) in Self::keys(login, addr) {
                failures.entry(key).or_default().push(Instant::now());
            }
        }
    }

    /// Forgets the failures of `login` after it logged in.
    pub fn succeeded(&self, login: &str) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(&format!("user:{}", login.to_lowercase()));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("wrong horse", &hash));
        assert!(!verify_password("correct horse", "not a hash"));
    }

    #[test]
    fn requests_from_other_sites_are_refused() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:8025".parse().unwrap());
        assert!(cross_site(&Method::POST, &h).is_none());
        h.insert(header::ORIGIN, "http://127.0.0.1:8025".parse().unwrap());
        assert!(cross_site(&Method::POST, &h).is_none());
        h.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert!(
            cross_site(&Method::POST, &h)
                .unwrap()
                .contains("evil.example")
        );
        assert!(
            cross_site(&Method::GET, &h).is_none(),
            "reading is harmless"
        );
        let mut h = HeaderMap::new();
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(cross_site(&Method::POST, &h).is_some());
    }

    #[test]
    fn failed_logins_are_limited_per_user_and_per_address() {
        let limits = LoginLimits::default();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..PER_USER {
            assert!(limits.wait("ops@example.com", a).is_none());
            limits.failed("ops@example.com", a);
        }
        assert!(limits.wait("ops@example.com", a).is_some());
        assert!(
            limits.wait("OPS@example.com", b).is_some(),
            "per user, from any address"
        );
        assert!(limits.wait("other@example.com", b).is_none());
        limits.succeeded("ops@example.com");
        assert!(limits.wait("ops@example.com", b).is_none());
    }
}
