//! A Graph mail folder as a trigger's mailbox: delta pages read as a cursor, each message's
//! MIME parsed by the plugin, the post-actions carried out on the stand-in's mailbox,
//! throttling waited out, and a 500-message workflow that runs each message once across a
//! `kill -9` of `flowmail serve` and an expired delta link.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use flowmail::workflow::{RunOptions, Runner, Workflow};

use super::*;

/// A workspace whose account `graph` reads the stand-in's `folder`, and whose account
/// `out` writes the workflow's mails into the outbox.
fn mailbox_workspace(oauth: &OAuth, graph: &GraphStandIn, folder: &str) -> Workspace {
    let ws = Workspace::with_config("").unwrap();
    std::fs::write(ws.path().join("client-secret"), "client-secret-value-93ab").unwrap();
    let cache = std::env::temp_dir().join("flowmail-test-cache");
    ws.write_config(format!(
            "[store]\npath = \"var/flowmail.db\"\n[runtime]\ncache_dir = \"{}\"\n[web]\nlisten = \"127.0.0.1:0\"\n\
             [accounts.out]\nfrom = \"Flowmail <flowmail@demo.example>\"\n\
             [accounts.out.transport]\nkind = \"outbox\"\ndir = \"var/outbox\"\n\
             [accounts.graph.mailbox]\nkind = \"graph\"\ntenant = \"contoso.example\"\nuser = \"{USER}\"\n\
             folder = \"{folder}\"\ngraph_url = \"{}\"\nmax_wait_secs = 10\n\
             [accounts.graph.auth]\nkind = \"oauth2\"\nusername = \"{USER}\"\nclient_id = \"flowmail-graph\"\n\
             client_secret = {{ file = \"client-secret\" }}\ntoken_url = \"{}/token\"\n",
            cache.display(),
            graph.url,
            oauth.url()
        ),
    )
    .unwrap();
    ws
}

/// A per-message workflow on account `graph` that writes one mail per run to the outbox.
fn workflow(ws: &Workspace, trigger_extra: &str) -> Workflow {
    let text = format!(
        "name: graph-mail\ntrigger:\n  mailbox:\n    account: graph\n{trigger_extra}\
         steps:\n  - id: forward\n    action: send-mail\n    with:\n      account: out\n      message:\n\
         \x20       to: ops@demo.example\n        subject: \"handled: ${{{{ trigger.message.subject }}}}\"\n\
         \x20       text: \"${{{{ trigger.message.message_id }}}} ${{{{ trigger.message.text }}}}\"\n"
    );
    let path = ws.path().join("workflows/graph-mail.yaml");
    std::fs::write(&path, text).unwrap();
    let wf = Workflow::load(&path).unwrap();
    wf.check(&ws.config().unwrap()).unwrap();
    wf
}

fn mail(subject: &str) -> Vec<u8> {
    format!(
        "From: Grafana <alerts@grafana.demo.example>\r\nTo: {USER}\r\nSubject: {subject}\r\n\
         Date: Mon, 23 Nov 2026 08:00:00 +0000\r\nMessage-ID: <{}@demo.example>\r\n\r\nbody of {subject}\r\n",
        subject.replace(' ', "-")
    )
    .into_bytes()
}

/// The subjects of the outbox's mails, one per run.
fn handled(ws: &Workspace) -> Vec<String> {
    ws.outbox()
        .iter()
        .map(|p| {
            let eml = std::fs::read(p).unwrap();
            MessageParser::default()
                .parse(&eml)
                .and_then(|m| m.subject().map(str::to_owned))
                .unwrap_or_default()
        })
        .collect()
}

async fn run_once(ws: &Workspace, wf: &Workflow) -> flowmail::workflow::RunReport {
    let (app, _) = ws.app(None, Audit::default()).unwrap();
    let runner = Runner::new(&app).unwrap();
    flowmail::workflow::run_with(&runner, wf, RunOptions::default())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_actions_change_the_graph_mailbox_and_throttling_only_slows_the_trigger() {
    let (oauth, graph) = servers();
    let processed = graph.add_folder("Processed");
    let first = graph.deliver("inbox", &mail("disk full"));
    let ws = mailbox_workspace(&oauth, &graph, "inbox");

    // Mark read, after a throttled first request.
    graph.inject(&[Injected {
        status: 429,
        retry_after: Some(1),
        code: "ApplicationThrottled",
    }]);
    let started = Instant::now();
    let report = run_once(&ws, &workflow(&ws, "    on_success: seen\n")).await;
    assert_eq!(report.runs, 1, "{:?}", report.lines);
    assert!(report.failed.is_empty(), "{:?}", report.lines);
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(graph.requests().iter().any(|(_, s)| *s == 429));
    let inbox = graph.folder("inbox");
    assert_eq!(inbox.len(), 1);
    assert!(inbox[0].is_read && !inbox[0].flagged, "{inbox:?}");
    // The plugin parsed the MIME from $value: the run saw its Message-ID and text.
    let out = String::from_utf8(std::fs::read(&ws.outbox()[0]).unwrap()).unwrap();
    assert!(
        out.contains("disk-full@demo.example") && out.contains("body of disk full"),
        "{out}"
    );

    // Flag, then move to a folder named by its display name: each a new trigger.
    for (action, check) in [("flag", 0), ("{ move_to: Processed }", 1)] {
        ws.reset_store().unwrap();
        let report = run_once(&ws, &workflow(&ws, &format!("    on_success: {action}\n"))).await;
        assert_eq!(report.runs, 1, "{action}: {:?}", report.lines);
        if check == 0 {
            assert!(graph.folder("inbox")[0].flagged);
        }
    }
    assert!(graph.folder("inbox").is_empty());
    let moved = graph.folder(&processed);
    assert_eq!(moved.len(), 1);
    assert_ne!(
        moved[0].id, first,
        "a moved message has a new id, as in Exchange"
    );
    assert_eq!(moved[0].mime, mail("disk full"), "moved byte for byte");

    // Delete.
    graph.deliver("inbox", &mail("cpu hot"));
    ws.reset_store().unwrap();
    let report = run_once(&ws, &workflow(&ws, "    on_success: delete\n")).await;
    assert_eq!(report.runs, 1, "{:?}", report.lines);
    assert!(graph.folder("inbox").is_empty());
    assert_eq!(graph.folder(&processed).len(), 1);
    assert!(graph.most_in_flight() <= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_size_cap_and_an_unknown_folder_on_graph() {
    let (oauth, graph) = servers();
    let big = [
        mail("big").as_slice(),
        "x".repeat(40_000).as_bytes(),
        b"\r\n",
    ]
    .concat();
    graph.deliver("inbox", &mail("small"));
    graph.deliver("inbox", &big);
    let ws = mailbox_workspace(&oauth, &graph, "inbox");
    let report = run_once(
        &ws,
        &workflow(&ws, "    max_size: 10KB\n    oversize: skip\n"),
    )
    .await;
    assert_eq!(report.runs, 1, "{:?}", report.lines);
    assert!(
        report
            .lines
            .iter()
            .any(|l| l.contains("over the size cap") && l.contains(&big.len().to_string())),
        "the skipped message is reported with its full size: {:?}",
        report.lines
    );

    let ws = mailbox_workspace(&oauth, &graph, "Nope");
    let (app, _) = ws.app(None, Audit::default()).unwrap();
    let runner = Runner::new(&app).unwrap();
    let e = flowmail::workflow::run_with(&runner, &workflow(&ws, ""), RunOptions::default())
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("no folder `Nope`") && e.to_string().contains("well-known name"),
        "{e}"
    );
}

/// `flowmail serve` of the workspace's workflow, as its own process.
fn serve(ws: &Workspace) -> flowmail_tests::Process {
    Command::new(flowmail_tests::flowmail_bin())
        .current_dir(ws.path())
        .args(["serve", "workflows/graph-mail.yaml"])
        .env_remove("RUST_LOG")
        .stdout(std::fs::File::create(ws.path().join("serve.out")).unwrap())
        .stderr(std::fs::File::create(ws.path().join("serve.err")).unwrap())
        .spawn()
        .unwrap()
        .into()
}

async fn wait_for_runs(ws: &Workspace, n: usize, timeout: Duration) {
    let start = Instant::now();
    while ws.outbox().len() < n {
        assert!(
            start.elapsed() < timeout,
            "timed out waiting for {n} runs, have {}: {}",
            ws.outbox().len(),
            std::fs::read_to_string(ws.path().join("serve.err")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_messages_run_once_each_across_kill_9_and_an_expired_delta_link() {
    let (oauth, graph) = servers();
    let ws = mailbox_workspace(&oauth, &graph, "inbox");
    workflow(
        &ws,
        "    batch: 50\n    poll_interval: 1s\n    on_success: seen\n",
    );
    let subject = |i: usize| format!("msg {i:03}");
    for i in 0..300 {
        graph.deliver("inbox", &mail(&subject(i)));
    }
    let mut serving = serve(&ws);
    // kill -9 in the middle of the catch-up, inside a delta page of 50.
    wait_for_runs(&ws, 120, Duration::from_secs(180)).await;
    serving.kill().unwrap();
    serving.wait().unwrap();
    let at_kill = ws.outbox().len();
    assert!(at_kill < 300, "the kill came mid-way: {at_kill}");

    // The delta link still holds: the restart resumes from it.
    let mut serving = serve(&ws);
    wait_for_runs(&ws, 300, Duration::from_secs(180)).await;
    for i in 300..400 {
        graph.deliver("inbox", &mail(&subject(i)));
    }
    wait_for_runs(&ws, 400, Duration::from_secs(120)).await;
    // Exchange lets a delta link lapse: the trigger reads the folder again from its
    // start and recognises what it ran by Message-ID.
    graph.expire_delta_links();
    for i in 400..500 {
        graph.deliver("inbox", &mail(&subject(i)));
    }
    wait_for_runs(&ws, 500, Duration::from_secs(120)).await;
    // Anything run twice would show up now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    serving.kill().unwrap();
    serving.wait().unwrap();

    let mut runs: HashMap<String, usize> = HashMap::new();
    for s in handled(&ws) {
        *runs.entry(s).or_default() += 1;
    }
    for i in 0..500 {
        assert!(
            runs.contains_key(&format!("handled: {}", subject(i))),
            "message {i} never ran"
        );
    }
    assert_eq!(runs.len(), 500, "nothing else ran: {runs:?}");
    // The run in progress at the kill may have written its mail before its record was
    // committed; that one message may run again. Nothing else ever does.
    let twice: Vec<_> = runs.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.len() <= 1 && twice.iter().all(|(_, n)| **n == 2),
        "{twice:?}"
    );
    let err = std::fs::read_to_string(ws.path().join("serve.err")).unwrap_or_default();
    assert!(
        err.contains("reading the folder again from its start")
            || err.contains("could not resume from its cursor"),
        "the expired link was noticed: {err}"
    );
    // Every message was marked read by its post-action, and Outlook's limit held.
    let inbox = graph.folder("inbox");
    assert_eq!(inbox.len(), 500);
    assert!(inbox.iter().all(|m| m.is_read));
    assert!(graph.most_in_flight() <= 4);
    assert!(graph.requests().iter().all(|(_, s)| *s != 429));
}
