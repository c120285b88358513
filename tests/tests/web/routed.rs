//! Test Mail and Validate and Save of an account of another data center run on a node
//! of that data center, as its mail does; with no node alive there, the page says so
//! with the last heartbeat seen.

use std::process::Command;
use std::time::{Duration, Instant};

use flowmail::store::Store;
use flowmail_tests::Process;
use flowmail_tests::postgres::Postgres;
use flowmail_tests::stack::{MailStack, PASSWORD as MAIL_PASSWORD};

use super::mail::fill_relay;
use super::*;

/// A node's config on the shared store, with the key file every node shares.
fn node_config(url: &str, key: &std::path::Path, name: &str, dc: &str) -> String {
    format!(
        "data_centers = [\"a\", \"b\"]\n[node]\nname = \"{name}\"\ndata_center = \"{dc}\"\n\
         heartbeat_secs = 1\n[store]\nurl = \"{url}\"\nkey_file = \"{}\"\n[runtime]\ncache_dir = \"{}\"\n",
        key.display(),
        std::env::temp_dir().join("flowmail-test-cache").display(),
    )
}

fn wait_for_node(store: &Store, name: &str, state: &str) {
    let started = Instant::now();
    loop {
        let now = flowmail::unix_now();
        let nodes = store.nodes().unwrap();
        let found = nodes.iter().find(|n| n.name == name).map(|n| n.state(now));
        if found == Some(state) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{name} never {state}: {nodes:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn serve_node(ws: &Workspace) -> Process {
    Command::new(flowmail_tests::flowmail_bin())
        .current_dir(ws.path())
        .args(["serve", "--web-only"])
        .stdout(std::fs::File::create(ws.path().join("serve.out")).unwrap())
        .stderr(std::fs::File::create(ws.path().join("serve.err")).unwrap())
        .spawn()
        .unwrap()
        .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_and_save_of_another_data_centers_account_runs_on_a_node_of_it() {
    let stack = MailStack::start(None).unwrap();
    let pg = Postgres::start().unwrap();
    let url = pg.database("routed").unwrap();
    let shared = tempfile::tempdir().unwrap();
    let key = shared.path().join("flowmail.key");
    // b1: a node of data center b, whose page nobody uses.
    let b1 = Workspace::with_config(&format!(
        "{}[web]\nlisten = \"127.0.0.1:0\"\nca_file = \"{}\"\n",
        node_config(&url, &key, "b1", "b"),
        stack.certs.ca.display()
    ))
    .unwrap();
    // a1: the page people use, in data center a.
    let a1 = Workspace::with_config(&node_config(&url, &key, "a1", "a")).unwrap();
    add_user(a1.path(), &["--email", "ops@demo.example"], PASSWORD).unwrap();
    let store = Store::open_url(&url).unwrap();
    let mut far = serve_node(&b1);
    wait_for_node(&store, "b1", "alive");
    let page = WebServer::start(
        a1.path(),
        &format!("ca_file = \"{}\"", stack.certs.ca.display()),
    )
    .unwrap();
    let b = Browser::start().await.unwrap();
    log_in(&b, &page, "ops@demo.example", PASSWORD).await;
    b.find("#settings").await.unwrap();

    // Test of an account of data center b: sent by b1, not by this page's node.
    fill_relay(&b, &stack, Some("far"), MAIL_PASSWORD).await;
    b.select("#data_center", "b").await.unwrap();
    b.fill("#test_to", "bob@demo.example").await.unwrap();
    b.click("#test-button").await.unwrap();
    assert_eq!(
        b.text_of("#report-node").await.unwrap(),
        "b1",
        "{}",
        b.text().await.unwrap()
    );
    stack
        .wait_for_mail("bob@demo.example", 1, Duration::from_secs(30))
        .unwrap();
    // Validate and Save: the validation mail leaves from b1 too, and the account is saved.
    b.click("#validate-button").await.unwrap();
    // The page before the answer has a notice too: wait for the new page's.
    let started = Instant::now();
    loop {
        match b.text_of("#notice").await {
            Ok(notice) if notice.contains("Saved.") => break,
            other => assert!(started.elapsed() < Duration::from_secs(60), "{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(b.text_of("#report-node").await.unwrap(), "b1");
    stack
        .wait_for_mail("ops@demo.example", 1, Duration::from_secs(30))
        .unwrap();
    // b1 stops: nothing of b can be tested, and the page says since when.
    far.signal("-TERM");
    far.wait().unwrap();
    wait_for_node(&store, "b1", "stopped");
    b.click("#test-button").await.unwrap();
    let error = b.text_of("#error").await.unwrap();
    assert!(
        error.contains("no node of data center `b` is alive")
            && error.contains("the last heartbeat came from `b1`")
            && error.contains("it stopped"),
        "{error}"
    );
    // An account of the page's own data center is still tested here.
    b.select("#data_center", "a").await.unwrap();
    b.click("#test-button").await.unwrap();
    assert_eq!(
        b.text_of("#report-node").await.unwrap(),
        "a1",
        "{}",
        b.text().await.unwrap()
    );
    b.close().await;
}
