//! Mailbox-triggered runs: the catch-up from the cursor, one run per message (or batch),
//! the record of each message in the store (done, waiting for a retry, dead), retries that
//! fall due, post-actions and dead letters.

mod mailbox_actions;
mod unit;

use serde_json::json;
use sha2::{Digest, Sha256};

use super::Workflow;
use super::inputs;
use super::runner::{RunError, RunOptions, RunReport, Runner};
use super::trigger::{MailboxTrigger, Per};
use crate::bindings::Recovery;
use crate::bindings::actions::Filter;
use crate::bindings::types::ReceivedMessage;
use crate::runtime::StepError;
use crate::store::Handling;

/// The key that recognises a message across UIDVALIDITY changes: its Message-ID, or a
/// digest of what identifies it when it has none.
fn message_key(m: &ReceivedMessage) -> String {
    match &m.message_id {
        Some(id) if !id.trim().is_empty() => format!("id:{}", id.trim()),
        _ => {
            let mut h = Sha256::new();
            for part in [
                m.date.as_deref().unwrap_or_default(),
                m.sender
                    .as_ref()
                    .map(|a| a.email.as_str())
                    .unwrap_or_default(),
                m.subject.as_str(),
                &m.size.to_string(),
                m.text.as_deref().unwrap_or_default(),
            ] {
                h.update(part.as_bytes());
                h.update([0u8]);
            }
            let digest = h.finalize();
            format!(
                "sha256:{}",
                digest
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            )
        }
    }
}

/// The runs that `messages` make: one each, or one for all of them.
fn units(per: Per, messages: Vec<ReceivedMessage>) -> Vec<Vec<ReceivedMessage>> {
    match per {
        Per::Message => messages.into_iter().map(|m| vec![m]).collect(),
        Per::Batch if messages.is_empty() => Vec::new(),
        Per::Batch => vec![messages],
    }
}

pub(super) fn store_failure(e: crate::store::StoreError) -> RunError {
    RunError {
        recovery: Recovery::Retry,
        ..RunError::new("trigger", None, e.to_string())
    }
}

/// After this many failed attempts of one message, the failures count as repeated and
/// raise an alert, before the message gives up.
const REPEATED_FAILURES: u32 = 3;

/// How long a paused trigger waits before it tries its credentials again.
const PAUSE_PROBE: i64 = 60;

/// One trigger's catch-up: reads from the cursor it owns (this process holds the
/// workflow's lock), runs the steps through the [`Runner`], and keeps each message's
/// attempts, retries and dead letters in the store.
pub struct CatchUp<'a> {
    runner: Runner<'a>,
}

impl<'a> CatchUp<'a> {
    pub fn new(runner: Runner<'a>) -> Self {
        Self { runner }
    }

    /// Processes everything new since the trigger's cursor, then the retries that are due.
    /// A failing run does not stop the catch-up: its messages are kept for a retry. Only a
    /// failure to read the mailbox or the store is an error. When `stop` turns true, the
    /// catch-up ends after the run in progress, with the cursor just past it.
    ///
    /// Each line of the report is told to the runner's `Events` as it happens: a skipped
    /// message when it is read, a run when it ends.
    pub async fn catch_up(
        &self,
        wf: &Workflow,
        trigger: &MailboxTrigger,
        options: RunOptions,
        report: &mut RunReport,
        stop: Option<&tokio::sync::watch::Receiver<bool>>,
    ) -> Result<(), RunError> {
        let result = self
            .catch_up_from_cursor(wf, trigger, options, report, stop)
            .await;
        self.show(wf, report);
        result
    }

    /// Tells the runner's `Events` the report's lines it has not been told yet; "nothing
    /// new" is not worth a line.
    fn show(&self, wf: &Workflow, report: &mut RunReport) {
        for line in report.lines.iter().skip(report.shown) {
            if !line.starts_with("trigger: 0 new") {
                self.runner.events.line(&wf.name, line);
            }
        }
        report.shown = report.lines.len();
    }

    async fn catch_up_from_cursor(
        &self,
        wf: &Workflow,
        trigger: &MailboxTrigger,
        options: RunOptions,
        report: &mut RunReport,
        stop: Option<&tokio::sync::watch::Receiver<bool>>,
    ) -> Result<(), RunError> {
        let stopping = || stop.is_some_and(|s| *s.borrow());
        let filter = inputs::filter(&trigger.filter)
            .map_err(|(f, r)| RunError::new("trigger", Some(&format!("filter.{f}")), r))?;
        let account = trigger.account.as_str();
        let now = crate::unix_now();
        let outset = self
            .runner
            .store
            .outset(&wf.name, account)
            .map_err(store_failure)?;
        report.credentials = Some(outset.credentials);
        let owed = outset.owed;
        // A run that was cut short (the process died) counts as a failed attempt.
        for mut row in owed.interrupted {
            row.status = Handling::Pending;
            row.attempts += 1;
            row.next_attempt = now;
            row.last_error = Some("the run was interrupted before it finished".into());
            self.runner
                .store
                .put_handled(&wf.name, account, &row)
                .map_err(store_failure)?;
        }
        self.finish_post_actions(wf, trigger, owed.post_actions, report)
            .await?;
        let mut progress = false;
        // This process holds the workflow's lock, so the cursor is only written here.
        let mut cursor = outset.cursor;
        let mailbox = self.runner.mailboxes.mailbox(account);
        let mut limit = trigger.batch;
        loop {
            let after = cursor.clone();
            let read = self.runner.actions.read_mailbox(
                "trigger",
                account,
                &filter,
                after.clone(),
                limit,
                trigger.cap(),
            );
            let Some(read) = unless_stopped(stop, read).await else {
                return Ok(());
            };
            let page = match read {
                Ok(page) => page,
                // The read broke the sandbox's time, memory or stack limit: read fewer at a time,
                // down to one; one message that still breaks it is passed over.
                Err(
                    e @ (StepError::Timeout(_)
                    | StepError::Memory { .. }
                    | StepError::StackOverflow
                    | StepError::Oversized(_)),
                ) => {
                    if limit > 1 {
                        let line = format!(
                            "reading {limit} message(s) of `{account}` at once broke a limit ({e}); reading {} at a time",
                            limit / 2
                        );
                        tracing::warn!("{line}");
                        report.lines.push(line);
                        limit /= 2;
                        continue;
                    }
                    let next = self
                        .pass_over(wf, trigger, &filter, after.clone(), &e, report)
                        .await?;
                    self.advance(wf, account, &mut cursor, next)?;
                    continue;
                }
                Err(e) => return Err(RunError::from_step("trigger", "trigger", e)),
            };
            if page.restarted {
                let line = format!(
                    "`{account}` could not resume from its cursor (an IMAP folder whose UIDVALIDITY changed, a Graph delta link that expired, or a mailbox rebuilt): reading it again from the start; messages already handled are recognised by Message-ID and not run again"
                );
                tracing::warn!("{line}");
                report.lines.push(line);
            }
            if !progress && page.more && options.progress {
                let total = match &mailbox {
                    Some(b) => unless_stopped(stop, b.count_after(after))
                        .await
                        .and_then(Result::ok)
                        .unwrap_or_default(),
                    None => 0,
                };
                self.runner.events.catch_up_started(&wf.name, total);
                progress = true;
            }
            for s in page.skipped.iter() {
                report.lines.push(format!(
                    "skipped message {} of `{account}`: it {}",
                    s.id, s.reason
                ));
                report.skipped.push(json!({"id": s.id, "reason": s.reason}));
            }
            report.scanned += u64::from(page.scanned);
            report.lines.push(format!(
                "trigger: {} new message(s) in `{account}`, {} matched",
                page.scanned,
                page.messages.len()
            ));
            for unit in units(trigger.per, page.messages) {
                // Messages come oldest first: past the unit's last, the cursor passes all.
                let past = unit
                    .last()
                    .and_then(|m| mailbox.as_ref()?.cursor_after(&m.id));
                self.show(wf, report);
                // The cursor moves past the unit in the same commit as its outcome.
                let to = past.map(|next| (&mut cursor, next));
                self.run_unit(wf, trigger, unit, to, options, report)
                    .await?;
                self.show(wf, report);
                // Paused: the unit waits in the store; later messages are read again
                // once the credentials work, from the cursor just past it.
                if stopping() || report.paused.is_some() {
                    return Ok(());
                }
            }
            self.advance(wf, account, &mut cursor, page.next_cursor)?;
            if progress {
                self.runner
                    .events
                    .catch_up_advanced(&wf.name, u64::from(page.scanned));
            }
            if !page.more {
                break;
            }
        }
        if progress {
            self.runner.events.catch_up_finished(&wf.name);
        }
        if stopping() {
            return Ok(());
        }
        self.retry_due(wf, trigger, &filter, options, report).await
    }

    /// Stores `next` as the cursor. The callers only ever pass cursors further on: past
    /// a unit just run, or the page's own `next`.
    fn advance(
        &self,
        wf: &Workflow,
        account: &str,
        cursor: &mut Option<String>,
        next: String,
    ) -> Result<(), RunError> {
        if cursor.as_deref() != Some(next.as_str()) {
            self.runner
                .store
                .set_cursor(&wf.name, account, &next)
                .map_err(store_failure)?;
            *cursor = Some(next);
        }
        Ok(())
    }

    /// Retries the failed messages whose next attempt is due, reading each again.
    async fn retry_due(
        &self,
        wf: &Workflow,
        trigger: &MailboxTrigger,
        filter: &Filter,
        options: RunOptions,
        report: &mut RunReport,
    ) -> Result<(), RunError> {
        let account = trigger.account.as_str();
        let mailbox = self.runner.mailboxes.mailbox(account);
        let due_by = (!options.retry_now).then(crate::unix_now);
        let (mut due, waiting) = self
            .runner
            .store
            .due_and_waiting(&wf.name, account, due_by)
            .map_err(store_failure)?;
        // A message met again while reading new mail has had its attempt already.
        due.retain(|row| !report.attempted.contains(&row.key));
        if due.is_empty() {
            // Nothing runs after this read: what waits is what it saw.
            report.waiting = Some(waiting);
        }
        let mut found = Vec::new();
        for mut row in due {
            let Some(after) = mailbox.as_ref().and_then(|b| b.cursor_before(&row.message)) else {
                // The backend cannot read one message again from a cursor; the message
                // keeps waiting with its attempts.
                continue;
            };
            let page = self
                .runner
                .actions
                .read_mailbox("trigger", account, filter, Some(after), 1, trigger.cap())
                .await
                .map_err(|e| RunError::from_step("trigger", "trigger", e))?;
            // After a restart the message's old id names nothing; had it still been there,
            // the catch-up before this would have met it again under its new id.
            let again = (!page.restarted)
                .then(|| page.messages.into_iter().find(|m| m.id == row.message))
                .flatten();
            match again {
                Some(m) if message_key(&m) == row.key => found.push(m),
                _ => {
                    let line = format!(
                        "message {} of `{account}` waited for a retry but is no longer in the mailbox, or no longer matches the filter; it is not retried",
                        row.message
                    );
                    tracing::warn!("{line}");
                    report.lines.push(line);
                    row.status = Handling::Dead;
                    row.last_error = Some("gone from the mailbox before its retry".into());
                    self.runner
                        .store
                        .put_handled(&wf.name, account, &row)
                        .map_err(store_failure)?;
                }
            }
        }
        for unit in units(trigger.per, found) {
            self.show(wf, report);
            self.run_unit(wf, trigger, unit, None, options, report)
                .await?;
            self.show(wf, report);
            if report.paused.is_some() {
                break;
            }
        }
        Ok(())
    }
}

/// Awaits `read` unless `stop` turns true first, then `None`. Only reads go through here:
/// dropping one loses nothing, since nothing was consumed and the cursor stays, so a stop
/// never waits for a server that does not answer. Runs are never cut short this way.
async fn unless_stopped<T>(
    stop: Option<&tokio::sync::watch::Receiver<bool>>,
    read: impl std::future::Future<Output = T>,
) -> Option<T> {
    let Some(stop) = stop else {
        return Some(read.await);
    };
    let mut stop = stop.clone();
    tokio::select! {
        biased;
        _ = stop.wait_for(|s| *s) => None,
        r = read => Some(r),
    }
}
