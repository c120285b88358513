//! The runner against fake actions: `for_each`, `if`, step outputs feeding later steps, a
//! `read-mailbox` step, unknown names, and failures that name the step and the field.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use super::*;
use crate::BoxFuture;
use crate::bindings::MailError;
use crate::bindings::actions::{Filter, MailboxPage, Receipt};
use crate::bindings::mailbox::{Cursor, SizeCap};
use crate::bindings::transport::DeliveryStatus;
use crate::bindings::types::{Address, FieldError, OutgoingMessage, ReceivedMessage};
use crate::caps::mailbox::Watch;
use crate::runtime::StepError;
use crate::store::Store;

/// Plays the plugin: records what each step asked for and answers as told.
#[derive(Default)]
struct FakeActions {
    sent: Mutex<Vec<(String, String, OutgoingMessage)>>,
    reads: Mutex<Vec<(String, String, u32)>>,
    inbox: Vec<ReceivedMessage>,
    fail_send: Option<MailError>,
    /// When set, sends fail with this until it is cleared (it wins over `fail_send`).
    failing: Mutex<Option<MailError>>,
    /// A read that would return this message runs past the step's time limit.
    breaks_on: Option<String>,
}

impl Actions for FakeActions {
    fn send_mail<'a>(
        &'a self,
        step: &'a str,
        account: &'a str,
        message: &'a OutgoingMessage,
    ) -> BoxFuture<'a, Result<Receipt, StepError>> {
        Box::pin(async move {
            if let Some(e) = self.failing.lock().unwrap().clone() {
                return Err(StepError::Mail(e));
            }
            if let Some(e) = &self.fail_send {
                return Err(StepError::Mail(e.clone()));
            }
            let mut sent = self.sent.lock().unwrap();
            sent.push((step.to_owned(), account.to_owned(), message.clone()));
            Ok(Receipt {
                message_id: format!("m{}@fake", sent.len()),
                accepted: message.to.iter().map(|a| a.email.clone()).collect(),
                transport: "fake".into(),
                status: DeliveryStatus::Queued,
                reference: None,
                size: 1,
            })
        })
    }

    fn read_mailbox<'a>(
        &'a self,
        step: &'a str,
        account: &'a str,
        _filter: &'a Filter,
        after: Option<Cursor>,
        limit: u32,
        _cap: Option<SizeCap>,
    ) -> BoxFuture<'a, Result<MailboxPage, StepError>> {
        Box::pin(async move {
            self.reads
                .lock()
                .unwrap()
                .push((step.to_owned(), account.to_owned(), limit));
            // This fake's ids and cursors are plain numbers.
            let from: u32 = after.map(|c| c.parse().unwrap()).unwrap_or(0);
            let after: Vec<&ReceivedMessage> = self
                .inbox
                .iter()
                .filter(|m| m.id.parse::<u32>().unwrap() > from)
                .collect();
            let more = after.len() > limit as usize;
            let messages: Vec<ReceivedMessage> =
                after.into_iter().take(limit as usize).cloned().collect();
            if let Some(id) = &self.breaks_on
                && messages.iter().any(|m| &m.id == id)
            {
                return Err(StepError::Timeout(std::time::Duration::from_secs(60)));
            }
            Ok(MailboxPage {
                next_cursor: messages
                    .last()
                    .map(|m| m.id.clone())
                    .unwrap_or(from.to_string()),
                restarted: false,
                scanned: messages.len() as u32,
                more,
                skipped: Vec::new(),
                messages,
            })
        })
    }
}

/// A mailbox whose ids and cursors are plain numbers; only the cursor arithmetic and the
/// post-actions' bookkeeping are real.
#[derive(Default)]
struct NumberedMailbox {
    /// The ids and sizes of the messages, for the host's own listing.
    listed: Vec<(String, u64)>,
    flagged: Mutex<Vec<String>>,
    /// While set, flag changes fail as a dropped connection would.
    flags_fail: Mutex<bool>,
}

impl crate::caps::mailbox::Backend for NumberedMailbox {
    fn fetch_after(
        &self,
        after: Option<String>,
        _: u32,
        _: crate::bindings::mailbox::Search,
        _: Option<SizeCap>,
    ) -> BoxFuture<'_, Result<crate::bindings::mailbox::Batch, MailError>> {
        // Lists the next message only, without its bytes.
        let from: u32 = after.map(|c| c.parse().unwrap()).unwrap_or(0);
        let next = self
            .listed
            .iter()
            .find(|(id, _)| id.parse::<u32>().unwrap() > from)
            .cloned();
        Box::pin(async move {
            Ok(crate::bindings::mailbox::Batch {
                next: next.as_ref().map_or(from.to_string(), |(id, _)| id.clone()),
                restarted: false,
                more: false,
                messages: next
                    .into_iter()
                    .map(|(id, size)| crate::bindings::mailbox::RawMessage {
                        id,
                        flags: Vec::new(),
                        size,
                        data: Vec::new(),
                        content: crate::bindings::mailbox::Content::Omitted,
                    })
                    .collect(),
            })
        })
    }
    fn fetch(
        &self,
        _: String,
    ) -> BoxFuture<'_, Result<crate::bindings::mailbox::RawMessage, MailError>> {
        Box::pin(async { Err(MailError::Permanent("not in this fake".into())) })
    }
    fn set_flags(
        &self,
        ids: Vec<String>,
        _: Vec<crate::bindings::mailbox::Flag>,
        _: Vec<crate::bindings::mailbox::Flag>,
    ) -> BoxFuture<'_, Result<(), MailError>> {
        Box::pin(async move {
            if *self.flags_fail.lock().unwrap() {
                return Err(MailError::Transient("the connection was lost".into()));
            }
            self.flagged.lock().unwrap().extend(ids);
            Ok(())
        })
    }
    fn move_to(&self, _: Vec<String>, _: String) -> BoxFuture<'_, Result<(), MailError>> {
        Box::pin(async { Ok(()) })
    }
}

impl Watch for NumberedMailbox {
    fn count_after(&self, _: Option<String>) -> BoxFuture<'_, Result<u64, MailError>> {
        Box::pin(async { Ok(0) })
    }
    fn delete(&self, _: Vec<String>) -> BoxFuture<'_, Result<(), MailError>> {
        Box::pin(async { Ok(()) })
    }
    fn wait_for_change(
        &self,
        _: crate::caps::mailbox::WaitPlan,
    ) -> BoxFuture<'_, Result<crate::caps::mailbox::Wake, MailError>> {
        Box::pin(std::future::pending())
    }
    fn cursor_after(&self, id: &str) -> Option<String> {
        Some(id.to_owned())
    }
    fn cursor_before(&self, id: &str) -> Option<String> {
        Some((id.parse::<u32>().ok()? - 1).to_string())
    }
}

struct OneMailbox(Arc<NumberedMailbox>);

impl Mailboxes for OneMailbox {
    fn mailbox(&self, _account: &str) -> Option<Arc<dyn Watch>> {
        Some(self.0.clone())
    }
}

struct NoMailboxes;

impl Mailboxes for NoMailboxes {
    fn mailbox(&self, _account: &str) -> Option<Arc<dyn Watch>> {
        None
    }
}

fn received(uid: u32, subject: &str, from: &str) -> ReceivedMessage {
    ReceivedMessage {
        id: uid.to_string(),
        message_id: Some(format!("{uid}@test")),
        sender: Some(Address {
            name: None,
            email: from.into(),
        }),
        to: Vec::new(),
        cc: Vec::new(),
        date: None,
        subject: subject.into(),
        text: Some(format!("body of {subject}")),
        html: None,
        attachments: Vec::new(),
        flags: Vec::new(),
        size: 100,
        attachments_omitted: false,
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    path: std::path::PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("flowmail.db")).unwrap();
    let path = dir.path().join("wf.yaml");
    Fixture {
        _dir: dir,
        store,
        path,
    }
}

async fn run_yaml(f: &Fixture, actions: &FakeActions, yaml: &str) -> RunReport {
    std::fs::write(&f.path, yaml).unwrap();
    let wf = Workflow::load(&f.path).unwrap();
    let runner = Runner {
        actions,
        store: &f.store,
        mailboxes: &NoMailboxes,
        events: &Silent,
    };
    run_with(&runner, &wf, RunOptions::default()).await.unwrap()
}

const READ_THEN_REPLY: &str = r#"
name: replies
steps:
  - id: read
    action: read-mailbox
    with: { account: inbox, limit: 10 }
  - id: reply
    action: send-mail
    if: "${{ steps.read.count > 0 }}"
    for_each: "${{ steps.read.messages }}"
    with:
      account: out
      message:
        to: "${{ item.from.email }}"
        subject: "Re: ${{ item.subject }}"
        text: "read {{ steps.read.count }}"
  - id: summary
    action: send-mail
    with:
      account: out
      message:
        to: ops@example.com
        subject: "read ${{ steps.read.count }}, first reply ${{ steps.reply[0].message_id if steps.reply is defined else 'none' }}"
"#;

#[tokio::test]
async fn for_each_over_a_read_step_feeds_later_steps() {
    let f = fixture();
    let actions = FakeActions {
        inbox: vec![
            received(1, "one", "a@example.com"),
            received(2, "two", "b@example.com"),
        ],
        ..FakeActions::default()
    };
    let report = run_yaml(&f, &actions, READ_THEN_REPLY).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.runs, 1);
    assert_eq!(
        *actions.reads.lock().unwrap(),
        [("read".to_owned(), "inbox".to_owned(), 10)]
    );
    let sent = actions.sent.lock().unwrap();
    let summary: Vec<(String, String, String)> = sent
        .iter()
        .map(|(step, account, m)| {
            (
                step.clone(),
                m.to.iter().map(|a| a.email.clone()).collect::<String>(),
                format!("{account}: {}", m.subject),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "reply".into(),
                "a@example.com".into(),
                "out: Re: one".into()
            ),
            (
                "reply".into(),
                "b@example.com".into(),
                "out: Re: two".into()
            ),
            (
                "summary".into(),
                "ops@example.com".into(),
                "out: read 2, first reply m1@fake".into()
            ),
        ]
    );
    assert_eq!(report.sent.len(), 3);
    assert!(
        report.lines.iter().any(|l| l.contains("read 2 message(s)")),
        "{:?}",
        report.lines
    );
}

#[tokio::test]
async fn a_false_if_skips_the_step() {
    let f = fixture();
    let actions = FakeActions::default();
    let report = run_yaml(&f, &actions, READ_THEN_REPLY).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let sent = actions.sent.lock().unwrap();
    assert_eq!(sent.len(), 1, "only the summary");
    assert_eq!(sent[0].2.subject, "read 0, first reply none");
    assert!(
        report
            .lines
            .iter()
            .any(|l| l == "step reply: skipped, its `if` is false"),
        "{:?}",
        report.lines
    );
}

#[tokio::test]
async fn an_unknown_name_fails_naming_the_step_and_field() {
    let f = fixture();
    let actions = FakeActions::default();
    let report = run_yaml(
        &f,
        &actions,
        "name: w\nsteps:\n  - id: s\n    action: send-mail\n    with:\n      account: out\n      message: { to: a@example.com, subject: \"${{ steps.nope.subject }}\" }\n",
    )
    .await;
    let e = &report.failed[0];
    assert_eq!(e.step, "s");
    assert_eq!(e.field.as_deref(), Some("with.message.subject"), "{e}");
    assert!(!e.retryable());
    assert!(actions.sent.lock().unwrap().is_empty());
}

#[tokio::test]
async fn for_each_must_be_a_list() {
    let f = fixture();
    let actions = FakeActions::default();
    let report = run_yaml(
        &f,
        &actions,
        "name: w\nsteps:\n  - id: s\n    action: send-mail\n    for_each: \"${{ 3 }}\"\n    with: { account: out, message: { to: a@example.com } }\n",
    )
    .await;
    let e = &report.failed[0];
    assert_eq!(
        (e.step.as_str(), e.field.as_deref()),
        ("s", Some("for_each"))
    );
    assert!(e.reason.contains("must be a list"), "{e}");
}

#[tokio::test]
async fn the_plugins_invalid_input_names_the_workflow_field() {
    let f = fixture();
    let actions = FakeActions {
        fail_send: Some(MailError::InvalidInput(FieldError {
            field: "message.to[0].email".into(),
            reason: "`x` has no @".into(),
        })),
        ..FakeActions::default()
    };
    let report = run_yaml(
        &f,
        &actions,
        "name: w\nsteps:\n  - id: s\n    action: send-mail\n    with: { account: out, message: { to: x } }\n",
    )
    .await;
    let e = &report.failed[0];
    assert_eq!(e.field.as_deref(), Some("with.message.to[0].email"), "{e}");
    assert!(!e.retryable());
    assert_eq!(
        e.to_string(),
        "step `s` failed at `with.message.to[0].email`: `x` has no @"
    );
}

#[tokio::test]
async fn only_transient_failures_are_retryable() {
    for (error, retryable) in [
        (MailError::Transient("421 busy".into()), true),
        (MailError::Permanent("550 no such user".into()), false),
        (MailError::AuthFailed("535 refused".into()), false),
        (MailError::NotFound("no account `out`".into()), false),
    ] {
        assert_eq!(
            error.recovery(),
            match &error {
                MailError::Transient(_) => crate::bindings::Recovery::Retry,
                MailError::AuthFailed(_) => crate::bindings::Recovery::Pause,
                _ => crate::bindings::Recovery::DeadLetter,
            }
        );
        let f = fixture();
        let actions = FakeActions {
            fail_send: Some(error.clone()),
            ..FakeActions::default()
        };
        let report = run_yaml(
            &f,
            &actions,
            "name: w\nsteps:\n  - id: s\n    action: send-mail\n    with: { account: out, message: { to: a@example.com } }\n",
        )
        .await;
        let e = &report.failed[0];
        assert_eq!(e.retryable(), retryable, "{error:?}: {e}");
        assert_eq!(error.is_retryable(), retryable);
        assert!(
            e.reason.contains(error.message()),
            "{e} should carry {error:?}"
        );
    }
}

#[tokio::test]
async fn a_bad_read_filter_is_refused_before_the_plugin_is_called() {
    let f = fixture();
    let actions = FakeActions::default();
    let report = run_yaml(
        &f,
        &actions,
        "name: w\nsteps:\n  - id: r\n    action: read-mailbox\n    with: { account: inbox, filter: { since: \"\" } }\n",
    )
    .await;
    let e = &report.failed[0];
    assert_eq!(e.step, "r");
    assert_eq!(e.field.as_deref(), Some("with.filter.since"), "{e}");
    assert!(actions.reads.lock().unwrap().is_empty());
}

#[test]
fn mail_errors_name_their_kind_and_describe_themselves() {
    let e = MailError::Transient("451 try later".into());
    assert_eq!(e.kind_name(), "transient");
    assert_eq!(
        e.describe().to_string(),
        "temporary failure, retrying later can help: 451 try later"
    );
    let e = MailError::InvalidInput(FieldError {
        field: "message.subject".into(),
        reason: "contains a line break".into(),
    });
    assert_eq!(e.kind_name(), "invalid-input");
    assert_eq!(e.field(), Some("message.subject"));
    assert_eq!(
        e.describe().to_string(),
        "field `message.subject`: contains a line break"
    );
}

const TRIGGERED: &str = r#"
name: triggered
trigger:
  mailbox:
    account: inbox
    retry: { attempts: 5, backoff: 1s }
steps:
  - id: send
    action: send-mail
    with:
      account: out
      message: { to: ops@example.com, subject: "${{ trigger.message.subject }}" }
"#;

async fn run_triggered(
    f: &Fixture,
    actions: &FakeActions,
    mailbox: &Arc<NumberedMailbox>,
) -> RunReport {
    run_yaml_with(f, actions, mailbox, TRIGGERED).await
}

async fn run_yaml_with(
    f: &Fixture,
    actions: &FakeActions,
    mailbox: &Arc<NumberedMailbox>,
    yaml: &str,
) -> RunReport {
    std::fs::write(&f.path, yaml).unwrap();
    let wf = Workflow::load(&f.path).unwrap();
    let mailboxes = OneMailbox(mailbox.clone());
    let runner = Runner {
        actions,
        store: &f.store,
        mailboxes: &mailboxes,
        events: &Silent,
    };
    run_with(&runner, &wf, RunOptions::default()).await.unwrap()
}

fn three() -> Vec<ReceivedMessage> {
    ["one", "two", "three"]
        .iter()
        .enumerate()
        .map(|(i, s)| received(i as u32 + 1, s, "a@example.com"))
        .collect()
}

#[tokio::test]
async fn an_input_failure_dead_letters_each_message_after_one_attempt() {
    let f = fixture();
    let mailbox = Arc::new(NumberedMailbox::default());
    let actions = FakeActions {
        inbox: three(),
        fail_send: Some(MailError::InvalidInput(FieldError {
            field: "message.to[0].email".into(),
            reason: "no such address".into(),
        })),
        ..FakeActions::default()
    };
    let report = run_triggered(&f, &actions, &mailbox).await;
    assert_eq!((report.runs, report.dead), (0, 3), "{:?}", report.lines);
    let dead = f
        .store
        .handled_in("triggered", "inbox", crate::store::Handling::Dead, None)
        .unwrap();
    assert_eq!(dead.len(), 3);
    for row in dead {
        assert_eq!(row.attempts, 1, "{row:?}");
        assert!(
            row.last_error
                .as_deref()
                .unwrap()
                .contains("with.message.to[0].email"),
            "{row:?}"
        );
    }
    assert_eq!(*mailbox.flagged.lock().unwrap(), ["1", "2", "3"]);
    assert!(report.paused.is_none());
}

#[tokio::test]
async fn a_credentials_failure_pauses_keeps_attempts_and_resumes_once_they_work() {
    let f = fixture();
    let mailbox = Arc::new(NumberedMailbox::default());
    let actions = FakeActions {
        inbox: three(),
        failing: Mutex::new(Some(MailError::AuthFailed(
            "account `out` needs authorization: run `flowmail authorize --account out`".into(),
        ))),
        ..FakeActions::default()
    };
    let report = run_triggered(&f, &actions, &mailbox).await;
    let paused = report.paused.as_deref().unwrap();
    assert!(paused.contains("flowmail authorize"), "{paused}");
    assert_eq!((report.runs, report.dead), (0, 0));
    let waiting = f
        .store
        .handled_in("triggered", "inbox", crate::store::Handling::Pending, None)
        .unwrap();
    assert_eq!(waiting.len(), 1, "the trigger stopped at the first failure");
    assert_eq!(waiting[0].attempts, 0, "a pause costs no attempt");
    assert_eq!(
        f.store.cursor("triggered", "inbox").unwrap().as_deref(),
        Some("1")
    );

    // Paused again while the account is still refused: still no attempt is used.
    let again = run_triggered(&f, &actions, &mailbox).await;
    assert!(again.paused.is_some());
    let row = f
        .store
        .handled("triggered", "inbox", "id:1@test")
        .unwrap()
        .unwrap();
    assert_eq!(
        (row.status, row.attempts),
        (crate::store::Handling::Pending, 0)
    );

    // The credentials work again: every message runs, once.
    *actions.failing.lock().unwrap() = None;
    let report = run_triggered(&f, &actions, &mailbox).await;
    assert!(
        report.paused.is_none() && report.failed.is_empty(),
        "{:?}",
        report.lines
    );
    let mut subjects: Vec<String> = actions
        .sent
        .lock()
        .unwrap()
        .iter()
        .map(|(_, _, m)| m.subject.clone())
        .collect();
    subjects.sort();
    assert_eq!(subjects, ["one", "three", "two"]);
    let done = f
        .store
        .handled_in("triggered", "inbox", crate::store::Handling::Done, None)
        .unwrap();
    assert_eq!(done.len(), 3);
    assert!(done.iter().all(|r| r.attempts == 1), "{done:?}");
    let nothing = run_triggered(&f, &actions, &mailbox).await;
    assert_eq!(nothing.runs, 0);
}

#[tokio::test]
async fn a_post_action_that_failed_is_recorded_and_done_at_the_next_catch_up() {
    let f = fixture();
    let mailbox = Arc::new(NumberedMailbox::default());
    *mailbox.flags_fail.lock().unwrap() = true;
    let actions = FakeActions {
        inbox: three(),
        ..FakeActions::default()
    };
    let seen = TRIGGERED.replace("    retry:", "    on_success: seen\n    retry:");
    let report = run_yaml_with(&f, &actions, &mailbox, &seen).await;
    assert_eq!(report.runs, 3);
    assert!(
        report
            .lines
            .iter()
            .any(|l| l.contains("tried again at the next catch-up")),
        "{:?}",
        report.lines
    );
    let pending = f.store.post_actions_pending("triggered", "inbox").unwrap();
    assert_eq!(pending.len(), 3, "done, with the post-action still owed");
    assert!(mailbox.flagged.lock().unwrap().is_empty());

    // The mailbox works again: the next catch-up marks them seen, and runs nothing again.
    *mailbox.flags_fail.lock().unwrap() = false;
    let report = run_yaml_with(&f, &actions, &mailbox, &seen).await;
    assert_eq!(report.runs, 0);
    assert_eq!(*mailbox.flagged.lock().unwrap(), ["1", "2", "3"]);
    assert!(
        f.store
            .post_actions_pending("triggered", "inbox")
            .unwrap()
            .is_empty()
    );
    assert_eq!(actions.sent.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn a_read_that_breaks_a_limit_is_split_and_the_one_message_passed_over() {
    let f = fixture();
    let mailbox = Arc::new(NumberedMailbox {
        listed: vec![
            ("1".into(), 100),
            ("2".into(), 31_000_000),
            ("3".into(), 100),
        ],
        ..NumberedMailbox::default()
    });
    let actions = FakeActions {
        inbox: three(),
        breaks_on: Some("2".into()),
        ..FakeActions::default()
    };
    let report = run_triggered(&f, &actions, &mailbox).await;
    let mut subjects: Vec<String> = actions
        .sent
        .lock()
        .unwrap()
        .iter()
        .map(|(_, _, m)| m.subject.clone())
        .collect();
    subjects.sort();
    assert_eq!(subjects, ["one", "three"], "{:?}", report.lines);
    assert!(
        report
            .lines
            .iter()
            .any(|l| l.contains("reading 100 message(s)") && l.contains("reading 50 at a time")),
        "{:?}",
        report.lines
    );
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0]["id"], "2");
    let dead = f
        .store
        .handled("triggered", "inbox", "ref:2")
        .unwrap()
        .unwrap();
    assert_eq!(dead.status, crate::store::Handling::Dead);
    let reason = dead.last_error.unwrap();
    assert!(
        reason.contains("time limit") && reason.contains("31000000 bytes"),
        "{reason}"
    );
    assert_eq!(
        f.store.cursor("triggered", "inbox").unwrap().as_deref(),
        Some("3")
    );
    // Nothing is read or passed over twice.
    let again = run_triggered(&f, &actions, &mailbox).await;
    assert_eq!((again.runs, again.skipped.len()), (0, 0));
}
