//! The runner and the catch-up against fakes: the plugin's actions played by
//! [`FakeActions`], a mailbox whose ids are plain numbers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod properties;
mod steps;
mod triggered;

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
