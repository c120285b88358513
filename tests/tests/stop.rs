//! Stopping `flowmail serve`: a SIGTERM lets the run under way finish, and a second one
//! stops the process at once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::{Duration, Instant};

use flowmail_tests::{MISBEHAVE_PLUGIN, Process, Workspace};

/// CPU time the process has used, from `/proc/PID/stat` (user plus system, in ticks).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The command name may hold spaces; the fields after it are plain.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn stderr(ws: &Workspace) -> String {
    std::fs::read_to_string(ws.path().join("serve.err")).unwrap_or_default()
}

#[test]
fn a_second_sigterm_stops_serve_at_once_while_a_run_is_under_way() {
    let ws = Workspace::forwarding("step_timeout_ms = 90000").unwrap();
    let mut serve: Process = Command::new(flowmail_tests::flowmail_bin())
        .current_dir(ws.path())
        .args(["--plugin", MISBEHAVE_PLUGIN, "serve", "forward.yaml"])
        .stdout(std::fs::File::create(ws.path().join("serve.out")).unwrap())
        .stderr(std::fs::File::create(ws.path().join("serve.err")).unwrap())
        .spawn()
        .unwrap()
        .into();
    std::fs::write(
        ws.path().join("Maildir/new/1795900001.m1.host"),
        "From: a@demo.example\r\nTo: box@demo.example\r\nSubject: loop\r\n\
         Message-ID: <stop-1@demo.example>\r\n\r\nspin\r\n",
    )
    .unwrap();

    // The step is under way once the plugin is compiled (status names it) and the process
    // has burnt a second of CPU since.
    let started = Instant::now();
    let mut base = None;
    loop {
        assert!(
            serve.try_wait().unwrap().is_none(),
            "serve ended: {}",
            stderr(&ws)
        );
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the looping step never ran: {}",
            stderr(&ws)
        );
        match base {
            None if ws.status().contains("(sha256 ") => base = Some(cpu_ticks(serve.id())),
            Some(from) if cpu_ticks(serve.id()) >= from + 100 => break,
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    // The first SIGTERM waits for the run under way: the process is still there.
    serve.signal("-TERM");
    let asked = Instant::now();
    while !stderr(&ws).contains("stopping: runs in progress finish first") {
        assert!(
            asked.elapsed() < Duration::from_secs(10),
            "no stop announced: {}",
            stderr(&ws)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        serve.try_wait().unwrap().is_none(),
        "serve did not wait for the run under way: {}",
        stderr(&ws)
    );

    // The second stops it at once.
    serve.signal("-TERM");
    let asked = Instant::now();
    let status = loop {
        if let Some(status) = serve.try_wait().unwrap() {
            break status;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(10),
            "a second SIGTERM did not stop serve: {}",
            stderr(&ws)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(143), "{}", stderr(&ws));
    assert!(ws.outbox().is_empty(), "the looping step sent something");
}
