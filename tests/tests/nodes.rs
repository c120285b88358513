//! Nodes on a shared PostgreSQL store: each `flowmail serve` registers under its name and
//! data center and beats; `flowmail nodes` tells the live from the dead (`kill -9`) and
//! the stopped (SIGTERM), and a second process cannot take a live node's name.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Child, Command};
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

fn serve(ws: &Workspace) -> Child {
    Command::new(flowmail_tests::flowmail_bin())
        .current_dir(ws.path())
        .args(["serve", "--web-only"])
        .stdout(std::fs::File::create(ws.path().join("serve.out")).unwrap())
        .stderr(std::fs::File::create(ws.path().join("serve.err")).unwrap())
        .spawn()
        .unwrap()
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
    let term = Command::new("kill")
        .args(["-TERM", &b1_proc.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
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
