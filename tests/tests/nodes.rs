//! Nodes on a shared PostgreSQL store: each `flowmail serve` registers under its name and
//! data center and beats; `flowmail nodes` tells the live from the dead (`kill -9`) and
//! the stopped (SIGTERM), and a second process cannot take a live node's name.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::{Duration, Instant};

use flowmail_tests::Workspace;
use flowmail_tests::postgres::Postgres;

/// A workspace for node `name` in data center `dc` on the store at `url`.
fn node_workspace(url: &str, name: &str, dc: &str) -> Workspace {
    Workspace::with_config(&format!(
        "data_centers = [\"a\", \"b\"]\n[node]\nname = \"{name}\"\ndata_center = \"{dc}\"\nheartbeat_secs = 1\n\
         [store]\nurl = \"{url}\"\n[web]\nlisten = \"127.0.0.1:0\"\n\
         [accounts.out.transport]\nkind = \"outbox\"\ndir = \"var/outbox\"\n"
    ))
    .unwrap()
}

fn serve(ws: &Workspace) -> flowmail_tests::Process {
    spawn(ws, &["serve", "--web-only"])
}

/// `flowmail ARGS` in the background, its output kept in the workspace.
fn spawn(ws: &Workspace, args: &[&str]) -> flowmail_tests::Process {
    Command::new(flowmail_tests::flowmail_bin())
        .current_dir(ws.path())
        .args(args)
        .stdout(std::fs::File::create(ws.path().join("serve.out")).unwrap())
        .stderr(std::fs::File::create(ws.path().join("serve.err")).unwrap())
        .spawn()
        .unwrap()
        .into()
}

/// `flowmail nodes --json`, by name: (data center, state).
fn nodes(ws: &Workspace) -> Vec<(String, String, String)> {
    let out = Command::new(flowmail_tests::flowmail_bin())
        .current_dir(ws.path())
        .args(["nodes", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    rows.iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_owned(),
                r["data_center"].as_str().unwrap().to_owned(),
                r["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn wait_for(ws: &Workspace, what: &str, want: &[(&str, &str, &str)]) {
    let started = Instant::now();
    loop {
        let got = nodes(ws);
        let wanted: Vec<(String, String, String)> = want
            .iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
            .collect();
        if got == wanted {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{what}: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn nodes_register_beat_and_are_told_dead_or_stopped() {
    let pg = Postgres::start().unwrap();
    let url = pg.database("cluster").unwrap();
    let a1 = node_workspace(&url, "a1", "a");
    let a2 = node_workspace(&url, "a2", "a");
    let b1 = node_workspace(&url, "b1", "b");
    let mut a1_proc = serve(&a1);
    let mut a2_proc = serve(&a2);
    let mut b1_proc = serve(&b1);
    wait_for(
        &a1,
        "three live nodes",
        &[
            ("a1", "a", "alive"),
            ("a2", "a", "alive"),
            ("b1", "b", "alive"),
        ],
    );

    // A second process cannot take a live node's name.
    let twin = node_workspace(&url, "a1", "a");
    let refused = Command::new(flowmail_tests::flowmail_bin())
        .current_dir(twin.path())
        .args(["serve", "--web-only"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("node name `a1` is in use"), "{err}");

    // kill -9: no more beats, so dead after three missed; SIGTERM: stopped at once.
    a1_proc.kill().unwrap();
    a1_proc.wait().unwrap();
    b1_proc.signal("-TERM");
    b1_proc.wait().unwrap();
    wait_for(
        &a2,
        "one dead, one stopped, one alive",
        &[
            ("a1", "a", "dead"),
            ("a2", "a", "alive"),
            ("b1", "b", "stopped"),
        ],
    );

    // A restart under the dead node's name takes its row over.
    let mut again = serve(&a1);
    wait_for(
        &b1,
        "a1 back",
        &[
            ("a1", "a", "alive"),
            ("a2", "a", "alive"),
            ("b1", "b", "stopped"),
        ],
    );
    again.kill().unwrap();
    again.wait().unwrap();
    a2_proc.kill().unwrap();
    a2_proc.wait().unwrap();
}

#[test]
fn a_node_in_an_unknown_data_center_is_refused_with_the_fix() {
    let ws = Workspace::with_config(
        "[node]\ndata_center = \"mars\"\n[accounts.out.transport]\nkind = \"outbox\"\ndir = \"var/outbox\"\n",
    )
    .unwrap();
    let out = Command::new(flowmail_tests::flowmail_bin())
        .current_dir(ws.path())
        .args(["serve", "--web-only"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("node.data_center: `mars` is not one of data_centers (default)"),
        "{err}"
    );
}

/// A node's workspace for the failover test: the trigger's Maildir and the outbox are
/// shared folders, as a shared mount would be.
/// `lease` is the node's `lease_secs`.
fn trigger_workspace(
    url: &str,
    name: &str,
    dc: &str,
    shared: &std::path::Path,
    lease: u64,
) -> Workspace {
    let cache = std::env::temp_dir().join("flowmail-test-cache");
    let ws = Workspace::with_config(&format!(
        "data_centers = [\"a\", \"b\"]\n[node]\nname = \"{name}\"\ndata_center = \"{dc}\"\nheartbeat_secs = 1\n\
         lease_secs = {lease}\n\
         [store]\nurl = \"{url}\"\n[web]\nlisten = \"127.0.0.1:0\"\n[runtime]\ncache_dir = \"{}\"\n\
         [accounts.box]\ndata_center = \"a\"\n[accounts.box.mailbox]\nkind = \"maildir\"\npath = \"{}\"\n\
         [accounts.out]\nfrom = \"flowmail@demo.example\"\ndata_center = \"a\"\n\
         [accounts.out.transport]\nkind = \"outbox\"\ndir = \"{}\"\n",
        cache.display(),
        shared.join("Maildir").display(),
        shared.join("outbox").display()
    ))
    .unwrap();
    std::fs::write(
        ws.path().join("forward.yaml"),
        "name: forward\ntrigger:\n  mailbox:\n    account: box\n    poll_interval: 200ms\n\
         steps:\n  - id: fwd\n    action: send-mail\n    with:\n      account: out\n      message:\n\
         \x20       to: ops@demo.example\n        subject: \"handled: ${{ trigger.message.subject }}\"\n\
         \x20       text: \"${{ trigger.message.message_id }}\"\n",
    )
    .unwrap();
    ws
}

fn serve_trigger(ws: &Workspace) -> flowmail_tests::Process {
    spawn(ws, &["serve", "forward.yaml"])
}

fn deliver(shared: &std::path::Path, from: usize, to: usize) {
    let new = shared.join("Maildir/new");
    for i in from..to {
        std::fs::write(
            new.join(format!("1795900000.m{i}.host")),
            format!(
                "From: a@demo.example\r\nTo: box@demo.example\r\nSubject: msg {i:03}\r\n\
                 Message-ID: <msg-{i}@demo.example>\r\n\r\nbody {i}\r\n"
            ),
        )
        .unwrap();
    }
}

/// The subjects of the shared outbox's mails, one per run.
fn handled(shared: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(shared.join("outbox"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                .filter_map(|e| {
                    let eml = std::fs::read(e.path()).ok()?;
                    let text = String::from_utf8_lossy(&eml).into_owned();
                    text.lines()
                        .find_map(|l| l.strip_prefix("Subject: ").map(str::to_owned))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn wait_for_runs(shared: &std::path::Path, n: usize, within: Duration, what: &str) {
    let started = Instant::now();
    while handled(shared).len() < n {
        assert!(
            started.elapsed() < within,
            "{what}: {} of {n}",
            handled(shared).len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Shared folders for a trigger's Maildir and the outbox its runs write to.
fn shared_folders() -> tempfile::TempDir {
    let shared = tempfile::tempdir().unwrap();
    for sub in ["Maildir/new", "Maildir/cur", "Maildir/tmp", "outbox"] {
        std::fs::create_dir_all(shared.path().join(sub)).unwrap();
    }
    shared
}

/// Each of `n` messages ran, and at most one (the run in flight when its node was
/// killed or paused) ran twice.
fn each_ran_once(shared: &std::path::Path, n: usize) {
    let mut runs = std::collections::HashMap::<String, usize>::new();
    for s in handled(shared) {
        *runs.entry(s).or_default() += 1;
    }
    assert_eq!(runs.len(), n, "every message ran");
    let twice: Vec<_> = runs.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.len() <= 1,
        "only the run in flight may run again: {twice:?}"
    );
}

#[test]
fn a_trigger_runs_on_one_node_of_its_data_center_and_moves_when_that_node_dies() {
    let pg = Postgres::start().unwrap();
    let url = pg.database("failover").unwrap();
    let shared = shared_folders();
    deliver(shared.path(), 0, 20);
    // The default lease (15 s): a dead node's trigger moves within 30 s.
    let a1 = trigger_workspace(&url, "a1", "a", shared.path(), 15);
    let a2 = trigger_workspace(&url, "a2", "a", shared.path(), 15);
    let b1 = trigger_workspace(&url, "b1", "b", shared.path(), 15);
    let mut first = serve_trigger(&a1);
    wait_for_runs(shared.path(), 20, Duration::from_secs(60), "a1 started");
    let mut standby = serve_trigger(&a2);
    let mut other = serve_trigger(&b1);
    wait_for(
        &a1,
        "three live nodes",
        &[
            ("a1", "a", "alive"),
            ("a2", "a", "alive"),
            ("b1", "b", "alive"),
        ],
    );
    // 480 more arrive, one every 15 ms; the node that holds the trigger is killed with
    // kill -9 while they do.
    let arrivals = {
        let shared = shared.path().to_path_buf();
        std::thread::spawn(move || {
            for i in 20..500 {
                deliver(&shared, i, i + 1);
                std::thread::sleep(Duration::from_millis(15));
            }
        })
    };
    wait_for_runs(shared.path(), 150, Duration::from_secs(60), "a1 ran 150");
    first.kill().unwrap();
    first.wait().unwrap();
    let at_kill = Instant::now();
    let before = handled(shared.path()).len();
    assert!(!arrivals.is_finished(), "the kill came during the arrivals");
    wait_for_runs(
        shared.path(),
        before + 1,
        Duration::from_secs(30),
        "a2 took over within 30 s",
    );
    let took = at_kill.elapsed();
    arrivals.join().unwrap();
    wait_for_runs(shared.path(), 500, Duration::from_secs(180), "all 500 ran");
    std::thread::sleep(Duration::from_secs(2));
    for child in [&mut standby, &mut other] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    each_ran_once(shared.path(), 500);
    let a2_err = std::fs::read_to_string(a2.path().join("serve.err")).unwrap();
    assert!(a2_err.contains("taken over by this node"), "{a2_err}");
    let b1_err = std::fs::read_to_string(b1.path().join("serve.err")).unwrap();
    assert!(
        b1_err.contains("its account `box` is in data center `a`; this node is in `b`"),
        "{b1_err}"
    );
    eprintln!("a2 took the trigger over {took:?} after a1 was killed");
}

#[test]
fn a_paused_node_loses_its_trigger_and_stands_down_when_it_wakes() {
    let pg = Postgres::start().unwrap();
    let url = pg.database("paused").unwrap();
    let shared = shared_folders();
    deliver(shared.path(), 0, 100);
    let a1 = trigger_workspace(&url, "a1", "a", shared.path(), 3);
    let a2 = trigger_workspace(&url, "a2", "a", shared.path(), 3);
    let mut first = serve_trigger(&a1);
    wait_for_runs(shared.path(), 10, Duration::from_secs(60), "a1 started");
    let mut second = serve_trigger(&a2);
    wait_for(
        &a1,
        "two live nodes",
        &[("a1", "a", "alive"), ("a2", "a", "alive")],
    );
    // Paused, not dead: its connections stay open, but its lease runs out.
    first.signal("-STOP");
    wait_for_runs(
        shared.path(),
        100,
        Duration::from_secs(30),
        "a2 took over from the paused node",
    );
    deliver(shared.path(), 100, 150);
    wait_for_runs(shared.path(), 150, Duration::from_secs(60), "a2 ran them");
    first.signal("-CONT");
    let woke = Instant::now();
    let a1_err = a1.path().join("serve.err");
    while !std::fs::read_to_string(&a1_err)
        .unwrap()
        .contains("lost its lease")
    {
        assert!(
            woke.elapsed() < Duration::from_secs(15),
            "a1 never stood down: {}",
            std::fs::read_to_string(&a1_err).unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Mail that arrives now runs once, on a2, and the trigger's state is a2's.
    deliver(shared.path(), 150, 200);
    wait_for_runs(shared.path(), 200, Duration::from_secs(60), "all 200 ran");
    std::thread::sleep(Duration::from_secs(2));
    let out = Command::new(flowmail_tests::flowmail_bin())
        .current_dir(a2.path())
        .args(["status", "--json"])
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        status[0]["pid"].as_u64(),
        Some(u64::from(second.id())),
        "{status}"
    );
    assert_ne!(status[0]["mode"], "stopped", "{status}");
    // `flowmail nodes` shows which node serves the trigger now.
    let out = Command::new(flowmail_tests::flowmail_bin())
        .current_dir(a2.path())
        .args(["nodes", "--json"])
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let serving = |name: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .map(|n| n["serving"].clone())
    };
    assert_eq!(
        (serving("a1"), serving("a2")),
        (
            Some(serde_json::json!([])),
            Some(serde_json::json!(["forward"]))
        ),
        "{listed}"
    );
    for child in [&mut first, &mut second] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    each_ran_once(shared.path(), 200);
    eprintln!(
        "a1 after it woke:\n{}",
        std::fs::read_to_string(&a1_err).unwrap()
    );
}
