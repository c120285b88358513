//! Three `flowmail serve` processes (a1 and a2 in data center `a`, b1 in `b`) on one
//! PostgreSQL store deliver a burst of queued mail through real postfix to dovecot:
//! - 2,000 sends through accounts of both data centers while a1 is killed with `kill -9`
//!   mid-burst and started again: every message arrives, a message arrives twice only if
//!   it was in flight on a1 at the kill, and every copy has its original Message-ID;
//! - no message of data center `b` leaves from a node of `a` (the outbox records the
//!   node that sent each one), nor one of `a` from `b`;
//! - postfix stopped for 30 s during a burst: every message waits and is delivered after;
//! - Test Mail of an account of `b`, asked from a process of `a`, is sent by b1.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowmail::caps::Audit;
use flowmail::runtime::Runtime;
use flowmail::store::Store;
use flowmail_tests::postgres::Postgres;
use flowmail_tests::stack::{MailStack, PASSWORD};
use flowmail_tests::{Workspace, text_message};

const TO: &str = "bob@demo.example";

/// The config of a process of the cluster: node `name` of data center `dc`, with the
/// queued accounts `near` (data center `a`) and `far` (`b`).
fn config(stack: &MailStack, ws: &Workspace, url: &str, name: &str, dc: &str) -> String {
    format!(
        "data_centers = [\"a\", \"b\"]\n[node]\nname = \"{name}\"\ndata_center = \"{dc}\"\n\
         heartbeat_secs = 1\n[store]\nurl = \"{url}\"\n[web]\nlisten = \"127.0.0.1:0\"\n\
         [runtime]\ncache_dir = \"{}\"\n[outbox]\nworkers = 4\nretry_base_secs = 1\n{}{}",
        std::env::temp_dir().join("flowmail-test-cache").display(),
        stack.queued_account(ws.path(), "near", "a", PASSWORD),
        stack.queued_account(ws.path(), "far", "b", PASSWORD),
    )
}

fn workspace(stack: &MailStack, url: &str, name: &str, dc: &str) -> Workspace {
    let ws = Workspace::with_config("").unwrap();
    ws.write_config(config(stack, &ws, url, name, dc)).unwrap();
    ws
}

/// `flowmail serve --web-only` (the settings page and the delivery workers) in `ws`.
fn serve(ws: &Workspace) -> flowmail_tests::Process {
    let log = |name: &str| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(ws.path().join(name))
            .unwrap()
    };
    Command::new(flowmail_tests::flowmail_bin())
        .current_dir(ws.path())
        .args(["serve", "--web-only"])
        .stdout(log("serve.out"))
        .stderr(log("serve.err"))
        .spawn()
        .unwrap()
        .into()
}

fn wait_alive(store: &Store, names: &[&str]) {
    let started = Instant::now();
    loop {
        let now = flowmail::unix_now();
        let nodes = store.nodes().unwrap();
        if names
            .iter()
            .all(|n| nodes.iter().any(|r| r.name == *n && r.alive(now)))
        {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "nodes {names:?} never all alive: {nodes:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn count(store: &Store, dc: &str, status: &str) -> u64 {
    store
        .outbox_counts()
        .unwrap()
        .into_iter()
        .filter(|c| c.status == status && (dc.is_empty() || c.data_center == dc))
        .map(|c| c.count)
        .sum()
}

/// Sends `n` messages, alternating between `near` and `far`; their outbox ids and
/// Message-IDs, by account.
async fn burst(rt: &Runtime, tag: &str, n: usize) -> Vec<(&'static str, i64, String)> {
    let mut sent = Vec::with_capacity(n);
    for i in 0..n {
        let account = if i % 2 == 0 { "near" } else { "far" };
        let r = rt
            .send_mail(
                "send",
                account,
                &text_message(TO, &format!("{tag} {i}"), "body"),
            )
            .await
            .unwrap();
        let id = flowmail::caps::transport::queued::outbox_id(r.reference.as_deref()).unwrap();
        sent.push((account, id, r.message_id));
    }
    sent
}

/// Message-ID → copies, of everything in bob's mailbox, once every message of `sent`
/// has arrived.
fn arrived(
    stack: &MailStack,
    sent: &[(&str, i64, String)],
    within: Duration,
) -> HashMap<String, usize> {
    let ids: Vec<String> = sent.iter().map(|(_, _, id)| id.clone()).collect();
    stack.wait_for_ids(TO, &ids, within).unwrap()
}

fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < within, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_deliver_every_message_from_its_data_center_across_a_kill_and_a_stopped_server()
{
    let stack = MailStack::start(None).unwrap();
    let pg = Postgres::start().unwrap();
    let url = pg.database("cluster").unwrap();
    // The producer only queues: it runs no workers.
    let producer = workspace(&stack, &url, "producer", "a");
    let (app, store): (_, Arc<Store>) = producer.app(None, Audit::default()).unwrap();
    let a1 = workspace(&stack, &url, "a1", "a");
    let a2 = workspace(&stack, &url, "a2", "a");
    let b1 = workspace(&stack, &url, "b1", "b");
    let mut nodes = vec![serve(&a1), serve(&a2), serve(&b1)];
    wait_alive(&store, &["a1", "a2", "b1"]);
    // Test Mail of `far` from a process of data center a is sent by b1.
    let out = Command::new(flowmail_tests::flowmail_bin())
        .current_dir(producer.path())
        .args(["test-mail", "--account", "far", "--to", TO, "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&report["ok"], &report["node"], &report["data_center"]),
        (
            &serde_json::json!(true),
            &serde_json::json!("b1"),
            &serde_json::json!("b")
        ),
        "{report}"
    );

    // 2,000 sends; a1 is killed with kill -9 once 300 of a's have left, while the
    // burst goes on, and started again.
    let started = Instant::now();
    let sending = {
        let app = app.clone();
        tokio::spawn(async move {
            let first = burst(app.runtime().unwrap(), "burst", 2000).await;
            (first, started.elapsed())
        })
    };
    wait_until("300 of a's were sent", Duration::from_secs(120), || {
        count(&store, "a", "sent") >= 300
    });
    nodes[0].kill().unwrap();
    nodes[0].wait().unwrap();
    let in_flight: HashSet<String> = store
        .outbox_sending("a1")
        .unwrap()
        .into_iter()
        .filter_map(|(_, id)| id)
        .collect();
    assert!(!sending.is_finished(), "the kill came mid-burst");
    tokio::time::sleep(Duration::from_secs(2)).await;
    nodes[0] = serve(&a1);
    let (first, queued_in) = sending.await.unwrap();
    wait_until("all 2,000 were sent", Duration::from_secs(300), || {
        count(&store, "", "sent") >= 2000
    });
    let delivered_in = started.elapsed();
    let ids = arrived(&stack, &first, Duration::from_secs(120));
    let twice: Vec<&String> = ids
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| id)
        .collect();
    assert!(
        twice.iter().all(|id| in_flight.contains(*id)),
        "only a message in flight on a1 at the kill may arrive twice: {twice:?}, in flight {in_flight:?}"
    );
    assert!(in_flight.len() <= 4, "a1 has four workers: {in_flight:?}");
    // Each left from a node of its own data center.
    let mut by_node = HashMap::<String, usize>::new();
    for (account, id, _) in &first {
        let state = store.outbox_state(*id).unwrap().unwrap();
        let node = state.node.unwrap_or_default();
        let allowed: &[&str] = if *account == "near" {
            &["a1", "a2"]
        } else {
            &["b1"]
        };
        assert!(
            allowed.contains(&node.as_str()),
            "a message of `{account}` left from `{node}`"
        );
        *by_node.entry(node).or_default() += 1;
    }
    assert!(
        by_node.get("a1").is_some_and(|n| *n > 0) && by_node.get("a2").is_some_and(|n| *n > 0),
        "both nodes of a sent: {by_node:?}"
    );

    // postfix stopped for 30 s during a burst: the burst's first 30 begin to leave,
    // postfix stops, and the other 270 are queued while it is down. Everything not sent
    // by then waits, then leaves. (Stopping postfix at a count while one task goes on
    // queueing the whole burst raced: on a quick run most of it had left first.)
    let first_part = burst(app.runtime().unwrap(), "before down", 30).await;
    wait_until("the burst began to leave", Duration::from_secs(60), || {
        count(&store, "", "sent") >= 2010
    });
    stack.stop_postfix().unwrap();
    let down = Instant::now();
    let sent_at_stop = count(&store, "", "sent");
    let mut second = burst(app.runtime().unwrap(), "while down", 270).await;
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(down.elapsed())).await;
    let waiting = count(&store, "", "queued") + count(&store, "", "sending");
    // A send in flight at the stop may still have been accepted; nothing queued after it.
    assert!(
        waiting >= 270 && count(&store, "", "sent") <= sent_at_stop + 12,
        "every message queued while postfix was down waited: {waiting} waiting, {} sent, {sent_at_stop} at the stop",
        count(&store, "", "sent")
    );
    second.extend(first_part);
    assert_eq!(count(&store, "", "failed"), 0);
    stack.start_postfix().unwrap();
    wait_until(
        "all 2,300 were sent after postfix came back",
        Duration::from_secs(180),
        || count(&store, "", "sent") >= 2300,
    );
    arrived(&stack, &second, Duration::from_secs(120));
    assert_eq!(count(&store, "", "failed"), 0);
    for node in &mut nodes {
        node.kill().unwrap();
        node.wait().unwrap();
    }
    eprintln!(
        "2,000 queued in {queued_in:?}, all sent {delivered_in:?} after the first; by node {by_node:?}; {} in flight on a1 at the kill, {} arrived twice; {waiting} waited while postfix was down",
        in_flight.len(),
        twice.len()
    );
}
