//! The embedded transport: every message becomes an `.eml` file in a folder, with its
//! envelope beside it as `.envelope.json`.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::Transport;
use crate::BoxFuture;
use crate::bindings::MailError;
use crate::bindings::transport::{Delivery, DeliveryStatus, Envelope};

/// Writes messages into `dir`, atomically: a reader never sees half a file.
pub struct Outbox {
    dir: PathBuf,
    counter: AtomicU64,
}

impl Outbox {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            counter: AtomicU64::new(0),
        }
    }

    fn write(&self, envelope: &Envelope, message: &[u8]) -> Result<Delivery, MailError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| classify(&self.dir, e))?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let stem = format!("{nanos}-{}-{n}", std::process::id());
        let eml = self.dir.join(format!("{stem}.eml"));
        let envelope_json =
            serde_json::json!({ "sender": envelope.sender, "recipients": envelope.recipients });
        write_atomic(
            &self.dir.join(format!("{stem}.envelope.json")),
            envelope_json.to_string().as_bytes(),
        )?;
        write_atomic(&eml, message)?;
        // Both names on disk before the send counts as done: a message the outbox accepted
        // survives a crash or a power cut.
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| classify(&self.dir, e))?;
        Ok(Delivery {
            transport: "outbox".into(),
            status: DeliveryStatus::Queued,
            accepted: envelope.recipients.clone(),
            reference: Some(eml.display().to_string()),
        })
    }
}

impl Transport for Outbox {
    fn send<'a>(
        &'a self,
        envelope: &'a Envelope,
        message: &'a [u8],
    ) -> BoxFuture<'a, Result<Delivery, MailError>> {
        // The write and its flushes to disk block: they leave the async worker free.
        Box::pin(async move { crate::blocking::off_async(|| self.write(envelope, message)) })
    }

    fn kind(&self) -> &'static str {
        "outbox"
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), MailError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    // On disk before the name appears (the caller then flushes the folder, so the name is
    // on disk before the send counts as done).
    let mut file = std::fs::File::create(&tmp).map_err(|e| classify(&tmp, e))?;
    std::io::Write::write_all(&mut file, bytes).map_err(|e| classify(&tmp, e))?;
    file.sync_all().map_err(|e| classify(&tmp, e))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| classify(path, e))
}

/// The outbox's one place of error classification.
fn classify(path: &Path, e: std::io::Error) -> MailError {
    let what = format!("outbox {}: {e}", path.display());
    match e.kind() {
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => {
            MailError::AccessDenied(format!("{what}; give flowmail write access to the folder"))
        }
        ErrorKind::NotADirectory | ErrorKind::InvalidInput => MailError::Permanent(what),
        _ => MailError::Transient(what),
    }
}
