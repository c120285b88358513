//! The compiled-component cache. An entry is native code that wasmtime maps and runs, so
//! it is trusted only when this installation wrote it:
//! - the cache folder is created `0700`;
//! - each entry carries an HMAC-SHA256 tag over its bytes and its name, under a key kept
//!   beside the folder (`<cache>.key`, created `0600`; one the process does not own, or
//!   that others may read, turns the cache off with a warning);
//! - an entry whose tag does not verify (altered, or written under another key) is
//!   rejected before wasmtime sees it, logged, deleted and recompiled;
//! - entries unused for [`KEEP`] are pruned.

use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// How long an entry may go unused before it is pruned.
pub const KEEP: Duration = Duration::from_secs(30 * 86_400);
const TAG: usize = 32;

/// A cache folder and the key that authenticates its entries.
pub struct Cache {
    dir: PathBuf,
    key: [u8; 32],
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cache({}, key [redacted])", self.dir.display())
    }
}

/// HMAC-SHA256 (RFC 2104) of `parts`, in order, under `key`.
fn hmac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(key);
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let mut inner = Sha256::new();
    inner.update(pad(0x36));
    for part in parts {
        inner.update(part);
    }
    let mut outer = Sha256::new();
    outer.update(pad(0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// The key in `file`, which must belong to user `me` and be private to it.
fn read_key(file: &Path, me: u32) -> std::io::Result<[u8; 32]> {
    let bytes = std::fs::read(file)?;
    let meta = std::fs::metadata(file)?;
    if meta.uid() != me || meta.mode() & 0o077 != 0 {
        return Err(std::io::Error::other(format!(
            "{} belongs to another user or is readable by others; remove it, and flowmail makes a new one",
            file.display()
        )));
    }
    bytes.try_into().map_err(|_| {
        std::io::Error::other(format!(
            "{} is not a 32-byte key; remove it, and flowmail makes a new one",
            file.display()
        ))
    })
}

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

impl Cache {
    /// Opens (creating) the cache at `dir` with its key; an error says why the cache
    /// cannot be trusted, and the caller then compiles without it.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        let me = std::fs::metadata(dir)?.uid();
        let key_file = dir.with_extension("key");
        let key = match read_key(&key_file, me) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Made whole under another name, then linked into place: a process
                // starting beside this one reads either no key or the whole of one.
                let mut key = [0u8; 32];
                crate::auth::seal::fill_random(&mut key);
                let tmp = key_file.with_extension(format!("key.tmp{}", std::process::id()));
                let made = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)
                    .and_then(|mut f| f.write_all(&key))
                    .and_then(|()| match std::fs::hard_link(&tmp, &key_file) {
                        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
                        _ => Ok(()),
                    });
                let _ = std::fs::remove_file(&tmp);
                made?;
                read_key(&key_file, me)?
            }
            other => other?,
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            key,
        })
    }

    /// Compiles `wasm`, or loads it from an authenticated entry compiled before by a
    /// compatible engine.
    pub fn load(&self, engine: &Engine, wasm: &[u8]) -> wasmtime::Result<Component> {
        let mut hasher = Sha256::new();
        hasher.update(wasm);
        let mut compat = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut compat);
        hasher.update(std::hash::Hasher::finish(&compat).to_le_bytes());
        hasher.update(env!("CARGO_PKG_VERSION"));
        let name: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
            + ".cwasm";
        let path = self.dir.join(&name);
        if let Some(component) = self.read(engine, &path, &name) {
            self.prune(&path);
            return Ok(component);
        }
        let component = Component::new(engine, wasm)?;
        if let Err(e) = self.write(&component, &path, &name) {
            tracing::warn!(
                "could not write the compiled-component cache {}: {e}",
                path.display()
            );
        }
        self.prune(&path);
        Ok(component)
    }

    fn read(&self, engine: &Engine, path: &Path, name: &str) -> Option<Component> {
        let bytes = std::fs::read(path).ok()?;
        let split = bytes.len().checked_sub(TAG);
        let authentic = split.is_some_and(|at| {
            same(
                &bytes[at..],
                &hmac(&self.key, &[name.as_bytes(), &bytes[..at]]),
            )
        });
        let (true, Some(at)) = (authentic, split) else {
            tracing::warn!(
                "compiled-component cache entry {} failed its authentication (altered, or written under another key): rejected, deleted and compiled again",
                path.display()
            );
            let _ = std::fs::remove_file(path);
            return None;
        };
        // SAFETY: the bytes carry a tag that only a holder of this cache's key (this
        // installation, which wrote them with `Component::serialize`) can make; wasmtime
        // checks the header and the engine's compatibility on top.
        match unsafe { Component::deserialize(engine, &bytes[..at]) } {
            Ok(component) => {
                // Used: kept from pruning for another [`KEEP`].
                if let Ok(file) = std::fs::File::options().append(true).open(path) {
                    let _ = file.set_modified(SystemTime::now());
                }
                Some(component)
            }
            Err(e) => {
                tracing::warn!(
                    "compiled-component cache {} is unusable ({e}); recompiling",
                    path.display()
                );
                None
            }
        }
    }

    fn write(&self, component: &Component, path: &Path, name: &str) -> wasmtime::Result<()> {
        let mut bytes = component.serialize()?;
        let tag = hmac(&self.key, &[name.as_bytes(), &bytes]);
        bytes.extend_from_slice(&tag);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&bytes)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    /// Deletes entries unused for [`KEEP`] and writes abandoned for an hour, but `keep`.
    fn prune(&self, keep: &Path) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let now = SystemTime::now();
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let age = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|at| now.duration_since(at).ok())
                .unwrap_or_default();
            let stale = if name.ends_with(".cwasm") {
                age > KEEP
            } else {
                name.contains(".tmp") && age > Duration::from_secs(3600)
            };
            if stale && path != keep {
                match std::fs::remove_file(&path) {
                    Ok(()) => tracing::info!("pruned the compiled-component cache entry {name}"),
                    Err(e) => tracing::warn!("could not prune {}: {e}", path.display()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_a_reference_implementation() {
        // Python's hmac.new(bytes(range(32)), b"flowmail", "sha256").hexdigest().
        let key: [u8; 32] = std::array::from_fn(|i| i as u8);
        let tag: String = hmac(&key, &[b"flow", b"mail"])
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(tag, EXPECTED);
    }

    const EXPECTED: &str = "c5240228cc4439290c9db034dd7570b64ff89c4ddfc3c2c3a1b7d7cb7249e9e5";
}
