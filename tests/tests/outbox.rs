//! The durable outbox against real postfix and dovecot: a queued send returns at once
//! with its outbox id; only a delivery worker of the account's data center sends it;
//! postfix stopped for a while costs retries and loses nothing; refused credentials fail
//! the message for good, with the reason in `flowmail status`; a large attachment is
//! held once and arrives byte for byte.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use flowmail::app::App;
use flowmail::bindings::transport::DeliveryStatus;
use flowmail::caps::Audit;
use flowmail::cluster::outbox::Workers;
use flowmail::store::Store;
use flowmail_tests::stack::{MailStack, PASSWORD};
use flowmail_tests::{Workspace, text_message};
use mail_parser::MessageParser;

const TO: &str = "bob@demo.example";

/// An SMTP account through the stack's submission port, queued, in data center `dc`.
fn account(stack: &MailStack, ws: &Workspace, name: &str, dc: &str, password: &str) -> String {
    stack.queued_account(ws.path(), name, dc, password)
}

/// The delivery workers of node `node` in data center `dc`, until the sender says stop.
fn workers(
    app: &Arc<App>,
    node: &str,
    dc: &str,
) -> (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let workers = Workers {
        app: app.clone(),
        node: node.into(),
        data_center: dc.into(),
        config: flowmail::config::OutboxConfig {
            workers: 2,
            retry_base_secs: 1,
            give_up_hours: 48,
            ..Default::default()
        },
        events: &flowmail::workflow::events::SILENT,
    };
    (tx, tokio::spawn(async move { workers.run(rx).await }))
}

fn counts(store: &Store, dc: &str, status: &str) -> u64 {
    store
        .outbox_counts()
        .unwrap()
        .into_iter()
        .find(|c| c.data_center == dc && c.status == status)
        .map_or(0, |c| c.count)
}

fn outbox_id(reference: &Option<String>) -> i64 {
    flowmail::caps::transport::queued::outbox_id(reference.as_deref()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_mail_leaves_only_from_its_data_center_and_survives_a_stopped_server() {
    let stack = MailStack::start(None).unwrap();
    let ws = Workspace::with_config("").unwrap();
    let config = format!(
        "data_centers = [\"a\", \"b\"]\n[store]\npath = \"var/flowmail.db\"\n[runtime]\ncache_dir = \"\"\n{}{}{}",
        account(&stack, &ws, "near", "a", PASSWORD),
        account(&stack, &ws, "far", "b", PASSWORD),
        account(&stack, &ws, "bad", "a", "wrong-password"),
    );
    ws.write_config(config).unwrap();
    let (app, store) = ws.app(None, Audit::default()).unwrap();
    let rt = app.runtime().unwrap();

    // Queued sends return at once, with the outbox id; nothing leaves without a worker.
    let mut receipts = Vec::new();
    for (account, n) in [("near", 6), ("far", 4)] {
        for i in 0..n {
            let r = rt
                .send_mail(
                    "send",
                    account,
                    &text_message(TO, &format!("{account} {i}"), "body"),
                )
                .await
                .unwrap();
            assert_eq!(
                (r.status, r.transport.as_str()),
                (DeliveryStatus::Queued, "smtp")
            );
            receipts.push((account, r));
        }
    }
    assert_eq!(
        (counts(&store, "a", "queued"), counts(&store, "b", "queued")),
        (6, 4)
    );

    // A worker of data center b sends b's mail and leaves a's alone.
    let (stop_b, b) = workers(&app, "b1", "b");
    stack.wait_for_mail(TO, 4, Duration::from_secs(30)).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        counts(&store, "a", "queued"),
        6,
        "no node of b sends a's mail"
    );
    let (stop_a, a) = workers(&app, "a1", "a");
    let got = stack
        .wait_for_mail(TO, 10, Duration::from_secs(30))
        .unwrap();
    let ids: Vec<String> = got
        .iter()
        .filter_map(|m| {
            MessageParser::default()
                .parse(m)?
                .message_id()
                .map(str::to_owned)
        })
        .collect();
    for (account, r) in &receipts {
        assert!(
            ids.contains(&r.message_id),
            "{} arrived with its Message-ID",
            r.message_id
        );
        let state = store
            .outbox_state(outbox_id(&r.reference))
            .unwrap()
            .unwrap();
        let node = if *account == "near" { "a1" } else { "b1" };
        assert_eq!(
            (state.status.as_str(), state.node.as_deref()),
            ("sent", Some(node))
        );
    }

    // Postfix stopped: the worker retries with backoff and loses nothing.
    stack.stop_postfix().unwrap();
    // As a stop in the middle of a delivery can leave: a half-written queue file, which
    // postfix's start-up check warns of.
    std::fs::write(
        stack.dir.path().join("postfix/queue/incoming/380957.23390"),
        b"half",
    )
    .unwrap();
    let mut waiting = Vec::new();
    for i in 0..4 {
        let r = rt
            .send_mail(
                "send",
                "near",
                &text_message(TO, &format!("while down {i}"), "body"),
            )
            .await
            .unwrap();
        waiting.push(outbox_id(&r.reference));
    }
    let started = Instant::now();
    while waiting
        .iter()
        .any(|id| store.outbox_state(*id).unwrap().unwrap().attempts < 2)
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no retries happened"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        stack.wait_for_mail(TO, 0, Duration::ZERO).unwrap().len(),
        10
    );
    stack.start_postfix().unwrap();
    stack
        .wait_for_mail(TO, 14, Duration::from_secs(60))
        .unwrap();
    for id in &waiting {
        assert_eq!(store.outbox_state(*id).unwrap().unwrap().status, "sent");
    }

    // Refused credentials are permanent: the message fails with the reason, in status.
    let r = rt
        .send_mail("send", "bad", &text_message(TO, "never", "body"))
        .await
        .unwrap();
    let id = outbox_id(&r.reference);
    let started = Instant::now();
    while store.outbox_state(id).unwrap().unwrap().status != "failed" {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the bad one never failed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        store.outbox_state(id).unwrap().unwrap().attempts,
        1,
        "not retried"
    );
    // `flowmail outbox` shows it, as text and as JSON.
    let run = |args: &[&str]| {
        let out = std::process::Command::new(flowmail_tests::flowmail_bin())
            .current_dir(ws.path())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let report: serde_json::Value = serde_json::from_str(&run(&["outbox", "--json"])).unwrap();
    let row = |dc: &str, status: &str| {
        report["outbox"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["data_center"] == dc && r["status"] == status)
            .map(|r| r["count"].as_u64().unwrap())
    };
    assert_eq!(
        (
            row("a", "sent"),
            row("a", "failed"),
            row("b", "sent"),
            row("a", "queued")
        ),
        (Some(10), Some(1), Some(4), None),
        "{report}"
    );
    let failure = &report["outbox_failures"][0];
    assert_eq!(
        (failure["id"].as_i64(), failure["account"].as_str()),
        (Some(id), Some("bad"))
    );
    assert!(
        failure["error"].as_str().unwrap().contains("535"),
        "{failure}"
    );
    let status = run(&["outbox"]);
    assert!(
        status.contains("a: 0 queued, 0 sending, 10 sent, 1 failed")
            && status.contains("b: 0 queued, 0 sending, 4 sent, 0 failed")
            && status.contains(&format!("failed: message {id} of `bad`")),
        "{status}"
    );
    // A step that waits gets the outcome: the server's queue id, or the final error.
    let wf = |name: &str, account: &str, wait: &str| {
        let path = ws.path().join(format!("{name}.yaml"));
        std::fs::write(
            &path,
            format!(
                "name: {name}\nsteps:\n  - id: send\n    action: send-mail\n    wait: {wait}\n    with:\n\
                 \x20     account: {account}\n      message:\n        to: {TO}\n        subject: \"{name}\"\n\
                 \x20       text: \"body\"\n"
            ),
        )
        .unwrap();
        let wf = flowmail::workflow::Workflow::load(&path).unwrap();
        wf.check(&ws.config().unwrap()).unwrap();
        wf
    };
    let runner = flowmail::workflow::Runner::new(&app).unwrap();
    let report =
        flowmail::workflow::run_with(&runner, &wf("waited", "near", "30s"), Default::default())
            .await
            .unwrap();
    let sent = &report.sent[0];
    let reference = sent["reference"].as_str().unwrap();
    assert!(
        !reference.starts_with("outbox:"),
        "the server's answer replaced the outbox id: {sent}"
    );
    assert_eq!(
        sent["status"], "queued",
        "postfix queues what it accepts: {sent}"
    );
    let failed =
        flowmail::workflow::run_with(&runner, &wf("refused", "bad", "30s"), Default::default())
            .await;
    let e = match failed {
        Err(e) => e.to_string(),
        Ok(r) => format!("{:?}", r.failed),
    };
    assert!(e.contains("refused the credentials"), "{e}");
    for (stop, handle) in [(stop_a, a), (stop_b, b)] {
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), handle)
            .await
            .unwrap()
            .unwrap();
    }

    // No node of b has ever run: the step says so, and the message waits.
    let unsent = wf("unserved", "far", "1s");
    let report = flowmail::workflow::run_with(&runner, &unsent, Default::default())
        .await
        .unwrap();
    let line = report
        .lines
        .iter()
        .find(|l| l.contains("waits in the outbox"))
        .unwrap_or_else(|| panic!("{:?}", report.lines));
    assert!(
        line.contains("no node of data center `b` has ever run"),
        "{line}"
    );
    assert_eq!(report.sent[0]["status"], "queued");
    assert!(
        report.sent[0]["waiting"]
            .as_str()
            .is_some_and(|w| w.contains("data center `b`")),
        "{:?}",
        report.sent
    );
    // With a live node of b, it only waits its turn.
    let now = flowmail::unix_now();
    store
        .register_node(&flowmail::store::NodeRow {
            name: "b9".into(),
            data_center: "b".into(),
            host: "elsewhere".into(),
            pid: 1,
            started_at: now,
            heartbeat_at: now,
            heartbeat_secs: 60,
            triggers: 0,
            stopped_at: None,
        })
        .unwrap();
    let report = flowmail::workflow::run_with(&runner, &unsent, Default::default())
        .await
        .unwrap();
    assert!(
        !report
            .lines
            .iter()
            .any(|l| l.contains("waits in the outbox")),
        "{:?}",
        report.lines
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_queued_attachment_is_held_once_and_arrives_byte_for_byte_on_postgresql() {
    let stack = MailStack::start(None).unwrap();
    let pg = flowmail_tests::postgres::Postgres::start().unwrap();
    let ws = Workspace::with_config("").unwrap();
    let config = format!(
        "[store]\nurl = \"{}\"\n[runtime]\ncache_dir = \"\"\n{}",
        pg.database("large").unwrap(),
        account(&stack, &ws, "near", "default", PASSWORD),
    );
    ws.write_config(config).unwrap();
    let (app, store) = ws.app(None, Audit::default()).unwrap();
    // 8 MB that do not compress, so that a second copy would show.
    let mut data = Vec::with_capacity(8_000_000);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while data.len() < 8_000_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    let mut message = text_message(TO, "large", "see the attachment");
    message
        .attachments
        .push(flowmail::bindings::types::Attachment {
            name: "Messreihe.bin".into(),
            content_type: "application/octet-stream".into(),
            data: data.clone(),
            content_id: None,
        });
    let r = app
        .runtime()
        .unwrap()
        .send_mail("send", "near", &message)
        .await
        .unwrap();
    let id = outbox_id(&r.reference);
    // Held once: the queued bytes are the composed message (base64 adds a third).
    let held = store.outbox_counts().unwrap();
    let queued = held.iter().find(|c| c.status == "queued").unwrap();
    assert_eq!(queued.count, 1);
    assert!(
        queued.bytes > 10_600_000 && queued.bytes < 11_200_000,
        "one copy of the composed message: {held:?}"
    );
    let (stop, handle) = workers(&app, "n1", "default");
    let got = stack.wait_for_mail(TO, 1, Duration::from_secs(60)).unwrap();
    let parsed = MessageParser::default().parse(&got[0]).unwrap();
    assert_eq!(parsed.message_id(), Some(r.message_id.as_str()));
    assert!(
        parsed.attachment(0).unwrap().contents() == data.as_slice(),
        "the 8 MB attachment must arrive byte for byte"
    );
    // Once sent, the record stays and the bytes go.
    let started = Instant::now();
    while store.outbox_state(id).unwrap().unwrap().status != "sent" {
        assert!(started.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sent = store.outbox_counts().unwrap();
    assert_eq!(
        sent.iter()
            .map(|c| (c.status.as_str(), c.count, c.bytes))
            .collect::<Vec<_>>(),
        vec![("sent", 1, 0)]
    );
    stop.send(true).unwrap();
    handle.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_account_of_another_data_center_sends_through_a_node_of_it() {
    // This process is a node of `a` (the first data center); the account is of `b`.
    let ws = Workspace::with_config("").unwrap();
    ws.write_config(
        "data_centers = [\"a\", \"b\"]\n[store]\npath = \"var/flowmail.db\"\n[runtime]\ncache_dir = \"\"\n\
         [accounts.far]\nfrom = \"far@demo.example\"\ndata_center = \"b\"\n\
         [accounts.far.transport]\nkind = \"outbox\"\ndir = \"var/outbox\"\n\
         [accounts.near]\nfrom = \"near@demo.example\"\ndata_center = \"a\"\n\
         [accounts.near.transport]\nkind = \"outbox\"\ndir = \"var/outbox\"\n",
    )
    .unwrap();
    let (app, store) = ws.app(None, Audit::default()).unwrap();
    let rt = app.runtime().unwrap();
    // Of this node's data center: sent here, at once.
    let r = rt
        .send_mail("send", "near", &text_message(TO, "near", "body"))
        .await
        .unwrap();
    assert_eq!(r.transport, "outbox");
    assert_eq!(ws.outbox().len(), 1);
    // Of `b`: queued for a node of `b`, not sent from here.
    let r = rt
        .send_mail("send", "far", &text_message(TO, "far", "body"))
        .await
        .unwrap();
    let id = outbox_id(&r.reference);
    assert_eq!(r.status, DeliveryStatus::Queued);
    assert_eq!(ws.outbox().len(), 1, "nothing left from this node");
    let (stop, handle) = workers(&app, "b1", "b");
    let started = Instant::now();
    while store.outbox_state(id).unwrap().unwrap().status != "sent" {
        assert!(started.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        store.outbox_state(id).unwrap().unwrap().node.as_deref(),
        Some("b1")
    );
    assert_eq!(ws.outbox().len(), 2);
    stop.send(true).unwrap();
    handle.await.unwrap();
}
