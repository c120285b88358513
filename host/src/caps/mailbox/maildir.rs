//! The embedded mailbox: a Maildir folder. UIDs are kept in the store, assigned in
//! delivery order the first time a message is seen; flags follow the Maildir rules
//! (`cur/NAME:2,FLAGS`, flags sorted).

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::uid::{BATCH_BUDGET, UidBatch, UidCursor, UidFolder, UidMessage};
use crate::bindings::MailError;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use super::{WaitPlan, Wake, strip};
use crate::BoxFuture;
use crate::bindings::mailbox::{Content, Flag, Oversize, Search, SizeCap};
use crate::store::Store;

/// A Maildir at `root`, with `new/`, `cur/` and `tmp/`.
pub struct Maildir {
    root: PathBuf,
    store: Arc<Store>,
    /// The modification times of `new/` and `cur/` when a wait last looked.
    seen: Mutex<Option<[Option<SystemTime>; 2]>>,
}

/// One message file.
struct Entry {
    path: PathBuf,
    key: String,
    flags: String,
}

impl Maildir {
    pub fn new(root: impl Into<PathBuf>, store: Arc<Store>) -> Self {
        Self {
            root: root.into(),
            store,
            seen: Mutex::new(None),
        }
    }

    fn entries(&self) -> Result<Vec<Entry>, MailError> {
        let mut entries = Vec::new();
        for sub in ["new", "cur"] {
            let dir = self.root.join(sub);
            let read = std::fs::read_dir(&dir).map_err(|e| classify(&dir, e))?;
            for item in read {
                let item = item.map_err(|e| classify(&dir, e))?;
                let name = item.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') || !item.file_type().map(|t| t.is_file()).unwrap_or(false)
                {
                    continue;
                }
                let (key, flags) = match name.split_once(":2,") {
                    Some((k, f)) => (k.to_owned(), f.to_owned()),
                    None => (name.clone(), String::new()),
                };
                entries.push(Entry {
                    path: item.path(),
                    key,
                    flags,
                });
            }
        }
        // Maildir unique names begin with the delivery time, so name order is arrival order.
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(entries)
    }

    /// Every message with its UID, in UID order, and the UIDVALIDITY.
    fn indexed(&self) -> Result<(u32, Vec<(u32, Entry)>), MailError> {
        let entries = self.entries()?;
        let keys: Vec<String> = entries.iter().map(|e| e.key.clone()).collect();
        let (validity, uids) = self
            .store
            .maildir_uids(&self.root.display().to_string(), &keys)
            .map_err(|e| Failure::Store(e).classify())?;
        let mut indexed: Vec<(u32, Entry)> = entries
            .into_iter()
            .filter_map(|e| uids.get(&e.key).map(|uid| (*uid, e)))
            .collect();
        indexed.sort_by_key(|(uid, _)| *uid);
        Ok((validity, indexed))
    }

    fn read(&self, uid: u32, entry: &Entry, cap: Option<SizeCap>) -> Result<UidMessage, MailError> {
        let size = std::fs::metadata(&entry.path)
            .map_err(|e| classify(&entry.path, e))?
            .len();
        let (data, content) = match cap.filter(|c| size > c.max_size) {
            Some(SizeCap {
                oversize: Oversize::Skip,
                ..
            }) => (Vec::new(), Content::Omitted),
            Some(SizeCap {
                max_size,
                oversize: Oversize::WithoutAttachments,
            }) => {
                let data = std::fs::read(&entry.path).map_err(|e| classify(&entry.path, e))?;
                let cut = usize::try_from(max_size).unwrap_or(usize::MAX);
                (
                    strip::without_attachments(&data, cut),
                    Content::WithoutAttachments,
                )
            }
            None => (
                std::fs::read(&entry.path).map_err(|e| classify(&entry.path, e))?,
                Content::Complete,
            ),
        };
        Ok(UidMessage {
            uid,
            flags: imap_flags(&entry.flags),
            size,
            data,
            content,
        })
    }

    fn modified(&self) -> [Option<SystemTime>; 2] {
        ["new", "cur"].map(|sub| {
            std::fs::metadata(self.root.join(sub))
                .and_then(|m| m.modified())
                .ok()
        })
    }

    /// Looks at the folder's modification times every quarter second until they change
    /// or the poll interval runs out.
    async fn wait(&self, plan: WaitPlan) -> Result<Wake, MailError> {
        let baseline = {
            let mut seen = self.seen.lock().map_err(|_| Failure::Poisoned.classify())?;
            *seen.get_or_insert_with(|| self.modified())
        };
        let deadline = tokio::time::Instant::now() + plan.poll_interval;
        let step = Duration::from_millis(250).min(plan.poll_interval);
        let mut changed = false;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(step).await;
            let now = self.modified();
            if now != baseline {
                changed = true;
                break;
            }
        }
        if !self.root.join("new").is_dir() {
            return Err(classify(
                &self.root.join("new"),
                std::io::Error::from(ErrorKind::NotFound),
            ));
        }
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(self.modified());
        }
        Ok(Wake {
            mode: "poll",
            changed,
        })
    }

    fn fetch_after_sync(
        &self,
        after: Option<UidCursor>,
        limit: u32,
        cap: Option<SizeCap>,
    ) -> Result<UidBatch, MailError> {
        let (validity, indexed) = self.indexed()?;
        let start = match after {
            Some(c) if c.uid_validity == validity => c.last_uid,
            _ => 0,
        };
        let mut rest = indexed.iter().filter(|(uid, _)| *uid > start).peekable();
        let mut messages = Vec::new();
        let mut held = 0u64;
        while let Some((uid, e)) = rest.peek() {
            if messages.len() >= limit as usize {
                break;
            }
            let m = self.read(*uid, e, cap)?;
            // The byte budget: a batch ends before the message that would pass it.
            let bytes = m.data.len() as u64;
            if !messages.is_empty() && held.saturating_add(bytes) > BATCH_BUDGET {
                break;
            }
            held = held.saturating_add(bytes);
            messages.push(m);
            rest.next();
        }
        let more = rest.peek().is_some();
        let scanned_to = match messages.last() {
            Some(m) => m.uid,
            None => start.max(indexed.last().map(|(u, _)| *u).unwrap_or(0)),
        };
        Ok(UidBatch {
            uid_validity: validity,
            messages,
            more,
            scanned_to,
        })
    }

    fn fetch_sync(&self, uid: u32) -> Result<UidMessage, MailError> {
        let (_, indexed) = self.indexed()?;
        let (_, entry) = indexed
            .iter()
            .find(|(u, _)| *u == uid)
            .ok_or_else(|| Failure::NoMessage(&self.root, uid).classify())?;
        self.read(uid, entry, None)
    }

    fn select(&self, uids: &[u32]) -> Result<Vec<Entry>, MailError> {
        let (_, mut indexed) = self.indexed()?;
        let mut chosen = Vec::with_capacity(uids.len());
        for uid in uids {
            let at = indexed
                .iter()
                .position(|(u, _)| u == uid)
                .ok_or_else(|| Failure::NoMessage(&self.root, *uid).classify())?;
            chosen.push(indexed.swap_remove(at).1);
        }
        Ok(chosen)
    }

    fn set_flags_sync(&self, uids: &[u32], add: &[Flag], remove: &[Flag]) -> Result<(), MailError> {
        for entry in self.select(uids)? {
            let mut flags: Vec<char> = entry.flags.chars().collect();
            flags.retain(|c| !remove.iter().any(|f| letter(*f) == *c));
            flags.extend(add.iter().map(|f| letter(*f)));
            flags.sort_unstable();
            flags.dedup();
            let name = format!("{}:2,{}", entry.key, flags.into_iter().collect::<String>());
            let target = self.root.join("cur").join(name);
            std::fs::rename(&entry.path, &target).map_err(|e| classify(&entry.path, e))?;
        }
        Ok(())
    }

    fn delete_sync(&self, uids: &[u32]) -> Result<(), MailError> {
        for entry in self.select(uids)? {
            std::fs::remove_file(&entry.path).map_err(|e| classify(&entry.path, e))?;
        }
        Ok(())
    }

    fn move_sync(&self, uids: &[u32], folder: &str) -> Result<(), MailError> {
        if folder.is_empty() || folder.contains(['/', '\\']) || folder.starts_with('.') {
            return Err(Failure::BadFolderName(folder).classify());
        }
        let target = self.root.join(format!(".{folder}")).join("cur");
        if !target.is_dir() {
            return Err(Failure::NoFolder(&self.root, folder).classify());
        }
        for entry in self.select(uids)? {
            let name = entry
                .path
                .file_name()
                .map(|n| n.to_os_string())
                .unwrap_or_default();
            std::fs::rename(&entry.path, target.join(name))
                .map_err(|e| classify(&entry.path, e))?;
        }
        Ok(())
    }
}

impl UidFolder for Maildir {
    fn fetch_after(
        &self,
        after: Option<UidCursor>,
        limit: u32,
        _search: Search,
        cap: Option<SizeCap>,
    ) -> BoxFuture<'_, Result<UidBatch, MailError>> {
        // A Maildir has no index to search; the plugin filters every message.
        Box::pin(async move { self.fetch_after_sync(after, limit, cap) })
    }

    fn fetch(&self, uid: u32) -> BoxFuture<'_, Result<UidMessage, MailError>> {
        Box::pin(async move { self.fetch_sync(uid) })
    }

    fn set_flags(
        &self,
        uids: Vec<u32>,
        add: Vec<Flag>,
        remove: Vec<Flag>,
    ) -> BoxFuture<'_, Result<(), MailError>> {
        Box::pin(async move { self.set_flags_sync(&uids, &add, &remove) })
    }

    fn move_to(&self, uids: Vec<u32>, folder: String) -> BoxFuture<'_, Result<(), MailError>> {
        Box::pin(async move { self.move_sync(&uids, &folder) })
    }

    fn uid_validity(&self) -> BoxFuture<'_, Result<u32, MailError>> {
        // The store knows it; no need to list the folder for it.
        Box::pin(async move {
            self.store
                .maildir_uids(&self.root.display().to_string(), &[])
                .map(|(validity, _)| validity)
                .map_err(|e| Failure::Store(e).classify())
        })
    }

    fn count_after(&self, after: Option<UidCursor>) -> BoxFuture<'_, Result<u64, MailError>> {
        Box::pin(async move {
            let (validity, indexed) = self.indexed()?;
            let start = match after {
                Some(c) if c.uid_validity == validity => c.last_uid,
                _ => 0,
            };
            Ok(indexed.iter().filter(|(uid, _)| *uid > start).count() as u64)
        })
    }

    fn delete(&self, uids: Vec<u32>) -> BoxFuture<'_, Result<(), MailError>> {
        Box::pin(async move { self.delete_sync(&uids) })
    }

    fn wait_for_change(&self, plan: WaitPlan) -> BoxFuture<'_, Result<Wake, MailError>> {
        Box::pin(self.wait(plan))
    }
}

fn letter(flag: Flag) -> char {
    match flag {
        Flag::Draft => 'D',
        Flag::Flagged => 'F',
        Flag::Answered => 'R',
        Flag::Seen => 'S',
        Flag::Deleted => 'T',
    }
}

fn imap_flags(letters: &str) -> Vec<String> {
    letters
        .chars()
        .filter_map(|c| match c {
            'D' => Some("\\Draft"),
            'F' => Some("\\Flagged"),
            'R' => Some("\\Answered"),
            'S' => Some("\\Seen"),
            'T' => Some("\\Deleted"),
            _ => None,
        })
        .map(str::to_owned)
        .collect()
}

/// What goes wrong with a Maildir, before classification.
#[derive(Debug)]
enum Failure<'a> {
    /// A file or folder could not be read, renamed or removed.
    Io(&'a Path, std::io::Error),
    /// The store that keeps the UIDs failed.
    Store(crate::store::StoreError),
    /// The change watch's state was poisoned by a panicking thread.
    Poisoned,
    /// No message has this UID.
    NoMessage(&'a Path, u32),
    /// A folder name that is not Maildir++.
    BadFolderName(&'a str),
    /// A folder that does not exist.
    NoFolder(&'a Path, &'a str),
}

impl Failure<'_> {
    /// The Maildir backend's one place of error classification.
    fn classify(self) -> MailError {
        match self {
            Failure::Io(path, e) => {
                let what = format!("maildir {}: {e}", path.display());
                match e.kind() {
                    ErrorKind::NotFound => {
                        MailError::NotFound(format!("{what}; is it a Maildir with new/ and cur/?"))
                    }
                    ErrorKind::PermissionDenied => MailError::AccessDenied(format!(
                        "{what}; give the flowmail user read and write access"
                    )),
                    _ => MailError::Transient(what),
                }
            }
            Failure::Store(e) => MailError::Transient(format!("the Maildir's UID index: {e}")),
            Failure::Poisoned => MailError::Transient("the Maildir watch state is poisoned".into()),
            Failure::NoMessage(root, uid) => {
                MailError::NotFound(format!("no message with UID {uid} in {}", root.display()))
            }
            Failure::BadFolderName(folder) => {
                MailError::InvalidInput(crate::bindings::types::FieldError {
                    field: "folder".into(),
                    reason: format!(
                        "`{folder}` is not a Maildir++ folder name (use names like Archive or Archive.2026)"
                    ),
                })
            }
            Failure::NoFolder(root, folder) => MailError::NotFound(format!(
                "the folder `{folder}` does not exist in {}",
                root.display()
            )),
        }
    }
}

fn classify(path: &Path, e: std::io::Error) -> MailError {
    Failure::Io(path, e).classify()
}

#[cfg(test)]
mod tests;
