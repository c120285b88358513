//! Runs a workflow: the trigger's batches, then each step in order. A failing step stops
//! the run, names the step, the field and the reason, and leaves the cursor where it was.

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::inputs::{self, ReadMailboxInput, SendMailInput};
use super::progress::Progress;
use super::trigger::{MailboxTrigger, Per, PostAction};
use super::{Action, Step, Workflow, expr};
use crate::bindings::MailError;
use crate::bindings::actions::Filter;
use crate::bindings::mailbox::{Cursor, Flag};
use crate::bindings::types::ReceivedMessage;
use crate::runtime::{Runtime, StepError};
use crate::store::{HandledRow, Handling, Store, StoredCursor};

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
#[error("step `{step}` failed{}: {reason}", field.as_deref().map(|f| format!(" at `{f}`")).unwrap_or_default())]
pub struct RunError {
    pub step: String,
    pub field: Option<String>,
    pub reason: String,
    /// Whether retrying the run later can succeed.
    pub retryable: bool,
}

impl RunError {
    pub fn new(step: &str, field: Option<&str>, reason: impl Into<String>) -> Self {
        Self {
            step: step.to_owned(),
            field: field.map(str::to_owned),
            reason: reason.into(),
            retryable: false,
        }
    }

    fn from_step(step: &str, field_prefix: &str, e: StepError) -> Self {
        match e {
            StepError::Mail(MailError::InvalidInput(f)) => {
                let field = if f.field.starts_with("message") || f.field.starts_with("filter") {
                    format!("{field_prefix}.{}", f.field)
                } else {
                    f.field
                };
                Self::new(step, Some(&field), f.reason)
            }
            StepError::Mail(MailError::Transient(m)) => Self {
                retryable: true,
                ..Self::new(step, None, format!("temporary failure, retry later: {m}"))
            },
            other => Self::new(step, None, other.to_string()),
        }
    }
}

/// What a run did, for people and for tests.
#[derive(Debug, Default)]
pub struct RunReport {
    /// One line per thing that happened.
    pub lines: Vec<String>,
    /// Messages sent: their receipts.
    pub sent: Vec<Value>,
    /// Messages that could not be read, with the reason.
    pub skipped: Vec<Value>,
    /// Runs of the steps that succeeded.
    pub runs: usize,
    /// Runs that failed, each with why; their messages wait for a retry or went to the
    /// dead letters.
    pub failed: Vec<RunError>,
    /// Messages that went to the dead letters in this catch-up.
    pub dead: usize,
    /// Messages seen again (after a UIDVALIDITY change) that were already handled.
    pub deduplicated: usize,
    /// Messages looked at.
    pub scanned: u64,
}

/// How a catch-up treats retries and shows progress.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// Retry every failed message now, due or not (a manual `flowmail run`).
    pub retry_now: bool,
    /// Show progress for long catch-ups.
    pub progress: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            retry_now: true,
            progress: false,
        }
    }
}

/// Runs workflows with one runtime and store.
pub struct Runner<'a> {
    pub runtime: &'a Runtime,
    pub store: &'a Store,
}

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

fn store_failure(e: crate::store::StoreError) -> RunError {
    RunError {
        retryable: true,
        ..RunError::new("trigger", None, e.to_string())
    }
}

impl Runner<'_> {
    /// Runs `wf` once, as `flowmail run` does: every failed message is retried now. With a
    /// mailbox trigger this is a catch-up of everything new since the cursor. The first
    /// failed run, if any, is the error, after every message was tried.
    pub async fn run(&self, wf: &Workflow) -> Result<RunReport, RunError> {
        let report = self.run_with(wf, RunOptions::default()).await?;
        match report.failed.first() {
            Some(first) => Err(RunError {
                step: first.step.clone(),
                field: first.field.clone(),
                reason: first.reason.clone(),
                retryable: first.retryable,
            }),
            None => Ok(report),
        }
    }

    /// Runs `wf` once with `options`. Failed runs are in the report's `failed`; the error
    /// is for a trigger that could not read its mailbox or the store.
    pub async fn run_with(
        &self,
        wf: &Workflow,
        options: RunOptions,
    ) -> Result<RunReport, RunError> {
        let mut report = RunReport::default();
        let Some(trigger) = &wf.trigger.mailbox else {
            let started = crate::unix_now();
            let result = self.steps(wf, Map::new(), &mut report).await;
            self.record(wf, started, &result, &report);
            match result {
                Ok(()) => report.runs += 1,
                Err(e) => report.failed.push(e),
            }
            return Ok(report);
        };
        let _claim = self.store.lock_workflow(&wf.name).map_err(store_failure)?;
        self.catch_up(wf, trigger, options, &mut report, None)
            .await?;
        Ok(report)
    }

    fn record(
        &self,
        wf: &Workflow,
        started: i64,
        result: &Result<(), RunError>,
        report: &RunReport,
    ) {
        let (outcome, detail) = match result {
            Ok(()) => ("ok", report.lines.join("\n")),
            Err(e) => ("failed", e.to_string()),
        };
        if let Err(e) = self.store.record_run(&wf.name, started, outcome, &detail) {
            tracing::warn!("could not record the run: {e}");
        }
    }

    /// Processes everything new since the trigger's cursor, then the retries that are due.
    /// A failing run does not stop the catch-up: its messages are kept for a retry. Only a
    /// failure to read the mailbox or the store is an error. When `stop` turns true, the
    /// catch-up ends after the run in progress, with the cursor just past it.
    pub async fn catch_up(
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
        // A run that was cut short (the process died) counts as a failed attempt.
        for mut row in self
            .store
            .handled_in(&wf.name, account, Handling::Running, None)
            .map_err(store_failure)?
        {
            row.status = Handling::Pending;
            row.attempts += 1;
            row.next_attempt = now;
            row.last_error = Some("the run was interrupted before it finished".into());
            self.store
                .put_handled(&wf.name, account, &row)
                .map_err(store_failure)?;
        }
        let mut progress = None;
        let mut validity;
        loop {
            let stored = self
                .store
                .cursor(&wf.name, account)
                .map_err(store_failure)?;
            let after = stored.map(|c| Cursor {
                uid_validity: c.uid_validity,
                last_uid: c.last_uid,
            });
            let page = self
                .runtime
                .read_mailbox(
                    "trigger",
                    account,
                    &filter,
                    after,
                    trigger.batch,
                    trigger.cap(),
                )
                .await
                .map_err(|e| RunError::from_step("trigger", "trigger", e))?;
            let current = page.next_cursor.uid_validity;
            validity = Some(current);
            if let Some(s) = stored
                && s.uid_validity != current
            {
                let line = format!(
                    "the UIDVALIDITY of `{account}` changed from {} to {current}: reading it again from the start; messages already handled are recognised by Message-ID and not run again",
                    s.uid_validity
                );
                tracing::warn!("{line}");
                report.lines.push(line);
            }
            if progress.is_none() && page.more && options.progress {
                let total = match self.runtime.mailbox(account) {
                    Some(b) => b.count_after(after).await.unwrap_or_default(),
                    None => 0,
                };
                progress = Some(Progress::start(&wf.name, total));
            }
            let page_json = inputs::page_json(account, &page);
            for s in page.skipped.iter() {
                report.lines.push(format!(
                    "skipped message {} of `{account}`: it {}",
                    s.uid, s.reason
                ));
            }
            report
                .skipped
                .extend(page_json["skipped"].as_array().cloned().unwrap_or_default());
            report.scanned += u64::from(page.scanned);
            report.lines.push(format!(
                "trigger: {} new message(s) in `{account}`, {} matched",
                page.scanned,
                page.messages.len()
            ));
            let units: Vec<Vec<ReceivedMessage>> = match trigger.per {
                Per::Message => page.messages.into_iter().map(|m| vec![m]).collect(),
                Per::Batch if page.messages.is_empty() => Vec::new(),
                Per::Batch => vec![page.messages],
            };
            for unit in units {
                let last = unit.iter().map(|m| m.uid).max().unwrap_or_default();
                self.run_unit(wf, trigger, current, unit, options, report)
                    .await?;
                self.advance(wf, account, stored, current, last)?;
                if stopping() {
                    return Ok(());
                }
            }
            self.advance(wf, account, stored, current, page.next_cursor.last_uid)?;
            if let Some(p) = &mut progress {
                p.advance(u64::from(page.scanned));
            }
            if !page.more {
                break;
            }
        }
        if let Some(p) = progress {
            p.finish();
        }
        if let Some(current) = validity {
            self.retry_due(wf, trigger, &filter, current, options, report)
                .await?;
        }
        Ok(())
    }

    /// Moves the cursor forward to `last_uid` under `validity`, never back.
    fn advance(
        &self,
        wf: &Workflow,
        account: &str,
        stored: Option<StoredCursor>,
        validity: u32,
        last_uid: u32,
    ) -> Result<(), RunError> {
        let now = self
            .store
            .cursor(&wf.name, account)
            .map_err(store_failure)?
            .or(stored);
        let next = StoredCursor {
            uid_validity: validity,
            last_uid,
        };
        let forward = match now {
            Some(c) if c.uid_validity == validity => last_uid > c.last_uid,
            _ => true,
        };
        if forward {
            self.store
                .set_cursor(&wf.name, account, next)
                .map_err(store_failure)?;
        }
        Ok(())
    }

    /// Retries the failed messages whose next attempt is due, reading each again.
    async fn retry_due(
        &self,
        wf: &Workflow,
        trigger: &MailboxTrigger,
        filter: &Filter,
        validity: u32,
        options: RunOptions,
        report: &mut RunReport,
    ) -> Result<(), RunError> {
        let account = trigger.account.as_str();
        let due_by = (!options.retry_now).then(crate::unix_now);
        let due = self
            .store
            .handled_in(&wf.name, account, Handling::Pending, due_by)
            .map_err(store_failure)?;
        let mut found = Vec::new();
        for mut row in due {
            let page = if row.uid_validity == validity {
                let after = Cursor {
                    uid_validity: validity,
                    last_uid: row.uid.saturating_sub(1),
                };
                Some(
                    self.runtime
                        .read_mailbox("trigger", account, filter, Some(after), 1, trigger.cap())
                        .await
                        .map_err(|e| RunError::from_step("trigger", "trigger", e))?,
                )
            } else {
                None
            };
            match page.and_then(|p| p.messages.into_iter().find(|m| m.uid == row.uid)) {
                Some(m) if message_key(&m) == row.key => found.push(m),
                _ => {
                    let line = format!(
                        "message {} of `{account}` waited for a retry but is no longer in the mailbox, or no longer matches the filter; it is not retried",
                        row.uid
                    );
                    tracing::warn!("{line}");
                    report.lines.push(line);
                    row.status = Handling::Dead;
                    row.last_error = Some("gone from the mailbox before its retry".into());
                    self.store
                        .put_handled(&wf.name, account, &row)
                        .map_err(store_failure)?;
                }
            }
        }
        let units: Vec<Vec<ReceivedMessage>> = match trigger.per {
            Per::Message => found.into_iter().map(|m| vec![m]).collect(),
            Per::Batch if found.is_empty() => Vec::new(),
            Per::Batch => vec![found],
        };
        for unit in units {
            self.run_unit(wf, trigger, validity, unit, options, report)
                .await?;
        }
        Ok(())
    }

    /// Runs the steps once for `unit`, unless its messages were handled already, and
    /// records the outcome for each message: done (then the post-action), waiting for a
    /// retry, or dead (then the dead-letter action).
    async fn run_unit(
        &self,
        wf: &Workflow,
        trigger: &MailboxTrigger,
        validity: u32,
        unit: Vec<ReceivedMessage>,
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
                .store
                .handled(&wf.name, account, &key)
                .map_err(store_failure)?;
            let moved = |mut row: HandledRow| {
                row.uid_validity = validity;
                row.uid = m.uid;
                row
            };
            match existing {
                Some(row) if matches!(row.status, Handling::Done | Handling::Dead) => {
                    report.deduplicated += 1;
                    report.lines.push(format!(
                        "message {} of `{account}` ({key}) was handled before; it is not run again",
                        m.uid
                    ));
                    if (row.uid_validity, row.uid) != (validity, m.uid) {
                        self.store
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
                    self.store
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
                        uid_validity: validity,
                        uid: m.uid,
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
            return Ok(());
        }
        for row in &mut rows {
            row.status = Handling::Running;
            self.store
                .put_handled(&wf.name, account, row)
                .map_err(store_failure)?;
        }
        let uids: Vec<u32> = todo.iter().map(|m| m.uid).collect();
        let mut ctx = Map::new();
        let mut trigger_json = inputs::unit_json(account, &todo);
        if trigger.per == Per::Message
            && let (Some(obj), Some(first)) = (trigger_json.as_object_mut(), todo.first())
        {
            obj.insert("message".into(), inputs::received_json(account, first));
        }
        ctx.insert("trigger".into(), trigger_json);
        let started = crate::unix_now();
        let result = self.steps(wf, ctx, report).await;
        self.record(wf, started, &result, report);
        match result {
            Ok(()) => {
                report.runs += 1;
                for row in &mut rows {
                    row.status = Handling::Done;
                    row.attempts += 1;
                    row.last_error = None;
                    self.store
                        .put_handled(&wf.name, account, row)
                        .map_err(store_failure)?;
                }
                self.post_action(trigger, &uids, report).await;
            }
            Err(e) => {
                let mut dead = Vec::new();
                for row in &mut rows {
                    row.attempts += 1;
                    row.last_error = Some(e.to_string());
                    if row.attempts >= trigger.retry.attempts {
                        row.status = Handling::Dead;
                        dead.push(row.uid);
                    } else {
                        row.status = Handling::Pending;
                        let wait = trigger.retry.delay(row.attempts);
                        row.next_attempt = now + wait.as_secs().max(1) as i64;
                    }
                    self.store
                        .put_handled(&wf.name, account, row)
                        .map_err(store_failure)?;
                }
                let attempts = rows.iter().map(|r| r.attempts).max().unwrap_or_default();
                let line = if dead.is_empty() {
                    format!(
                        "run for message(s) {uids:?} of `{account}` failed (attempt {attempts} of {}): {e}; it will be retried",
                        trigger.retry.attempts
                    )
                } else {
                    format!(
                        "run for message(s) {uids:?} of `{account}` failed its last attempt ({attempts} of {}): {e}; the message(s) go to the dead letters",
                        trigger.retry.attempts
                    )
                };
                tracing::error!("workflow `{}`: {line}", wf.name);
                report.lines.push(line);
                if !dead.is_empty() {
                    report.dead += dead.len();
                    self.dead_letter(trigger, &dead, report).await;
                }
                report.failed.push(e);
            }
        }
        Ok(())
    }

    /// The trigger's post-action after a successful run. A failure here is logged and
    /// reported; the run stays done.
    async fn post_action(&self, trigger: &MailboxTrigger, uids: &[u32], report: &mut RunReport) {
        let Some(mailbox) = self.runtime.mailbox(&trigger.account) else {
            return;
        };
        let (what, result) = match &trigger.on_success {
            PostAction::Nothing => return,
            PostAction::MarkSeen => (
                "marking seen".to_owned(),
                mailbox
                    .set_flags(uids.to_vec(), vec![Flag::Seen], Vec::new())
                    .await,
            ),
            PostAction::Delete => ("deleting".to_owned(), mailbox.delete(uids.to_vec()).await),
            PostAction::MoveTo(folder) => (
                format!("moving to `{folder}`"),
                mailbox.move_to(uids.to_vec(), folder.clone()).await,
            ),
        };
        if let Err(e) = result {
            let line = format!(
                "the run for message(s) {uids:?} succeeded, but {what} failed: {}",
                crate::bindings::describe(&e)
            );
            tracing::error!("{line}");
            report.lines.push(line);
        }
    }

    /// Flags or moves messages that failed every attempt.
    async fn dead_letter(&self, trigger: &MailboxTrigger, uids: &[u32], report: &mut RunReport) {
        let Some(mailbox) = self.runtime.mailbox(&trigger.account) else {
            return;
        };
        let result = match (&trigger.dead_letter.folder, trigger.dead_letter.flag) {
            (Some(folder), _) => mailbox.move_to(uids.to_vec(), folder.clone()).await,
            (None, flag) => {
                mailbox
                    .set_flags(
                        uids.to_vec(),
                        vec![flag.unwrap_or(Flag::Flagged)],
                        Vec::new(),
                    )
                    .await
            }
        };
        if let Err(e) = result {
            let line = format!(
                "message(s) {uids:?} could not be put in the dead letters: {}",
                crate::bindings::describe(&e)
            );
            tracing::error!("{line}");
            report.lines.push(line);
        }
    }

    async fn steps(
        &self,
        wf: &Workflow,
        mut ctx: Map<String, Value>,
        report: &mut RunReport,
    ) -> Result<(), RunError> {
        ctx.insert("workflow".into(), json!({ "name": wf.name }));
        ctx.insert("steps".into(), Value::Object(Map::new()));
        for step in &wf.steps {
            let scope = minijinja::Value::from(minijinja::value::Serde(&ctx));
            if let Some(cond) = &step.condition {
                let v =
                    expr::eval(cond, &scope).map_err(|e| RunError::new(&step.id, Some("if"), e))?;
                if !v.is_true() {
                    report
                        .lines
                        .push(format!("step {}: skipped, its `if` is false", step.id));
                    continue;
                }
            }
            let output = match &step.for_each {
                None => self.step(wf, step, &ctx, report).await?,
                Some(list) => {
                    let items = expr::eval(list, &scope)
                        .map_err(|e| RunError::new(&step.id, Some("for_each"), e))?;
                    let items: Vec<Value> = serde_json::to_value(&items)
                        .ok()
                        .and_then(|v| v.as_array().cloned())
                        .ok_or_else(|| {
                            RunError::new(&step.id, Some("for_each"), "must be a list")
                        })?;
                    let mut outputs = Vec::with_capacity(items.len());
                    for item in items {
                        let mut item_ctx = ctx.clone();
                        item_ctx.insert("item".into(), item);
                        outputs.push(self.step(wf, step, &item_ctx, report).await?);
                    }
                    Value::Array(outputs)
                }
            };
            if let Some(Value::Object(steps)) = ctx.get_mut("steps") {
                steps.insert(step.id.clone(), output);
            }
        }
        Ok(())
    }

    async fn step(
        &self,
        wf: &Workflow,
        step: &Step,
        ctx: &Map<String, Value>,
        report: &mut RunReport,
    ) -> Result<Value, RunError> {
        let scope = minijinja::Value::from(minijinja::value::Serde(ctx));
        let fail =
            |(field, reason): (String, String)| RunError::new(&step.id, Some(&field), reason);
        let with = expr::render(&step.with, &scope, "with").map_err(fail)?;
        match step.action {
            Action::SendMail => {
                let input: SendMailInput = inputs::parse(&with, "with").map_err(fail)?;
                let message = inputs::message(&input.message, &wf.dir).map_err(fail)?;
                let receipt = self
                    .runtime
                    .send_mail(&step.id, &input.account, &message)
                    .await
                    .map_err(|e| RunError::from_step(&step.id, "with", e))?;
                let json = inputs::receipt_json(&receipt);
                report.lines.push(format!(
                    "step {}: sent <{}> to {} recipient(s) via {}{}",
                    step.id,
                    receipt.message_id,
                    receipt.accepted.len(),
                    receipt.transport,
                    receipt
                        .reference
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                ));
                report.sent.push(json.clone());
                Ok(json)
            }
            Action::ReadMailbox => {
                let input: ReadMailboxInput = inputs::parse(&with, "with").map_err(fail)?;
                let filter = inputs::filter(&input.filter).map_err(|(f, r)| {
                    RunError::new(&step.id, Some(&format!("with.filter.{f}")), r)
                })?;
                let page = self
                    .runtime
                    .read_mailbox(&step.id, &input.account, &filter, None, input.limit, None)
                    .await
                    .map_err(|e| RunError::from_step(&step.id, "with", e))?;
                report.lines.push(format!(
                    "step {}: read {} message(s), {} matched",
                    step.id,
                    page.scanned,
                    page.messages.len()
                ));
                Ok(inputs::page_json(&input.account, &page))
            }
        }
    }
}
