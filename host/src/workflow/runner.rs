//! Runs a workflow's steps in order. A failing step stops the run and names the step, the
//! field and the reason. The runner knows the plugin only as [`Actions`] and the mailboxes
//! only as [`Mailboxes`], so it runs as well against fakes as against the sandbox.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::events::{Events, SILENT};
use super::inputs::{self, ReadMailboxInput, SendMailInput};
use super::{Action, Step, Workflow, expr};
use crate::BoxFuture;
use crate::app::App;
use crate::bindings::actions::{Filter, MailboxPage, Receipt};
use crate::bindings::mailbox::{Cursor, SizeCap};
use crate::bindings::types::OutgoingMessage;
use crate::bindings::{MailError, Recovery};
use crate::caps::mailbox::Watch;
use crate::runtime::{Runtime, StepError};
use crate::store::{RunRecord, Store};

/// The plugin's actions, as the runner calls them: the sandbox, or a fake in tests.
pub trait Actions: Send + Sync {
    /// `send-mail` as step `step`.
    fn send_mail<'a>(
        &'a self,
        step: &'a str,
        account: &'a str,
        message: &'a OutgoingMessage,
    ) -> BoxFuture<'a, Result<Receipt, StepError>>;
    /// `read-mailbox` as step `step`.
    fn read_mailbox<'a>(
        &'a self,
        step: &'a str,
        account: &'a str,
        filter: &'a Filter,
        after: Option<Cursor>,
        limit: u32,
        cap: Option<SizeCap>,
    ) -> BoxFuture<'a, Result<MailboxPage, StepError>>;
}

impl Actions for Runtime {
    fn send_mail<'a>(
        &'a self,
        step: &'a str,
        account: &'a str,
        message: &'a OutgoingMessage,
    ) -> BoxFuture<'a, Result<Receipt, StepError>> {
        Box::pin(Runtime::send_mail(self, step, account, message))
    }

    fn read_mailbox<'a>(
        &'a self,
        step: &'a str,
        account: &'a str,
        filter: &'a Filter,
        after: Option<Cursor>,
        limit: u32,
        cap: Option<SizeCap>,
    ) -> BoxFuture<'a, Result<MailboxPage, StepError>> {
        Box::pin(Runtime::read_mailbox(
            self, step, account, filter, after, limit, cap,
        ))
    }
}

/// The mailboxes a trigger waits on and acts on after a run (host-only operations).
pub trait Mailboxes: Send + Sync {
    fn mailbox(&self, account: &str) -> Option<Arc<dyn Watch>>;
}

impl Mailboxes for App {
    fn mailbox(&self, account: &str) -> Option<Arc<dyn Watch>> {
        App::mailbox(self, account)
    }
}

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
#[error("step `{step}` failed{}: {reason}", field.as_deref().map(|f| format!(" at `{f}`")).unwrap_or_default())]
pub struct RunError {
    pub step: String,
    pub field: Option<String>,
    pub reason: String,
    /// What to do with the message(s) the run was for.
    pub recovery: Recovery,
}

impl RunError {
    pub fn new(step: &str, field: Option<&str>, reason: impl Into<String>) -> Self {
        Self {
            step: step.to_owned(),
            field: field.map(str::to_owned),
            reason: reason.into(),
            recovery: Recovery::DeadLetter,
        }
    }

    /// Whether retrying the run later, unchanged, can succeed.
    pub fn retryable(&self) -> bool {
        self.recovery == Recovery::Retry
    }

    pub(super) fn from_step(step: &str, field_prefix: &str, e: StepError) -> Self {
        match e {
            StepError::Mail(MailError::InvalidInput(f)) => {
                let field = if f.field.starts_with("message") || f.field.starts_with("filter") {
                    format!("{field_prefix}.{}", f.field)
                } else {
                    f.field
                };
                Self::new(step, Some(&field), f.reason)
            }
            StepError::Mail(e) if e.is_retryable() => Self {
                recovery: Recovery::Retry,
                ..Self::new(
                    step,
                    None,
                    format!("temporary failure, retry later: {}", e.message()),
                )
            },
            StepError::Mail(e) => Self {
                recovery: e.recovery(),
                ..Self::new(step, None, e.describe().to_string())
            },
            // The same input overflows the same way: no retry will help.
            e @ (StepError::StackOverflow | StepError::Oversized(_)) => Self {
                recovery: Recovery::DeadLetter,
                ..Self::new(step, None, e.to_string())
            },
            // The sandbox's limits and traps: retried with backoff, as host I/O is.
            other => Self {
                recovery: Recovery::Retry,
                ..Self::new(step, None, other.to_string())
            },
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
    /// Set when a run failed on the account's credentials: the trigger pauses, and this
    /// says why and how to fix it.
    pub paused: Option<String>,
    /// Messages that went to the dead letters in this catch-up.
    pub dead: usize,
    /// Messages seen again (after a UIDVALIDITY change) that were already handled.
    pub deduplicated: usize,
    /// Messages looked at.
    pub scanned: u64,
    /// The keys of the messages run in this catch-up, so that none runs twice in it.
    pub(crate) attempted: std::collections::HashSet<String>,
    /// How many of `lines` a catch-up already told its `Events` as they happened.
    pub shown: usize,
    /// The stored credentials' fingerprint as a catch-up read it before its runs, so
    /// that a trigger that pauses notices a change made during them.
    pub credentials: Option<String>,
    /// What waits for a run once a catch-up ended, when its last read of the store
    /// could tell (nothing ran after it).
    pub waiting: Option<crate::store::Waiting>,
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

/// Runs a workflow's steps, with what they need.
#[derive(Clone, Copy)]
pub struct Runner<'a> {
    pub actions: &'a dyn Actions,
    pub store: &'a Store,
    pub mailboxes: &'a dyn Mailboxes,
    pub events: &'a dyn Events,
}

impl<'a> Runner<'a> {
    /// A runner over `app`'s plugin runtime, store and mailboxes, reporting nothing as it
    /// goes.
    pub fn new(app: &'a App) -> anyhow::Result<Self> {
        Ok(Self {
            actions: app.runtime()?,
            store: app.store(),
            mailboxes: app,
            events: &SILENT,
        })
    }

    /// The same runner, telling `events` what happens as it goes.
    pub fn with_events(self, events: &'a dyn Events) -> Self {
        Self { events, ..self }
    }

    /// Runs a workflow without a trigger once.
    pub async fn run_steps(&self, wf: &Workflow) -> RunReport {
        let mut report = RunReport::default();
        let started = crate::unix_now();
        let result = self.steps(wf, Map::new(), &mut report).await;
        self.record(wf, started, &result, &report);
        match result {
            Ok(()) => report.runs += 1,
            Err(e) => report.failed.push(e),
        }
        report
    }

    pub(super) fn record(
        &self,
        wf: &Workflow,
        started: i64,
        result: &Result<(), RunError>,
        report: &RunReport,
    ) {
        let run = Self::run_record(started, result, report);
        if let Err(e) = self
            .store
            .record_run(&wf.name, started, &run.outcome, &run.detail)
        {
            tracing::warn!("could not record the run: {e}");
        }
    }

    /// How a run that started at `started` ended, as the store keeps it.
    pub(super) fn run_record(
        started: i64,
        result: &Result<(), RunError>,
        report: &RunReport,
    ) -> RunRecord {
        let (outcome, detail) = match result {
            Ok(()) => ("ok", report.lines.join("\n")),
            Err(e) => ("failed", e.to_string()),
        };
        RunRecord {
            started_at: started,
            outcome: outcome.to_owned(),
            detail,
        }
    }

    pub(super) async fn steps(
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
                let message = inputs::message(&input.message, &wf.dir).map_err(|e| RunError {
                    // A file that cannot be read now may be there later: host I/O backs off.
                    recovery: if e.io {
                        Recovery::Retry
                    } else {
                        Recovery::DeadLetter
                    },
                    ..RunError::new(&step.id, Some(&e.field), e.reason)
                })?;
                let mut receipt = self
                    .actions
                    .send_mail(&step.id, &input.account, &message)
                    .await
                    .map_err(|e| RunError::from_step(&step.id, "with", e))?;
                let wait = step
                    .wait_for()
                    .map_err(|r| RunError::new(&step.id, Some("wait"), r))?;
                if let Some(wait) = wait {
                    self.await_delivery(step, &mut receipt, wait).await?;
                }
                let mut json = inputs::receipt_json(&receipt);
                if let Some(why) = self.waits_for_a_node(&receipt) {
                    tracing::warn!("step {}: {why}", step.id);
                    report.lines.push(format!("step {}: {why}", step.id));
                    json["waiting"] = Value::String(why);
                }
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
                    .actions
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

impl Runner<'_> {
    /// For a message still waiting in the outbox: why it waits, when no node of its data
    /// center is alive to send it.
    fn waits_for_a_node(&self, receipt: &crate::bindings::actions::Receipt) -> Option<String> {
        let id = crate::caps::transport::queued::outbox_id(receipt.reference.as_deref())?;
        let state = self.store.outbox_state(id).ok()??;
        if state.status != "queued" {
            return None;
        }
        let why = crate::cluster::probes::unserved(self.store, &state.data_center).ok()??;
        Some(format!(
            "{why}; message outbox:{id} waits in the outbox until one is"
        ))
    }

    /// Waits up to `wait` for the outbox to settle a queued send: a message that failed
    /// for good fails the step with its final error; one that was sent gets the server's
    /// answer in the receipt. Past the wait, the receipt stays `queued`.
    async fn await_delivery(
        &self,
        step: &super::Step,
        receipt: &mut crate::bindings::actions::Receipt,
        wait: std::time::Duration,
    ) -> Result<(), RunError> {
        let Some(id) = crate::caps::transport::queued::outbox_id(receipt.reference.as_deref())
        else {
            // Sent directly: the server has answered already.
            return Ok(());
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let state = self
                .store
                .outbox_state(id)
                .map_err(super::catchup::store_failure)?;
            match state {
                Some(s) if s.status == "sent" => {
                    receipt.status = match s.server_status.as_deref() {
                        Some("delivered") => crate::bindings::transport::DeliveryStatus::Delivered,
                        _ => crate::bindings::transport::DeliveryStatus::Queued,
                    };
                    receipt.reference = s.detail;
                    return Ok(());
                }
                Some(s) if s.status == "failed" => {
                    let text = s.detail.unwrap_or_default();
                    let error = match s.error_kind.as_deref() {
                        Some("auth-failed") => MailError::AuthFailed(text),
                        Some("access-denied") => MailError::AccessDenied(text),
                        Some("not-found") => MailError::NotFound(text),
                        Some("transient") => MailError::Transient(text),
                        Some("invalid-input") => {
                            MailError::InvalidInput(crate::bindings::types::FieldError {
                                field: "message".into(),
                                reason: text,
                            })
                        }
                        _ => MailError::Permanent(text),
                    };
                    return Err(RunError::from_step(
                        &step.id,
                        "with",
                        crate::runtime::StepError::Mail(error),
                    ));
                }
                _ => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
}
