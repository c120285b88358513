//! The compiled-component cache is native code, so an entry is loaded only when it
//! authenticates under the installation's cache key: a tampered entry, or one written
//! under another key, is rejected and compiled again; a key others may read turns the
//! cache off; entries unused for 30 days are pruned.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .collect();
    found.sort();
    found
}

#[test]
fn a_tampered_or_foreign_cache_entry_is_rejected_and_compiled_again() {
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().join("cache");
    let key = root.path().join("cache.key");
    let engine = flowmail::runtime::engine().unwrap();
    let wasm = flowmail::DEFAULT_PLUGIN;
    let load = || flowmail::runtime::load_component(&engine, wasm, Some(&cache)).unwrap();

    load();
    assert_eq!(mode(&cache), 0o700, "the cache folder is the owner's only");
    assert_eq!(mode(&key), 0o600, "so is its key");
    let [entry] = entries(&cache).try_into().unwrap();
    let good = std::fs::read(&entry).unwrap();

    // One bit changed in the native code: rejected, deleted and written again.
    let mut bad = good.clone();
    let middle = bad.len() / 2;
    bad[middle] ^= 1;
    std::fs::write(&entry, &bad).unwrap();
    load();
    let now = std::fs::read(&entry).unwrap();
    assert_ne!(
        now, bad,
        "the altered entry was not loaded, and was replaced"
    );
    assert_eq!(now.len(), good.len());

    // An entry written under another installation's key: rejected too.
    std::fs::remove_file(&key).unwrap();
    std::fs::write(&key, [7u8; 32]).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    load();
    let rewritten = std::fs::read(&entry).unwrap();
    assert_ne!(
        rewritten[rewritten.len() - 32..],
        now[now.len() - 32..],
        "the foreign entry was replaced by one under this key"
    );
    // Under its own key it loads as it is.
    load();
    assert_eq!(std::fs::read(&entry).unwrap(), rewritten);

    // A key that others may read could have been copied: the cache is not used at all,
    // not even read.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&entry, &bad).unwrap();
    load();
    assert_eq!(std::fs::read(&entry).unwrap(), bad, "not read, not written");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    // Entries unused for 30 days are pruned; the one in use stays.
    let old = cache.join("0000.cwasm");
    std::fs::write(&old, b"old").unwrap();
    std::fs::File::options()
        .append(true)
        .open(&old)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(40 * 86_400))
        .unwrap();
    let young = cache.join("0001.cwasm");
    std::fs::write(&young, b"young").unwrap();
    load();
    let mut kept = vec![young, entry];
    kept.sort();
    assert_eq!(entries(&cache), kept);
}
