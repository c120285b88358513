//! One run of a catch-up: a unit of messages (one, or a batch) through the steps, and
//! its outcome for each message: done (then the post-action), waiting for a retry, or
//! dead (then the dead-letter action), written with the cursor past the unit in one
//! commit.

use serde_json::Map;

use super::{CatchUp, PAUSE_PROBE, REPEATED_FAILURES, message_key, store_failure};
use crate::bindings::Recovery;
use crate::bindings::types::ReceivedMessage;
use crate::store::{HandledRow, Handling};
use crate::workflow::Workflow;
use crate::workflow::events::{Alert, AlertKind};
use crate::workflow::inputs;
use crate::workflow::runner::{RunError, RunOptions, RunReport, Runner};
use crate::workflow::trigger::{MailboxTrigger, Per, PostAction};

impl CatchUp<'_> {
    /// Runs the workflow once for `unit`, unless its messages were handled before or wait
    /// for a retry, and stores the outcome: the run's record, the messages' records and,
    /// with `to`, the cursor moved past the unit, all in one commit.
    pub(super) async fn run_unit(
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
