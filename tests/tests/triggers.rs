//! Long-running mailbox triggers against real dovecot on 127.0.0.1: IDLE, exactly one run
//! per message through dovecot restarts, retries and dead letters, post-actions, and a
//! forced UIDVALIDITY change.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowmail::caps::Audit;
use flowmail::runtime::Runtime;
use flowmail::store::{Handling, Store};
use flowmail::workflow::serve::serve;
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
    runtime: Runtime,
    store: Arc<Store>,
    wf: Workflow,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let handle = tokio::spawn(async move {
        serve(&runtime, &store, std::slice::from_ref(&wf), rx)
            .await
            .unwrap();
    });
    (tx, handle)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_delivers_a_new_message_to_the_workflow_within_seconds() {
    let stack = MailStack::start(None).unwrap();
    let ws = workspace(&stack, "INBOX");
    // Polling every ten minutes could not explain a run within seconds: IDLE must.
    let wf = workflow(&ws, "    poll_interval: 10m\n    on_success: seen\n", false);
    let (rt, store) = ws.runtime(None, Audit::default()).unwrap();
    let (stop, handle) = start_serving(rt, store.clone(), wf);
    wait_until(
        "the trigger to wait in IDLE",
        Duration::from_secs(20),
        || {
            store
                .watches()
                .unwrap()
                .iter()
                .any(|w| w.mode == "idle" || w.last_ok.is_some())
        },
    )
    .await;
    // Let the first IDLE begin.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = Instant::now();
    stack.deliver(USER, &mail("pushed by idle")).unwrap();
    wait_until("the run", Duration::from_secs(10), || {
        ws.outbox().len() == 1
    })
    .await;
    let latency = sent.elapsed();
    assert!(latency < Duration::from_secs(5), "took {latency:?}");
    assert_eq!(handled(&ws), ["handled: pushed by idle"]);
    wait_until(
        "the message to be marked seen",
        Duration::from_secs(10),
        || files(&stack.maildir(USER, "")).iter().all(|f| seen(f)),
    )
    .await;
    let watch = store.watches().unwrap();
    assert_eq!(watch[0].mode, "idle", "{watch:?}");
    stop_serving(stop, handle).await;
    assert_eq!(store.watches().unwrap()[0].mode, "stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_messages_through_two_dovecot_restarts_run_exactly_once_each() {
    let stack = MailStack::start(None).unwrap();
    let ws = workspace(&stack, "INBOX");
    let wf = workflow(
        &ws,
        "    batch: 50\n    poll_interval: 10m\n    on_success: seen\n",
        false,
    );
    let (rt, store) = ws.runtime(None, Audit::default()).unwrap();
    let (stop, handle) = start_serving(rt, store.clone(), wf);
    let total = 1000;
    let mut subjects = Vec::new();
    for chunk in 0..20 {
        let batch: Vec<Vec<u8>> = (0..50)
            .map(|i| mail(&format!("msg {}", chunk * 50 + i)))
            .collect();
        let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
        stack.seed(USER, "", &refs).unwrap();
        subjects.extend((0..50).map(|i| format!("handled: msg {}", chunk * 50 + i)));
        if chunk == 6 || chunk == 13 {
            stack.restart_dovecot().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    wait_until("1000 runs", Duration::from_secs(240), || {
        ws.outbox().len() >= total
    })
    .await;
    // Anything run twice would show up now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = handled(&ws);
    assert_eq!(got.len(), total, "one run per message, no more");
    let distinct: HashSet<&String> = got.iter().collect();
    assert_eq!(distinct.len(), total, "no message ran twice");
    let expected: HashSet<&String> = subjects.iter().collect();
    assert_eq!(distinct, expected, "none was lost");
    assert_eq!(store.run_count("per-message", "ok").unwrap(), total as u64);
    let counts = store.handled_counts("per-message", "box").unwrap();
    assert_eq!(counts.done, total as u64);
    let watch = &store.watches().unwrap()[0];
    assert!(
        watch.last_error.is_some(),
        "the restarts were noticed and recorded: {watch:?}"
    );
    stop_serving(stop, handle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_step_leaves_the_message_unseen_and_unmoved_retries_it_and_dead_letters_the_hopeless()
 {
    let stack = MailStack::start(None).unwrap();
    stack.seed(USER, "Done", &[]).unwrap();
    stack.seed(USER, "Failed", &[]).unwrap();
    let ws = workspace(&stack, "INBOX");
    let wf = workflow(
        &ws,
        "    poll_interval: 10m\n    on_success: { move_to: Done }\n    retry: { attempts: 3, backoff: 3s, max_backoff: 3s }\n    dead_letter: { folder: Failed }\n",
        true,
    );
    let gates = ws.path().join("workflows/gates");
    let (rt, store) = ws.runtime(None, Audit::default()).unwrap();
    let (stop, handle) = start_serving(rt, store.clone(), wf);
    stack.deliver(USER, &mail("alpha")).unwrap();
    stack.deliver(USER, &mail("beta")).unwrap();
    wait_until("both to fail once", Duration::from_secs(20), || {
        store
            .handled_in("per-message", "box", Handling::Pending, None)
            .unwrap()
            .len()
            == 2
    })
    .await;
    assert!(ws.outbox().is_empty());
    let inbox = files(&stack.maildir(USER, ""));
    assert_eq!(inbox.len(), 2, "both stay in the inbox");
    assert!(inbox.iter().all(|f| !seen(f)), "and unseen: {inbox:?}");
    assert!(files(&stack.maildir(USER, "Done")).is_empty());

    // alpha can succeed now; beta never will.
    std::fs::write(gates.join("alpha"), "ok").unwrap();
    wait_until("alpha's retry", Duration::from_secs(20), || {
        ws.outbox().len() == 1
    })
    .await;
    assert_eq!(handled(&ws), ["handled: alpha"]);
    wait_until("alpha to move to Done", Duration::from_secs(10), || {
        files(&stack.maildir(USER, "Done")).len() == 1
    })
    .await;
    wait_until(
        "beta to go to the dead letters",
        Duration::from_secs(30),
        || files(&stack.maildir(USER, "Failed")).len() == 1,
    )
    .await;
    let dead = store
        .handled_in("per-message", "box", Handling::Dead, None)
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 3);
    assert!(
        dead[0]
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("gates/beta"),
        "{dead:?}"
    );
    // A dead letter does not block what comes after it.
    std::fs::write(gates.join("gamma"), "ok").unwrap();
    stack.deliver(USER, &mail("gamma")).unwrap();
    wait_until("gamma's run", Duration::from_secs(10), || {
        ws.outbox().len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(handled(&ws).len(), 2, "beta never ran to success");
    let status = flowmail::status::collect(&store).unwrap();
    assert_eq!(status[0].dead_letters, 1);
    assert_eq!(status[0].handled, 2);
    stop_serving(stop, handle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_uidvalidity_change_runs_nothing_twice_and_malformed_mail_is_reported() {
    let stack = MailStack::start(None).unwrap();
    let first: Vec<Vec<u8>> = ["one", "two", "three"].iter().map(|s| mail(s)).collect();
    let mut seeded: Vec<&[u8]> = first.iter().map(Vec::as_slice).collect();
    seeded.insert(1, b"this is not a mail message");
    stack.seed(USER, "Alerts", &seeded).unwrap();
    let ws = workspace(&stack, "Alerts");
    let wf = workflow(&ws, "", false);
    let (rt, store) = ws.runtime(None, Audit::default()).unwrap();
    let runner = Runner {
        runtime: &rt,
        store: &store,
    };
    let report = runner.run_with(&wf, RunOptions::default()).await.unwrap();
    assert_eq!(report.runs, 3);
    assert!(report.failed.is_empty());
    assert_eq!(report.skipped.len(), 1, "{:?}", report.lines);
    assert!(
        report.lines.iter().any(|l| l.contains("skipped message 2")),
        "{:?}",
        report.lines
    );
    let before = store.cursor("per-message", "box").unwrap().unwrap();

    // The folder is recreated: the same messages come back under a new UIDVALIDITY, with
    // one new message among them.
    std::fs::remove_dir_all(stack.maildir(USER, "Alerts")).unwrap();
    let mut again: Vec<&[u8]> = first.iter().map(Vec::as_slice).collect();
    let four = mail("four");
    again.push(&four);
    stack.seed(USER, "Alerts", &again).unwrap();
    let report = runner.run_with(&wf, RunOptions::default()).await.unwrap();
    let after = store.cursor("per-message", "box").unwrap().unwrap();
    assert_ne!(
        before.uid_validity, after.uid_validity,
        "UIDVALIDITY changed"
    );
    assert!(
        report.lines.iter().any(|l| l.contains("UIDVALIDITY")),
        "{:?}",
        report.lines
    );
    assert_eq!(
        report.runs, 1,
        "only the new message runs: {:?}",
        report.lines
    );
    assert_eq!(report.deduplicated, 3);
    let mut got = handled(&ws);
    got.sort();
    assert_eq!(
        got,
        [
            "handled: four",
            "handled: one",
            "handled: three",
            "handled: two"
        ]
    );
    let report = runner.run_with(&wf, RunOptions::default()).await.unwrap();
    assert_eq!(report.runs, 0);
    assert_eq!(ws.outbox().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_search_and_the_size_cap() {
    let stack = MailStack::start(None).unwrap();
    let mut big = mail("[ALERT] huge").to_vec();
    big.truncate(big.len() - 2);
    let big = String::from_utf8(big).unwrap().replace(
        "\r\n\r\nbody of [ALERT] huge",
        "\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee the dump\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=dump.bin\r\nContent-Transfer-Encoding: base64\r\n\r\n",
    ) + &"QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB\r\n".repeat(3000)
        + "--b--\r\n";
    stack
        .seed(
            USER,
            "",
            &[
                &mail("[ALERT] small"),
                &mail("lunch"),
                big.as_bytes(),
                &mail("[ALERT] last"),
            ],
        )
        .unwrap();
    let ws = workspace(&stack, "INBOX");
    for (oversize, expect_runs) in [("skip", 2), ("without-attachments", 3)] {
        let wf = workflow(
            &ws,
            &format!(
                "    filter: {{ subject_contains: \"[ALERT]\" }}\n    max_size: 10KB\n    oversize: {oversize}\n"
            ),
            false,
        );
        std::fs::remove_file(ws.path().join("var/flowmail.db")).ok();
        let (rt, store) = ws.runtime(None, Audit::default()).unwrap();
        let audit_runner = Runner {
            runtime: &rt,
            store: &store,
        };
        let report = audit_runner
            .run_with(&wf, RunOptions::default())
            .await
            .unwrap();
        assert_eq!(report.runs, expect_runs, "{oversize}: {:?}", report.lines);
        // The server searched: the non-matching message was never fetched.
        assert_eq!(report.scanned, 3, "{oversize}: {:?}", report.lines);
        let bodies: Vec<String> = ws
            .outbox()
            .iter()
            .map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned())
            .collect();
        if oversize == "without-attachments" {
            assert!(
                bodies.iter().any(
                    |b| b.to_lowercase().contains("omitted=true") && b.contains("see the dump")
                ),
                "the big one ran with its text and without its attachment: {bodies:?}"
            );
        }
        if oversize == "skip" {
            assert!(
                report
                    .lines
                    .iter()
                    .any(|l| l.contains("over the size cap") && l.contains(&big.len().to_string())),
                "{:?}",
                report.lines
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_connection_raises_an_alert_reconnects_and_shows_in_status() {
    let stack = MailStack::start(None).unwrap();
    let proxy = flowmail_tests::FreezableProxy::start(stack.ports.imap).unwrap();
    let ws = Workspace::with_config("").unwrap();
    let config = stack
        .imap_config(ws.path(), USER, proxy.port, false, "INBOX", "")
        .unwrap()
        .replace("timeout_secs = 10", "timeout_secs = 3");
    std::fs::write(ws.path().join("flowmail.toml"), config).unwrap();
    let wf = workflow(
        &ws,
        "    idle_refresh: 1s\n    poll_interval: 1s\n    silence_alert: 2s\n",
        false,
    );
    let (rt, store) = ws.runtime(None, Audit::default()).unwrap();
    let (stop, handle) = start_serving(rt, store.clone(), wf);
    wait_until("the first IDLE", Duration::from_secs(20), || {
        store.watches().unwrap().iter().any(|w| w.mode == "idle")
    })
    .await;
    // The path goes dead without closing: no error ever comes, only silence.
    proxy.freeze(true);
    wait_until("the watchdog's alert", Duration::from_secs(30), || {
        store.watches().unwrap()[0].alerts > 0
    })
    .await;
    let status = flowmail::status::collect(&store).unwrap();
    assert!(
        status[0]
            .last_alert
            .as_deref()
            .unwrap_or_default()
            .contains("silent"),
        "{status:?}"
    );
    let text = flowmail::status::render(&status);
    assert!(text.contains("alerts:"), "{text}");
    // Once the path works again, the trigger reconnects and mail flows.
    proxy.freeze(false);
    stack.deliver(USER, &mail("after the outage")).unwrap();
    wait_until("the run after recovery", Duration::from_secs(30), || {
        ws.outbox().len() == 1
    })
    .await;
    assert_eq!(handled(&ws), ["handled: after the outage"]);
    // A second outage, this time while news is being read: it must show just the same.
    let alerts = store.watches().unwrap()[0].alerts;
    stack.deliver(USER, &mail("during the outage")).unwrap();
    proxy.freeze(true);
    wait_until("the second alert", Duration::from_secs(30), || {
        store.watches().unwrap()[0].alerts > alerts
    })
    .await;
    proxy.freeze(false);
    wait_until(
        "the run after the second outage",
        Duration::from_secs(30),
        || ws.outbox().len() == 2,
    )
    .await;
    stop_serving(stop, handle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_idle_is_polled_at_the_configured_interval() {
    // This dovecot leaves IDLE out of the capabilities it announces after login.
    let stack = MailStack::start_with(
        None,
        "protocol imap {\n  imap_capability = IMAP4rev1 LITERAL+ SASL-IR LOGIN-REFERRALS ID ENABLE UIDPLUS MOVE NAMESPACE CHILDREN\n}",
    )
    .unwrap();
    let ws = workspace(&stack, "INBOX");
    let wf = workflow(&ws, "    poll_interval: 1s\n", false);
    let (rt, store) = ws.runtime(None, Audit::default()).unwrap();
    let (stop, handle) = start_serving(rt, store.clone(), wf);
    wait_until("the first poll", Duration::from_secs(20), || {
        store.watches().unwrap().iter().any(|w| w.mode == "poll")
    })
    .await;
    stack.deliver(USER, &mail("found by polling")).unwrap();
    wait_until("the run", Duration::from_secs(10), || {
        ws.outbox().len() == 1
    })
    .await;
    assert_eq!(handled(&ws), ["handled: found by polling"]);
    assert_eq!(store.watches().unwrap()[0].mode, "poll");
    stop_serving(stop, handle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workflows_on_one_mailbox_both_wake_for_each_message() {
    let stack = MailStack::start(None).unwrap();
    let ws = workspace(&stack, "INBOX");
    let first = workflow(&ws, "    poll_interval: 10m\n", false);
    let text = std::fs::read_to_string(ws.path().join("workflows/per-message.yaml"))
        .unwrap()
        .replace("name: per-message", "name: second")
        .replace("handled: ", "second: ");
    std::fs::write(ws.path().join("workflows/second.yaml"), text).unwrap();
    let second = Workflow::load(&ws.path().join("workflows/second.yaml")).unwrap();
    let (rt, store) = ws.runtime(None, Audit::default()).unwrap();
    let (tx, rx) = watch::channel(false);
    let served = store.clone();
    let handle = tokio::spawn(async move {
        serve(&rt, &served, &[first, second], rx).await.unwrap();
    });
    wait_until("both triggers to wait", Duration::from_secs(20), || {
        let w = store.watches().unwrap();
        w.len() == 2 && w.iter().all(|w| w.mode == "idle")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for subject in ["first news", "second news"] {
        let before = ws.outbox().len();
        stack.deliver(USER, &mail(subject)).unwrap();
        wait_until("both runs", Duration::from_secs(8), || {
            ws.outbox().len() == before + 2
        })
        .await;
    }
    let mut got = handled(&ws);
    got.sort();
    assert_eq!(
        got,
        [
            "handled: first news",
            "handled: second news",
            "second: first news",
            "second: second news"
        ]
    );
    stop_serving(tx, handle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_is_issued_again_each_refresh_and_still_delivers() {
    let stack = MailStack::start(None).unwrap();
    let ws = workspace(&stack, "INBOX");
    let wf = workflow(&ws, "    idle_refresh: 1s\n    poll_interval: 10m\n", false);
    let (rt, store) = ws.runtime(None, Audit::default()).unwrap();
    let (stop, handle) = start_serving(rt, store.clone(), wf);
    wait_until("the first IDLE", Duration::from_secs(20), || {
        store.watches().unwrap().iter().any(|w| w.mode == "idle")
    })
    .await;
    let first = store.watches().unwrap()[0].last_ok.unwrap();
    // Each ended IDLE is a successful wait: the watchdog's clock moves on.
    wait_until("IDLE to be issued again", Duration::from_secs(10), || {
        store.watches().unwrap()[0].last_ok.unwrap() >= first + 2
    })
    .await;
    stack.deliver(USER, &mail("after refreshes")).unwrap();
    wait_until("the run", Duration::from_secs(5), || ws.outbox().len() == 1).await;
    assert_eq!(handled(&ws), ["handled: after refreshes"]);
    stop_serving(stop, handle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_waiting_for_a_retry_keeps_its_attempts_across_a_uidvalidity_change() {
    let stack = MailStack::start(None).unwrap();
    stack.seed(USER, "Alerts", &[&mail("alpha")]).unwrap();
    let ws = workspace(&stack, "Alerts");
    let wf = workflow(&ws, "    retry: { attempts: 5 }\n", true);
    let (rt, store) = ws.runtime(None, Audit::default()).unwrap();
    let runner = Runner {
        runtime: &rt,
        store: &store,
    };
    let attempts = || {
        store
            .handled_in("per-message", "box", Handling::Pending, None)
            .unwrap()
            .iter()
            .map(|r| r.attempts)
            .collect::<Vec<_>>()
    };
    let report = runner.run_with(&wf, RunOptions::default()).await.unwrap();
    assert_eq!(report.failed.len(), 1);
    assert_eq!(attempts(), [1]);

    std::fs::remove_dir_all(stack.maildir(USER, "Alerts")).unwrap();
    stack.seed(USER, "Alerts", &[&mail("alpha")]).unwrap();
    let report = runner.run_with(&wf, RunOptions::default()).await.unwrap();
    assert_eq!(
        report.failed.len(),
        1,
        "one attempt per catch-up: {:?}",
        report.lines
    );
    assert_eq!(attempts(), [2]);

    std::fs::write(ws.path().join("workflows/gates/alpha"), "ok").unwrap();
    let report = runner.run_with(&wf, RunOptions::default()).await.unwrap();
    assert_eq!(report.runs, 1);
    assert_eq!(handled(&ws), ["handled: alpha"]);
    let done = store
        .handled_in("per-message", "box", Handling::Done, None)
        .unwrap();
    assert_eq!(done[0].attempts, 3);
}
