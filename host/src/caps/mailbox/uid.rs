//! What the UID-based backends (IMAP, and the Maildir with its UIDs kept in the store)
//! share: they speak UIDs under a UIDVALIDITY, and [`Uids`] turns that into the WIT's
//! backend-neutral contract. A message id and a cursor are both written
//! `<uidvalidity>:<uid>`: the message, or the last UID read. UIDVALIDITY never leaves this
//! module in any other form.

use super::{Backend, WaitPlan, Wake, Watch};
use crate::BoxFuture;
use crate::bindings::MailError;
use crate::bindings::mailbox::{Batch, Content, Flag, RawMessage, Search, SizeCap};
use crate::bindings::types::FieldError;

/// Where a UID reader stopped: the last UID it handled under a UIDVALIDITY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UidCursor {
    pub uid_validity: u32,
    pub last_uid: u32,
}

/// One message as a UID folder stores it.
#[derive(Debug, Clone)]
pub struct UidMessage {
    pub uid: u32,
    pub flags: Vec<String>,
    pub size: u64,
    pub data: Vec<u8>,
    pub content: Content,
}

/// A batch of a UID folder.
#[derive(Debug, Clone)]
pub struct UidBatch {
    /// The folder's current UIDVALIDITY.
    pub uid_validity: u32,
    /// Messages with UIDs after the cursor, in ascending UID order.
    pub messages: Vec<UidMessage>,
    pub more: bool,
    /// The highest UID the batch accounts for, matching or not.
    pub scanned_to: u32,
}

/// The most message bytes one batch holds: a batch ends early once it would pass this,
/// so the host's memory for a read is bounded by bytes, not by the message count.
pub const BATCH_BUDGET: u64 = 32 << 20;

/// How many of the messages, whose sizes as read are given in order, fit in one batch:
/// those whose bytes stay within [`BATCH_BUDGET`], and always at least the first.
pub fn within_budget(sizes: impl Iterator<Item = u64>) -> usize {
    let mut total = 0u64;
    let mut count = 0;
    for size in sizes {
        if count > 0 && total.saturating_add(size) > BATCH_BUDGET {
            return count;
        }
        total = total.saturating_add(size);
        count += 1;
    }
    count
}

/// A mailbox folder addressed by UIDs under a UIDVALIDITY.
pub trait UidFolder: Send + Sync {
    /// Messages after `after` (all of them under another UIDVALIDITY) that may match
    /// `search`, at most `limit`, cut down by `cap`.
    fn fetch_after(
        &self,
        after: Option<UidCursor>,
        limit: u32,
        search: Search,
        cap: Option<SizeCap>,
    ) -> BoxFuture<'_, Result<UidBatch, MailError>>;
    /// The folder's UIDVALIDITY now.
    fn uid_validity(&self) -> BoxFuture<'_, Result<u32, MailError>>;
    fn fetch(&self, uid: u32) -> BoxFuture<'_, Result<UidMessage, MailError>>;
    fn set_flags(
        &self,
        uids: Vec<u32>,
        add: Vec<Flag>,
        remove: Vec<Flag>,
    ) -> BoxFuture<'_, Result<(), MailError>>;
    fn move_to(&self, uids: Vec<u32>, folder: String) -> BoxFuture<'_, Result<(), MailError>>;
    fn count_after(&self, after: Option<UidCursor>) -> BoxFuture<'_, Result<u64, MailError>>;
    fn delete(&self, uids: Vec<u32>) -> BoxFuture<'_, Result<(), MailError>>;
    fn wait_for_change(&self, plan: WaitPlan) -> BoxFuture<'_, Result<Wake, MailError>>;
}

/// `<uidvalidity>:<uid>`.
fn write(validity: u32, uid: u32) -> String {
    format!("{validity}:{uid}")
}

/// Reads `<uidvalidity>:<uid>`; `field` names the input in the error.
fn read(field: &str, text: &str) -> Result<(u32, u32), MailError> {
    text.split_once(':')
        .and_then(|(v, u)| Some((v.parse().ok()?, u.parse().ok()?)))
        .ok_or_else(|| {
            MailError::InvalidInput(FieldError {
                field: field.into(),
                reason: format!(
                    "`{}` was not written by this mailbox; pass back a value it returned, unchanged",
                    text.escape_debug()
                ),
            })
        })
}

/// Reads a cursor given as `after`.
fn read_cursor(text: &str) -> Result<UidCursor, MailError> {
    let (uid_validity, last_uid) = read("after", text)?;
    Ok(UidCursor {
        uid_validity,
        last_uid,
    })
}

/// A [`UidFolder`] serving the backend-neutral contract.
pub struct Uids<F>(pub F);

impl<F: UidFolder> Uids<F> {
    /// The UIDs of `ids`, all of which must be of the folder's current UIDVALIDITY.
    async fn current(&self, field: &str, ids: &[String]) -> Result<Vec<u32>, MailError> {
        let validity = self.0.uid_validity().await?;
        let mut uids = Vec::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            let (v, uid) = read(&format!("{field}[{i}]"), id)?;
            if v != validity {
                return Err(MailError::NotFound(format!(
                    "message {id} is gone: the mailbox was rebuilt since (UIDVALIDITY is now {validity}), so ids taken before name nothing"
                )));
            }
            uids.push(uid);
        }
        Ok(uids)
    }
}

fn message(validity: u32, m: UidMessage) -> RawMessage {
    RawMessage {
        id: write(validity, m.uid),
        flags: m.flags,
        size: m.size,
        data: m.data,
        content: m.content,
    }
}

impl<F: UidFolder> Backend for Uids<F> {
    fn fetch_after(
        &self,
        after: Option<String>,
        limit: u32,
        search: Search,
        cap: Option<SizeCap>,
    ) -> BoxFuture<'_, Result<Batch, MailError>> {
        Box::pin(async move {
            let after = after.as_deref().map(read_cursor).transpose()?;
            let batch = self.0.fetch_after(after, limit, search, cap).await?;
            let validity = batch.uid_validity;
            let (start, restarted) = match after {
                Some(c) if c.uid_validity == validity => (c.last_uid, false),
                Some(_) => (0, true),
                None => (0, false),
            };
            let last = batch.messages.iter().map(|m| m.uid).max().unwrap_or(0);
            Ok(Batch {
                next: write(validity, start.max(batch.scanned_to).max(last)),
                restarted,
                more: batch.more,
                messages: batch
                    .messages
                    .into_iter()
                    .map(|m| message(validity, m))
                    .collect(),
            })
        })
    }

    fn fetch(&self, id: String) -> BoxFuture<'_, Result<RawMessage, MailError>> {
        Box::pin(async move {
            let (validity, uid) = read("id", &id)?;
            self.current("id", std::slice::from_ref(&id)).await?;
            Ok(message(validity, self.0.fetch(uid).await?))
        })
    }

    fn set_flags(
        &self,
        ids: Vec<String>,
        add: Vec<Flag>,
        remove: Vec<Flag>,
    ) -> BoxFuture<'_, Result<(), MailError>> {
        Box::pin(async move {
            let uids = self.current("ids", &ids).await?;
            self.0.set_flags(uids, add, remove).await
        })
    }

    fn move_to(&self, ids: Vec<String>, folder: String) -> BoxFuture<'_, Result<(), MailError>> {
        Box::pin(async move {
            let uids = self.current("ids", &ids).await?;
            self.0.move_to(uids, folder).await
        })
    }
}

impl<F: UidFolder> Watch for Uids<F> {
    fn count_after(&self, after: Option<String>) -> BoxFuture<'_, Result<u64, MailError>> {
        Box::pin(async move {
            let after = after.as_deref().map(read_cursor).transpose()?;
            self.0.count_after(after).await
        })
    }

    fn delete(&self, ids: Vec<String>) -> BoxFuture<'_, Result<(), MailError>> {
        Box::pin(async move {
            let uids = self.current("ids", &ids).await?;
            self.0.delete(uids).await
        })
    }

    fn wait_for_change(&self, plan: WaitPlan) -> BoxFuture<'_, Result<Wake, MailError>> {
        self.0.wait_for_change(plan)
    }

    fn cursor_after(&self, id: &str) -> Option<String> {
        let (validity, uid) = read("id", id).ok()?;
        Some(write(validity, uid))
    }

    fn cursor_before(&self, id: &str) -> Option<String> {
        let (validity, uid) = read("id", id).ok()?;
        Some(write(validity, uid.saturating_sub(1)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn a_batch_holds_at_most_its_byte_budget_and_always_one_message() {
        let mb = 1 << 20;
        assert_eq!(
            within_budget([10 * mb, 10 * mb, 10 * mb, 10 * mb].into_iter()),
            3
        );
        assert_eq!(
            within_budget([40 * mb, 1].into_iter()),
            1,
            "one message over it alone"
        );
        assert_eq!(within_budget([1, 2, 3].into_iter()), 3);
        assert_eq!(within_budget(std::iter::empty()), 0);
    }

    #[test]
    fn ids_and_cursors_round_trip_and_foreign_text_names_the_field() {
        assert_eq!(read("after", &write(7, 42)).unwrap(), (7, 42));
        for bad in ["", "7", "x:1", "1:-2", "AAMkAGI2"] {
            match read("after", bad) {
                Err(MailError::InvalidInput(e)) => {
                    assert_eq!(e.field, "after");
                    assert!(e.reason.contains("unchanged"), "{}", e.reason);
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
