//! Long-running mailbox triggers against real dovecot on 127.0.0.1: IDLE, exactly one run
//! per message through dovecot restarts, retries and dead letters, post-actions, and a
//! forced UIDVALIDITY change.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod alerts;
mod exactly_once;
mod reading;
mod saved_search;
mod waiting;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowmail::app::App;
use flowmail::caps::Audit;
use flowmail::store::{Handling, Store};
use flowmail::workflow::serve::{Serving, serve};
use flowmail::workflow::{RunOptions, Runner, Workflow};
use flowmail_tests::Workspace;
use flowmail_tests::stack::MailStack;
use tokio::sync::watch;

const USER: &str = "inbox@demo.example";

fn mail(subject: &str) -> Vec<u8> {
    format!(
        "From: Grafana <alerts@grafana.demo.example>\r\nTo: {USER}\r\nSubject: {subject}\r\n\
         Date: Mon, 23 Nov 2026 08:00:00 +0000\r\nMessage-ID: <{}@demo.example>\r\n\r\nbody of {subject}\r\n",
        subject.replace(' ', "-")
    )
    .into_bytes()
}

/// A per-message workflow that sends one mail to the outbox per run, gated on a file
/// named after the message's subject when `gated`.
fn workflow(ws: &Workspace, trigger_extra: &str, gated: bool) -> Workflow {
    let gate = if gated {
        "        attachments:\n          - name: gate.txt\n            path: \"gates/${{ trigger.message.subject }}\"\n"
    } else {
        ""
    };
    let text = format!(
        "name: per-message\ntrigger:\n  mailbox:\n    account: box\n{trigger_extra}\
         steps:\n  - id: forward\n    action: send-mail\n    with:\n      account: box\n      message:\n\
         \x20       to: ops@demo.example\n        subject: \"handled: ${{{{ trigger.message.subject }}}}\"\n\
         \x20       text: \"${{{{ trigger.message.message_id }}}} omitted=${{{{ trigger.message.attachments_omitted }}}} ${{{{ trigger.message.text }}}}\"\n{gate}"
    );
    let path = ws.path().join("workflows/per-message.yaml");
    std::fs::create_dir_all(ws.path().join("workflows/gates")).unwrap();
    std::fs::write(&path, text).unwrap();
    let wf = Workflow::load(&path).unwrap();
    wf.check(&ws.config().unwrap()).unwrap();
    wf
}

fn workspace(stack: &MailStack, folder: &str) -> Workspace {
    stack.imap_workspace(USER, folder).unwrap()
}

/// The subjects of the mails in the outbox, one per run.
fn handled(ws: &Workspace) -> Vec<String> {
    ws.outbox()
        .iter()
        .map(|p| {
            let eml = std::fs::read(p).unwrap();
            mail_parser::MessageParser::default()
                .parse(&eml)
                .and_then(|m| m.subject().map(str::to_owned))
                .unwrap_or_default()
        })
        .collect()
}

/// `flowmail serve` for `wf`, in the background until the returned sender says stop.
fn start_serving(
    app: Arc<App>,
    _store: Arc<Store>,
    wf: Workflow,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let handle = tokio::spawn(async move {
        serve(serving(app), vec![wf], rx).await.unwrap();
    });
    (tx, handle)
}

/// What `serve` runs `app`'s triggers with, telling nothing as it goes.
fn serving(app: Arc<App>) -> Serving {
    Serving {
        app,
        events: Arc::new(flowmail::workflow::Silent),
    }
}

/// Tells `flowmail serve` to stop and waits until it has.
async fn stop_serving(stop: watch::Sender<bool>, handle: tokio::task::JoinHandle<()>) {
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(15), handle)
        .await
        .unwrap()
        .unwrap();
}

async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The files of a Maildir folder, with their flags.
fn files(dir: &Path) -> Vec<PathBuf> {
    ["new", "cur"]
        .iter()
        .filter_map(|d| std::fs::read_dir(dir.join(d)).ok())
        .flat_map(|rd| rd.flatten().map(|e| e.path()))
        .collect()
}

fn seen(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.split_once(":2,"))
        .is_some_and(|(_, flags)| flags.contains('S'))
}
