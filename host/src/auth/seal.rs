//! Encryption at rest for tokens: ChaCha20-Poly1305 with a 256-bit key from a key file
//! (created with mode 0600 on first use) or the `FLOWMAIL_KEY` environment variable.
//! A missing or wrong key is an error that says so; tokens are never reset silently.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

/// The environment variable that may hold the key, base64 of 32 bytes.
pub const KEY_ENV: &str = "FLOWMAIL_KEY";

/// Why the key cannot be had, or a value cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "the key file {0} is missing, but the store holds encrypted tokens; restore the key file or set {KEY_ENV}. \
         flowmail never discards stored tokens to start over"
    )]
    Missing(PathBuf),
    #[error("the key in {0} is not base64 of 32 bytes; restore the right key file or {KEY_ENV}")]
    Malformed(String),
    #[error("cannot read or create the key file {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("sealing a token failed")]
    Seal,
    #[error(
        "stored tokens of account `{0}` cannot be decrypted: the key is not the one they were sealed with; \
         restore the right key file or {KEY_ENV}, or authorize the account again"
    )]
    WrongKey(String),
}

/// The sealing key.
pub struct Sealer {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer([redacted])")
    }
}

fn decode(text: &str, origin: &str) -> Result<[u8; 32], KeyError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| KeyError::Malformed(origin.to_owned()))?;
    bytes
        .try_into()
        .map_err(|_| KeyError::Malformed(origin.to_owned()))
}

impl Sealer {
    /// The key from `FLOWMAIL_KEY`, else from `file`. A missing file is created only when
    /// `store_has_secrets` is false: otherwise the old key is needed, and its absence is an error.
    pub fn load(file: &Path, store_has_secrets: bool) -> Result<Self, KeyError> {
        let key = match std::env::var(KEY_ENV) {
            Ok(text) => decode(&text, KEY_ENV)?,
            Err(_) => match std::fs::read_to_string(file) {
                Ok(text) => decode(&text, &file.display().to_string())?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if store_has_secrets {
                        return Err(KeyError::Missing(file.to_path_buf()));
                    }
                    create(file)?
                }
                Err(e) => return Err(KeyError::Io(file.to_path_buf(), e)),
            },
        };
        Ok(Self {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
        })
    }

    /// Seals `plain`; `context` (account and field) is bound to it as associated data.
    pub fn seal(&self, context: &str, plain: &str) -> Result<Vec<u8>, KeyError> {
        let mut nonce = [0u8; 12];
        fill_random(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain.as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| KeyError::Seal)?;
        let mut out = nonce.to_vec();
        out.extend(sealed);
        Ok(out)
    }

    /// Opens what `seal` produced for the same `context`.
    pub fn open(&self, account: &str, context: &str, sealed: &[u8]) -> Result<String, KeyError> {
        let wrong = || KeyError::WrongKey(account.to_owned());
        if sealed.len() < 12 {
            return Err(wrong());
        }
        let (nonce, body) = sealed.split_at(12);
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| wrong())?;
        String::from_utf8(plain).map_err(|_| wrong())
    }
}

/// Fills `buf` from the operating system's random source.
pub(crate) fn fill_random(buf: &mut [u8]) {
    use chacha20poly1305::aead::rand_core::RngCore;
    chacha20poly1305::aead::OsRng.fill_bytes(buf);
}

fn create(file: &Path) -> Result<[u8; 32], KeyError> {
    let io = |e| KeyError::Io(file.to_path_buf(), e);
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let mut key = [0u8; 32];
    fill_random(&mut key);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(file).map_err(io)?;
    f.write_all(
        base64::engine::general_purpose::STANDARD
            .encode(key)
            .as_bytes(),
    )
    .map_err(io)?;
    f.sync_all().map_err(io)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_opens_and_refuses_the_wrong_key_or_context() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("k");
        let a = Sealer::load(&file, false).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let sealed = a.seal("acct/refresh", "r-token").unwrap();
        assert!(!sealed.windows(7).any(|w| w == b"r-token"));
        assert_eq!(a.open("acct", "acct/refresh", &sealed).unwrap(), "r-token");
        assert!(matches!(
            a.open("acct", "acct/access", &sealed),
            Err(KeyError::WrongKey(_))
        ));
        let other = Sealer::load(&dir.path().join("k2"), false).unwrap();
        assert!(matches!(
            other.open("acct", "acct/refresh", &sealed),
            Err(KeyError::WrongKey(_))
        ));
        assert!(matches!(
            Sealer::load(&dir.path().join("gone"), true),
            Err(KeyError::Missing(_))
        ));
        std::fs::write(dir.path().join("bad"), "not a key").unwrap();
        assert!(matches!(
            Sealer::load(&dir.path().join("bad"), true),
            Err(KeyError::Malformed(_))
        ));
    }
}
