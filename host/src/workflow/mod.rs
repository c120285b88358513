//! Workflows: YAML files with a trigger and steps that call the plugin's actions. Step
//! outputs feed later inputs through `${{ ... }}` expressions.

pub mod alert_mail;
mod catchup;
pub mod events;
mod expr;
mod inputs;
mod runner;
pub mod serve;
pub mod trigger;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Deserialize;

pub use self::catchup::CatchUp;
pub use self::events::{Alert, AlertKind, Events, Silent};
pub use self::runner::{Actions, Mailboxes, RunError, RunOptions, RunReport, Runner};
pub(crate) use self::trigger::jitter;
pub use self::trigger::{MailboxTrigger, Per, PostAction};
use crate::config::Config;

/// Runs `wf` once, as `flowmail run` does, with every failed message retried now. With a
/// mailbox trigger this is a catch-up of everything new since the cursor. The first
/// failed run, if any, is the error, after every message was tried.
pub async fn run(runner: &Runner<'_>, wf: &Workflow) -> Result<RunReport, RunError> {
    let report = run_with(runner, wf, RunOptions::default()).await?;
    match report.failed.first() {
        Some(first) => Err(RunError {
            step: first.step.clone(),
            field: first.field.clone(),
            reason: first.reason.clone(),
            recovery: first.recovery,
        }),
        None => Ok(report),
    }
}

/// Runs `wf` once with `options`. Failed runs are in the report's `failed`; the error is
/// for a trigger that could not read its mailbox or the store.
pub async fn run_with(
    runner: &Runner<'_>,
    wf: &Workflow,
    options: RunOptions,
) -> Result<RunReport, RunError> {
    let Some(trigger) = &wf.trigger.mailbox else {
        return Ok(runner.run_steps(wf).await);
    };
    let _claim = runner
        .store
        .lock_workflow(&wf.name)
        .map_err(catchup::store_failure)?;
    let mut report = RunReport::default();
    CatchUp::new(*runner)
        .catch_up(wf, trigger, options, &mut report, None)
        .await?;
    Ok(report)
}

/// A workflow file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workflow {
    /// Names the workflow; mailbox cursors are kept per name.
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub trigger: Trigger,
    pub steps: Vec<Step>,
    /// The workflow file's folder, for relative attachment paths.
    #[serde(skip)]
    pub dir: PathBuf,
}

/// What starts a run. Without a trigger, a workflow is started by hand and runs once.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    /// New messages in an account's mailbox: one run per message, or per batch.
    #[serde(default)]
    pub mailbox: Option<MailboxTrigger>,
}

/// The actions a step can call.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    SendMail,
    ReadMailbox,
}

/// One step.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Later steps refer to this step's output as `steps.<id>`.
    pub id: String,
    pub action: Action,
    /// Runs the step only when this expression is true.
    #[serde(rename = "if", default)]
    pub condition: Option<String>,
    /// Runs the step once per item of this list, as `item`.
    #[serde(default)]
    pub for_each: Option<String>,
    /// The action's inputs.
    #[serde(default)]
    pub with: serde_json::Value,
    /// For `send-mail` through a queued account: wait up to this long (`30s`, at most
    /// `10m`) for the delivery's outcome; the step then fails with the final error, or
    /// returns what the server said.
    #[serde(default)]
    pub wait: Option<String>,
}

impl Step {
    /// How long the step waits for a queued delivery's outcome, if it does.
    pub fn wait_for(&self) -> Result<Option<std::time::Duration>, String> {
        let Some(text) = &self.wait else {
            return Ok(None);
        };
        let wait = trigger::parse_duration(text)?;
        if wait > std::time::Duration::from_secs(600) {
            return Err(format!(
                "`{text}` is longer than the 10m a step may wait; use 10m or less"
            ));
        }
        Ok(Some(wait))
    }
}

impl Workflow {
    /// Reads and parses a workflow file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the workflow {}", path.display()))?;
        let mut wf: Workflow = serde_norway::from_str(&text)
            .with_context(|| format!("in the workflow {}", path.display()))?;
        wf.dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(wf)
    }

    /// Checks the workflow against `config` without running it: step ids, the steps and
    /// accounts that expressions and inputs name, and the inputs' shapes.
    pub fn check(&self, config: &Config) -> Result<(), RunError> {
        self.check_with(config, false).map(drop)
    }

    /// Checks the workflow for `flowmail serve`, where accounts can still be made on the
    /// settings page while it runs: a step's account that does not exist yet is a
    /// warning (returned), not an error. The trigger's account must exist.
    pub fn check_served(&self, config: &Config) -> Result<Vec<String>, RunError> {
        self.check_with(config, true)
    }

    fn check_with(&self, config: &Config, later_accounts: bool) -> Result<Vec<String>, RunError> {
        let mut warnings = Vec::new();
        let fail =
            |step: &str, field: &str, reason: String| RunError::new(step, Some(field), reason);
        if self.name.trim().is_empty() {
            return Err(fail("workflow", "name", "is empty".into()));
        }
        if self.steps.is_empty() {
            return Err(fail("workflow", "steps", "there are no steps".into()));
        }
        let account_has =
            |step: &str, field: &str, name: &str, mailbox: bool| -> Result<(), RunError> {
                let a = config.accounts.get(name).ok_or_else(|| {
                    let known: Vec<&str> = config.accounts.keys().map(String::as_str).collect();
                    fail(
                        step,
                        field,
                        format!(
                            "unknown account `{name}`; the config has: {}",
                            known.join(", ")
                        ),
                    )
                })?;
                match (mailbox, a.mailbox.is_some(), a.transport.is_some()) {
                    (true, false, _) => Err(fail(
                        step,
                        field,
                        format!("account `{name}` has no mailbox configured"),
                    )),
                    (false, _, false) => Err(fail(
                        step,
                        field,
                        format!("account `{name}` has no transport configured"),
                    )),
                    _ => Ok(()),
                }
            };
        let has_trigger = match &self.trigger.mailbox {
            None => false,
            Some(t) => {
                account_has("trigger", "account", &t.account, true)?;
                inputs::filter(&t.filter)
                    .map_err(|(f, r)| fail("trigger", &format!("filter.{f}"), r))?;
                t.check().map_err(|(f, r)| fail("trigger", &f, r))?;
                true
            }
        };
        let mut seen: HashSet<&str> = HashSet::new();
        for step in &self.steps {
            let id = step.id.as_str();
            let id_ok = !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !id_ok {
                return Err(fail(id, "id", "use letters, digits and `_` only".into()));
            }
            if seen.contains(id) {
                return Err(fail(id, "id", "another step has the same id".into()));
            }
            let scope = expr::Scope {
                steps: &seen,
                trigger: has_trigger,
                item: step.for_each.is_some(),
            };
            for (field, text) in [("if", &step.condition), ("for_each", &step.for_each)] {
                if let Some(text) = text {
                    let outer = expr::Scope {
                        item: false,
                        ..scope
                    };
                    expr::check_expression(text, &outer).map_err(|r| fail(id, field, r))?;
                }
            }
            expr::check_value(&step.with, "with", &scope).map_err(|(f, r)| fail(id, &f, r))?;
            if step.wait.is_some() {
                if step.action != Action::SendMail {
                    return Err(fail(id, "wait", "only a send-mail step can wait".into()));
                }
                step.wait_for().map_err(|r| fail(id, "wait", r))?;
            }
            if let Some(account) = step.with.get("account").and_then(|a| a.as_str())
                && !expr::is_template(account)
            {
                if later_accounts && !config.accounts.contains_key(account) {
                    warnings.push(format!(
                        "step `{id}`: account `{account}` does not exist yet; its runs fail until it is saved on the settings page"
                    ));
                    inputs::check_shape(step.action, &step.with)
                        .map_err(|(f, r)| fail(id, &f, r))?;
                    seen.insert(id);
                    continue;
                }
                account_has(
                    id,
                    "with.account",
                    account,
                    step.action == Action::ReadMailbox,
                )?;
            }
            inputs::check_shape(step.action, &step.with).map_err(|(f, r)| fail(id, &f, r))?;
            seen.insert(id);
        }
        Ok(warnings)
    }
}

#[cfg(test)]
mod tests;
