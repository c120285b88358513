//! `serve` and the open-file limit: it raises its soft limit to the hard one at start,
//! and refuses a set of mailbox triggers that would not fit, saying how many do, rather
//! than failing everywhere at once with "Too many open files" later.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flowmail_tests::Workspace;

/// A workspace with `n` copies of the demo's mailbox-triggered workflow.
fn triggers(n: usize) -> (Workspace, Vec<String>) {
    let ws = Workspace::new("[web]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let demo = std::fs::read_to_string(ws.path().join("workflows/alert-digest.yaml")).unwrap();
    let names = (0..n)
        .map(|i| {
            let name = format!("workflows/digest-{i}.yaml");
            std::fs::write(
                ws.path().join(&name),
                demo.replace("name: alert-digest", &format!("name: digest-{i}")),
            )
            .unwrap();
            name
        })
        .collect();
    (ws, names)
}

/// `flowmail serve WORKFLOWS` under the given hard and soft open-file limits.
fn serve(ws: &Workspace, names: &[String], hard: u32, soft: u32) -> Command {
    let mut c = Command::new("bash");
    c.arg("-c")
        .arg(format!(
            "ulimit -Sn {soft} && ulimit -Hn {hard} && exec '{}' serve {}",
            flowmail_tests::flowmail_bin().display(),
            names.join(" ")
        ))
        .current_dir(ws.path());
    c
}

#[test]
fn serve_refuses_more_triggers_than_its_open_files_allow_and_raises_its_soft_limit() {
    // 100 triggers hold 100 descriptors (200 on SQLite, with their lock files); with the
    // reserve of 128, more than 200.
    let (ws, names) = triggers(100);
    let mut refused: flowmail_tests::Process = serve(&ws, &names, 200, 64)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(ws.path().join("refused.err")).unwrap())
        .spawn()
        .unwrap()
        .into();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = refused.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            refused.kill().unwrap();
            panic!("serve was not refused");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let err = std::fs::read_to_string(ws.path().join("refused.err")).unwrap();
    let (needed, fit) = if flowmail_tests::postgres::suite_on_postgres() {
        (228, 72)
    } else {
        (328, 36)
    };
    assert!(
        err.contains(&format!(
            "serving 100 mailbox triggers needs about {needed} open files"
        )) && err.contains("may open 200")
            && err.contains(&format!("about {fit} triggers fit"))
            && err.contains("LimitNOFILE="),
        "{err}"
    );

    // With a hard limit of 400 they fit: the soft limit of 64 is raised to it.
    let mut child: flowmail_tests::Process = serve(&ws, &names, 400, 64)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(ws.path().join("serve.err")).unwrap())
        .spawn()
        .unwrap()
        .into();
    let limits = format!("/proc/{}/limits", child.id());
    let started = Instant::now();
    let soft = loop {
        let text = std::fs::read_to_string(&limits).unwrap_or_default();
        let soft = text
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|n| n.parse::<u32>().ok());
        if soft == Some(400) || started.elapsed() > Duration::from_secs(30) {
            break soft;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let err = std::fs::read_to_string(ws.path().join("serve.err")).unwrap();
            panic!("serve ended ({status}): {err}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(soft, Some(400));
}
