//! What a catch-up does to the mailbox itself: post-actions after a run (and the ones
//! still owed), dead letters, and passing over a message no read can get through the
//! sandbox's limits.

use serde_json::json;

use super::{CatchUp, store_failure};
use crate::bindings::Recovery;
use crate::bindings::actions::Filter;
use crate::bindings::mailbox::{Flag, Oversize, Search, SizeCap};
use crate::runtime::StepError;
use crate::store::{HandledRow, Handling};
use crate::workflow::Workflow;
use crate::workflow::runner::{RunError, RunReport};
use crate::workflow::trigger::{MailboxTrigger, PostAction};

impl CatchUp<'_> {
    /// Passes over the one message that a read of one message cannot get through the
    /// sandbox's limits with: it is recorded as a dead letter with the limit and its size,
    /// and the returned cursor is just past it. The message is the next one after `after`
    /// that the server's search conditions (without the date, which only makes the search
    /// wider) let through: the one the read was stuck on, or one that read would have left
    /// out anyway.
    pub(super) async fn pass_over(
        &self,
        wf: &Workflow,
        trigger: &MailboxTrigger,
        filter: &Filter,
        after: Option<String>,
        error: &StepError,
        report: &mut RunReport,
    ) -> Result<String, RunError> {
        let account = trigger.account.as_str();
        let stuck = || RunError {
            recovery: Recovery::Retry,
            ..RunError::new("trigger", None, error.to_string())
        };
        let mailbox = self.runner.mailboxes.mailbox(account).ok_or_else(stuck)?;
        let search = Search {
            sender_contains: filter.sender_contains.clone(),
            subject_contains: filter.subject_contains.clone(),
            unseen: filter.unseen.unwrap_or(false),
            sent_since: None,
        };
        // A cap of 0 bytes lists the message (id and size) without reading it.
        let probe = SizeCap {
            max_size: 0,
            oversize: Oversize::Skip,
        };
        let batch = mailbox
            .fetch_after(after, 1, search, Some(probe))
            .await
            .map_err(|e| RunError {
                recovery: Recovery::Retry,
                ..RunError::new("trigger", None, e.describe().to_string())
            })?;
        let Some(m) = batch.messages.first() else {
            return Err(stuck());
        };
        let reason = format!(
            "reading it alone broke the plugin's limits ({error}); it is {} bytes",
            m.size
        );
        let line = format!("skipped message {} of `{account}`: {reason}", m.id);
        tracing::warn!("{line}");
        report.lines.push(line);
        report.skipped.push(json!({"id": m.id, "reason": reason}));
        let now = crate::unix_now();
        self.runner
            .store
            .put_handled(
                &wf.name,
                account,
                &HandledRow {
                    key: format!("ref:{}", m.id),
                    message: m.id.clone(),
                    status: Handling::Dead,
                    attempts: 1,
                    first_seen: now,
                    next_attempt: now,
                    last_error: Some(reason),
                    post_pending: false,
                },
            )
            .map_err(store_failure)?;
        report.dead += 1;
        Ok(batch.next)
    }

    /// Does the post-action of messages whose run succeeded but whose post-action did not
    /// take effect yet (it failed, or the process died first), `pending` as the store
    /// owes them ([`crate::store::Store::outset`]). A message gone from the mailbox needs
    /// none any more.
    pub(super) async fn finish_post_actions(
        &self,
        wf: &Workflow,
        trigger: &MailboxTrigger,
        pending: Vec<HandledRow>,
        report: &mut RunReport,
    ) -> Result<(), RunError> {
        let account = trigger.account.as_str();
        for mut row in pending {
            let done = if row.status == Handling::Dead {
                self.dead_letter(trigger, std::slice::from_ref(&row.message), report)
                    .await
            } else {
                trigger.on_success == PostAction::Nothing
                    || self
                        .post_action(trigger, std::slice::from_ref(&row.message), report)
                        .await
            };
            if done {
                row.post_pending = false;
                self.runner
                    .store
                    .put_handled(&wf.name, account, &row)
                    .map_err(store_failure)?;
            }
        }
        Ok(())
    }

    /// The trigger's post-action after a successful run; true once it took effect (or the
    /// messages are gone, so none is needed). A failure is logged and reported; the run
    /// stays done and the post-action is tried again at the next catch-up.
    pub(super) async fn post_action(
        &self,
        trigger: &MailboxTrigger,
        ids: &[String],
        report: &mut RunReport,
    ) -> bool {
        let Some(mailbox) = self.runner.mailboxes.mailbox(&trigger.account) else {
            return false;
        };
        let (what, result) = match &trigger.on_success {
            PostAction::Nothing => return true,
            PostAction::MarkSeen => (
                "marking seen".to_owned(),
                mailbox
                    .set_flags(ids.to_vec(), vec![Flag::Seen], Vec::new())
                    .await,
            ),
            PostAction::Flag => (
                "flagging".to_owned(),
                mailbox
                    .set_flags(ids.to_vec(), vec![Flag::Flagged], Vec::new())
                    .await,
            ),
            PostAction::Delete => ("deleting".to_owned(), mailbox.delete(ids.to_vec()).await),
            PostAction::MoveTo(folder) => (
                format!("moving to `{folder}`"),
                mailbox.move_to(ids.to_vec(), folder.clone()).await,
            ),
        };
        match result {
            Ok(()) => true,
            // One of several is gone: the others still need theirs, one by one.
            Err(crate::bindings::MailError::NotFound(_)) if ids.len() > 1 => {
                let mut all = true;
                for id in ids {
                    all &=
                        Box::pin(self.post_action(trigger, std::slice::from_ref(id), report)).await;
                }
                all
            }
            Err(crate::bindings::MailError::NotFound(_)) => true,
            Err(e) => {
                let line = format!(
                    "the run for message(s) {ids:?} succeeded, but {what} failed: {}; it is tried again at the next catch-up",
                    e.describe()
                );
                tracing::error!("{line}");
                report.lines.push(line);
                false
            }
        }
    }

    /// Flags or moves messages that failed every attempt; true once it took effect (or
    /// the messages are gone). A failure is logged, and the action is tried again at the
    /// next catch-up.
    pub(super) async fn dead_letter(
        &self,
        trigger: &MailboxTrigger,
        ids: &[String],
        report: &mut RunReport,
    ) -> bool {
        let Some(mailbox) = self.runner.mailboxes.mailbox(&trigger.account) else {
            return false;
        };
        let result = match (&trigger.dead_letter.folder, trigger.dead_letter.flag) {
            (Some(folder), _) => mailbox.move_to(ids.to_vec(), folder.clone()).await,
            (None, flag) => {
                mailbox
                    .set_flags(
                        ids.to_vec(),
                        vec![flag.unwrap_or(Flag::Flagged)],
                        Vec::new(),
                    )
                    .await
            }
        };
        match result {
            Ok(()) | Err(crate::bindings::MailError::NotFound(_)) => true,
            Err(e) => {
                let line = format!(
                    "message(s) {ids:?} could not be put in the dead letters: {}; it is tried again at the next catch-up",
                    e.describe()
                );
                tracing::error!("{line}");
                report.lines.push(line);
                false
            }
        }
    }
}
