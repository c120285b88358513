//! Mailbox-triggered runs: the catch-up from the cursor, one run per message (or batch),
//! the record of each message in the store (done, waiting for a retry, dead), retries that
//! fall due, post-actions and dead letters.

mod mailbox_actions;

use serde_json::{Map, json};
use sha2::{Digest, Sha256};

use super::Workflow;
use super::events::{Alert, AlertKind};
use super::inputs;
use super::runner::{RunError, RunOptions, RunReport, Runner};
use super::trigger::{MailboxTrigger, Per, PostAction};
use crate::bindings::Recovery;
use crate::bindings::actions::Filter;
use crate::bindings::types::ReceivedMessage;
use crate::runtime::StepError;
use crate::store::{HandledRow, Handling};

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

    /// Runs the steps once for `unit`, unless its messages were handled already, and
    /// records the outcome for each message: done (then the post-action), waiting for a
    /// retry, or dead (then the dead-letter action).
    /// Runs the workflow once for `unit`, unless its messages were handled before or wait
    /// for a retry, and stores the outcome: the run's record, the messages' records and,
    /// with `to`, the cursor moved past the unit, all in one commit.
    async fn run_unit(
        &self,
        wf: &Workflow,
        trigger: &MailboxTrigger,
        unit: Vec<ReceivedMessage>,
        to: Option<(&mut Option<String>, String)>,
        options: RunOptions,
        report: &mut RunReport,
    ) -> Result<(), RunError> {
        let account = trigger.account.as_str();
        let now = crate::unix_now();
        let mut todo = Vec::new();
        let mut rows = Vec::new();
        for m in unit {
            let key = message_key(&m);
            let existing = self
                .runner
                .store
                .handled(&wf.name, account, &key)
                .map_err(store_failure)?;
            let moved = |mut row: HandledRow| {
                row.message = m.id.clone();
                row
            };
            match existing {
                Some(row) if matches!(row.status, Handling::Done | Handling::Dead) => {
                    report.deduplicated += 1;
                    report.lines.push(format!(
                        "message {} of `{account}` ({key}) was handled before; it is not run again",
                        m.id
                    ));
                    if row.message != m.id {
                        self.runner
                            .store
                            .put_handled(&wf.name, account, &moved(row))
                            .map_err(store_failure)?;
                    }
                }
                Some(row)
                    if row.status == Handling::Pending
                        && !options.retry_now
                        && row.next_attempt > now =>
                {
                    // Seen again before its retry is due: keep waiting.
                    self.runner
                        .store
                        .put_handled(&wf.name, account, &moved(row))
                        .map_err(store_failure)?;
                }
                Some(row) => {
                    rows.push(moved(row));
                    todo.push(m);
                }
                None => {
                    rows.push(HandledRow {
                        key,
                        message: m.id.clone(),
                        post_pending: false,
                        status: Handling::Running,
                        attempts: 0,
                        first_seen: now,
                        next_attempt: now,
                        last_error: None,
                    });
                    todo.push(m);
                }
            }
        }
        if todo.is_empty() {
            if let Some((cursor, next)) = to {
                self.advance(wf, account, cursor, next)?;
            }
            return Ok(());
        }
        report
            .attempted
            .extend(rows.iter().map(|row| row.key.clone()));
        for row in &mut rows {
            row.status = Handling::Running;
        }
        self.runner
            .store
            .start_unit(&wf.name, account, &rows)
            .map_err(store_failure)?;
        let ids: Vec<String> = todo.iter().map(|m| m.id.clone()).collect();
        let mut ctx = Map::new();
        let mut trigger_json = inputs::unit_json(account, &todo);
        if trigger.per == Per::Message
            && let (Some(obj), Some(first)) = (trigger_json.as_object_mut(), todo.first())
        {
            obj.insert("message".into(), inputs::received_json(account, first));
        }
        ctx.insert("trigger".into(), trigger_json);
        tracing::debug!(
            "workflow `{}`: run starts for {} of `{account}`",
            wf.name,
            ids.join(", ")
        );
        let started = crate::unix_now();
        let result = self.runner.steps(wf, ctx, report).await;
        let run = Runner::run_record(started, &result, report);
        let finish = |rows: &[HandledRow]| {
            let next = to.and_then(|(cursor, next)| {
                (cursor.as_deref() != Some(next.as_str())).then(|| {
                    *cursor = Some(next.clone());
                    next
                })
            });
            self.runner
                .store
                .finish_unit(&wf.name, account, &run, rows, next.as_deref())
                .map_err(store_failure)
        };
        match result {
            Ok(()) => {
                report.runs += 1;
                // Done and the post-action still to do are one write per message, so a
                // crash between the run and its post-action leaves it recorded, not lost.
                let post = trigger.on_success != PostAction::Nothing;
                for row in &mut rows {
                    row.status = Handling::Done;
                    row.attempts += 1;
                    row.last_error = None;
                    row.post_pending = post;
                }
                finish(&rows)?;
                if post && self.post_action(trigger, &ids, report).await {
                    for row in &mut rows {
                        row.post_pending = false;
                        self.runner
                            .store
                            .put_handled(&wf.name, account, row)
                            .map_err(store_failure)?;
                    }
                }
            }
            Err(e) if e.recovery == Recovery::Pause => {
                // The account is at fault, not the message: it waits with its attempts
                // untouched and is tried again when the pause probe falls due.
                for row in &mut rows {
                    row.status = Handling::Pending;
                    row.last_error = Some(e.to_string());
                    row.next_attempt = now + PAUSE_PROBE;
                }
                finish(&rows)?;
                let line = format!(
                    "run for message(s) {ids:?} of `{account}` failed on the account's credentials: {e}; the trigger is paused, the message(s) wait with their attempts untouched and run once the credentials work again"
                );
                tracing::error!("workflow `{}`: {line}", wf.name);
                report.lines.push(line);
                report.paused = Some(e.to_string());
                report.failed.push(e);
            }
            Err(e) => {
                let mut dead = Vec::new();
                let at_once = e.recovery == Recovery::DeadLetter;
                for row in &mut rows {
                    row.attempts += 1;
                    row.last_error = Some(e.to_string());
                    if at_once || row.attempts >= trigger.retry.attempts {
                        row.status = Handling::Dead;
                        // The dead-letter action is owed until it took effect.
                        row.post_pending = true;
                        dead.push(row.message.clone());
                    } else {
                        row.status = Handling::Pending;
                        let wait = trigger.retry.delay(row.attempts);
                        row.next_attempt = now + wait.as_secs().max(1) as i64;
                    }
                }
                finish(&rows)?;
                let attempts = rows.iter().map(|r| r.attempts).max().unwrap_or_default();
                let line = if dead.is_empty() {
                    format!(
                        "run for message(s) {ids:?} of `{account}` failed (attempt {attempts} of {}): {e}; it will be retried",
                        trigger.retry.attempts
                    )
                } else if at_once {
                    format!(
                        "run for message(s) {ids:?} of `{account}` failed: {e}; retrying cannot help until the input, the workflow or the config changes, so the message(s) go to the dead letters now"
                    )
                } else {
                    format!(
                        "run for message(s) {ids:?} of `{account}` failed its last attempt ({attempts} of {}): {e}; the message(s) go to the dead letters",
                        trigger.retry.attempts
                    )
                };
                tracing::error!("workflow `{}`: {line}", wf.name);
                // Someone should look: at dead letters, and at a retryable failure that
                // keeps coming back.
                let kind = if !dead.is_empty() {
                    Some(AlertKind::DeadLetters)
                } else {
                    (attempts == REPEATED_FAILURES).then_some(AlertKind::DeliveryFailures)
                };
                if let Some(kind) = kind {
                    self.runner.events.alert(&Alert {
                        kind,
                        account,
                        workflow: &wf.name,
                        text: &line,
                    });
                }
                report.lines.push(line);
                if !dead.is_empty() {
                    report.dead += dead.len();
                    if self.dead_letter(trigger, &dead, report).await {
                        for row in rows.iter_mut().filter(|r| r.status == Handling::Dead) {
                            row.post_pending = false;
                            self.runner
                                .store
                                .put_handled(&wf.name, account, row)
                                .map_err(store_failure)?;
                        }
                    }
                }
                report.failed.push(e);
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
