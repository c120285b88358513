//! Secrets held by the host: given by reference in the config, redacted everywhere.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A secret value. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that sends it to a server.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Where a secret comes from: never the config file itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "SecretRefRepr")]
pub enum SecretRef {
    /// An environment variable's value.
    Env(String),
    /// A file's contents, without a trailing newline.
    File(PathBuf),
    /// A value the host holds itself: a secret of an account made on the settings page,
    /// unsealed from the store. The config file cannot give one.
    Held(Secret),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
enum ByReference {
    Env(String),
    File(PathBuf),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SecretRefRepr {
    Reference(ByReference),
    Inline(#[allow(dead_code)] String),
}

impl TryFrom<SecretRefRepr> for SecretRef {
    type Error = String;

    fn try_from(repr: SecretRefRepr) -> Result<Self, String> {
        match repr {
            SecretRefRepr::Reference(ByReference::Env(v)) => Ok(SecretRef::Env(v)),
            SecretRefRepr::Reference(ByReference::File(p)) => Ok(SecretRef::File(p)),
            SecretRefRepr::Inline(_) => Err("secrets are never written into the config: give \
                 { env = \"VARIABLE\" } or { file = \"path\" }"
                .into()),
        }
    }
}

impl SecretRef {
    /// Reads the secret; `base` resolves a relative file path.
    pub fn resolve(&self, base: &Path) -> Result<Secret, String> {
        match self {
            SecretRef::Env(var) => std::env::var(var).map(Secret).map_err(|_| {
                format!("the environment variable `{var}` is not set; export it or use `file`")
            }),
            SecretRef::File(path) => {
                let path = base.join(path);
                std::fs::read_to_string(&path)
                    .map(|s| Secret(s.trim_end_matches(['\r', '\n']).to_owned()))
                    .map_err(|e| format!("cannot read the secret file {}: {e}", path.display()))
            }
            SecretRef::Held(secret) => Ok(secret.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret([redacted])");
        assert_eq!(s.expose(), "hunter2");
    }
}
