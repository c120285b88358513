//! The `mailbox` capability: reads and changes an account's mailbox for the plugin.

mod graph;
mod imap;
mod maildir;
pub mod strip;
mod uid;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tracing::instrument;
use wasmtime::component::{HasData, Linker};

pub use self::graph::GraphMailbox;
pub use self::imap::{Imap, ImapAuth};
pub use self::maildir::Maildir;
pub use self::uid::{UidFolder, Uids};
use super::Audit;
use crate::BoxFuture;
use crate::bindings::MailError;
use crate::bindings::mailbox::{self as generated, Batch, Flag, RawMessage, Search, SizeCap};

/// How a long-running trigger waits for new mail.
#[derive(Debug, Clone, Copy)]
pub struct WaitPlan {
    /// How long one IDLE command may last before it is ended and issued again; servers
    /// drop an IDLE after 30 minutes, so this stays under 29.
    pub idle_refresh: Duration,
    /// How often to look when the server has no IDLE (or for a Maildir).
    pub poll_interval: Duration,
    /// The trigger's first wait: a backend that knows already how it waits (IDLE or
    /// polling) may return at once, so that the trigger's status shows it.
    pub first: bool,
}

/// Why a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wake {
    /// `idle` when the server pushes changes, `poll` when flowmail has to look.
    pub mode: &'static str,
    /// True when the mailbox signalled a change; false when the wait just ran out.
    pub changed: bool,
}

/// A mailbox store, as the plugin may use it: exactly what the WIT `mailbox` interface
/// offers. Implementations classify their own failures into [`MailError`].
pub trait Backend: Send + Sync {
    /// Messages after `after` that may match `search` (a backend that cannot search
    /// ignores it), at most `limit`, with messages over `cap` cut down as it says.
    fn fetch_after(
        &self,
        after: Option<String>,
        limit: u32,
        search: Search,
        cap: Option<SizeCap>,
    ) -> BoxFuture<'_, Result<Batch, MailError>>;
    fn fetch(&self, id: String) -> BoxFuture<'_, Result<RawMessage, MailError>>;
    fn set_flags(
        &self,
        ids: Vec<String>,
        add: Vec<Flag>,
        remove: Vec<Flag>,
    ) -> BoxFuture<'_, Result<(), MailError>>;
    fn move_to(&self, ids: Vec<String>, folder: String) -> BoxFuture<'_, Result<(), MailError>>;
}

/// What only the host does with a mailbox, for long-running triggers: waiting for news,
/// counting for progress, and post-actions the plugin is not offered.
pub trait Watch: Backend {
    /// How many messages follow the cursor `after` (all of them when it no longer
    /// applies), for a catch-up's progress bar.
    fn count_after(&self, after: Option<String>) -> BoxFuture<'_, Result<u64, MailError>>;
    /// Removes messages for good (IMAP: `\Deleted` and UID EXPUNGE of just these).
    fn delete(&self, ids: Vec<String>) -> BoxFuture<'_, Result<(), MailError>>;
    /// Waits until the folder may have changed, or until `plan` says to look anyway.
    /// Dropping the future drops any connection it used, so a hung wait is cured by
    /// dropping it and waiting again.
    fn wait_for_change(&self, plan: WaitPlan) -> BoxFuture<'_, Result<Wake, MailError>>;
    /// A cursor that resumes reading just after message `id`, when the backend can tell
    /// one (a UID backend can; a delta-link backend only knows its batch's `next`). A
    /// trigger stores it after each run, so a crash mid-batch re-reads nothing handled.
    fn cursor_after(&self, id: &str) -> Option<String>;
    /// A cursor from which reading returns message `id` first if it still exists and
    /// matches, to read one message again for a retry.
    fn cursor_before(&self, id: &str) -> Option<String>;
}

/// The accounts that have a mailbox, by name.
#[derive(Clone, Default)]
pub struct MailboxCtx {
    pub accounts: HashMap<String, Arc<dyn Watch>>,
}

/// The view of [`MailboxCtx`] that serves one step.
pub struct Mailbox<'a> {
    pub ctx: &'a MailboxCtx,
    pub audit: &'a Audit,
    pub scope: &'a super::Scope,
}

impl Mailbox<'_> {
    fn backend(&self, name: &str) -> Result<&Arc<dyn Watch>, MailError> {
        self.scope.admit(name)?;
        self.ctx.accounts.get(name).ok_or_else(|| {
            MailError::NotFound(format!("no account `{name}` with a mailbox is configured"))
        })
    }
}

impl generated::Host for Mailbox<'_> {
    #[instrument(name = "mailbox.fetch_after", skip(self))]
    async fn fetch_after(
        &mut self,
        account: String,
        after: Option<String>,
        limit: u32,
        search: Search,
        cap: Option<SizeCap>,
    ) -> wasmtime::Result<Result<Batch, MailError>> {
        self.audit.record(|| {
            format!("import mailbox.fetch-after account={account} after={after:?} limit={limit} search={search:?} cap={cap:?}")
        });
        let result = match self.backend(&account) {
            Ok(b) => b.fetch_after(after, limit, search, cap).await,
            Err(e) => Err(e),
        };
        self.audit.record(|| match &result {
            Ok(b) => format!(
                "import mailbox.fetch-after -> {} messages: {}",
                b.messages.len(),
                b.messages
                    .iter()
                    .map(|m| String::from_utf8_lossy(&m.data))
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
            Err(e) => format!("import mailbox.fetch-after -> {e:?}"),
        });
        Ok(result)
    }

    #[instrument(name = "mailbox.fetch", skip(self))]
    async fn fetch(
        &mut self,
        account: String,
        id: String,
    ) -> wasmtime::Result<Result<RawMessage, MailError>> {
        let result = match self.backend(&account) {
            Ok(b) => b.fetch(id.clone()).await,
            Err(e) => Err(e),
        };
        self.audit.record(|| match &result {
            Ok(m) => format!(
                "import mailbox.fetch account={account} id={id} -> {}",
                String::from_utf8_lossy(&m.data)
            ),
            Err(e) => format!("import mailbox.fetch account={account} id={id} -> {e:?}"),
        });
        Ok(result)
    }

    #[instrument(name = "mailbox.set_flags", skip(self))]
    async fn set_flags(
        &mut self,
        account: String,
        ids: Vec<String>,
        add: Vec<Flag>,
        remove: Vec<Flag>,
    ) -> wasmtime::Result<Result<(), MailError>> {
        self.audit.record(|| format!("import mailbox.set-flags account={account} ids={ids:?} add={add:?} remove={remove:?}"));
        Ok(match self.backend(&account) {
            Ok(b) => b.set_flags(ids, add, remove).await,
            Err(e) => Err(e),
        })
    }

    #[instrument(name = "mailbox.move_to", skip(self))]
    async fn move_to(
        &mut self,
        account: String,
        ids: Vec<String>,
        folder: String,
    ) -> wasmtime::Result<Result<(), MailError>> {
        self.audit.record(|| {
            format!("import mailbox.move-to account={account} ids={ids:?} folder={folder}")
        });
        Ok(match self.backend(&account) {
            Ok(b) => b.move_to(ids, folder).await,
            Err(e) => Err(e),
        })
    }
}

struct HasMailbox;

impl HasData for HasMailbox {
    type Data<'a> = Mailbox<'a>;
}

/// Adds the `mailbox` interface to `linker`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    f: fn(&mut T) -> Mailbox<'_>,
) -> wasmtime::Result<()> {
    generated::add_to_linker::<T, HasMailbox>(linker, f)
}
