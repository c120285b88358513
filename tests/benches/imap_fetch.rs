//! Messages per second fetched from a 10,000-message dovecot mailbox, parsed and filtered:
//! flowmail's plugin (through the host's IMAP capability) beside Python's imaplib and
//! email packages reading the same mailbox. Run with `cargo bench -p flowmail-tests --bench
//! imap_fetch`; it needs dovecot (as the tests do) and python3.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::Instant;

use flowmail::bindings::actions::Filter;
use flowmail::caps::Audit;
use flowmail_tests::stack::{MailStack, PASSWORD};

const USER: &str = "bench@demo.example";
const COUNT: usize = 10_000;
const BATCH: u32 = 200;

fn main() {
    let stack = MailStack::start(None).unwrap();
    let body = "Disk usage on db-1 is at 91%. Threshold 90%. Host db-1, mount /var.\r\n".repeat(20);
    stack
        .seed_many(USER, COUNT, |n| {
            format!(
                "From: Grafana <alerts@grafana.demo.example>\r\nTo: {USER}\r\nSubject: [ALERT] disk {n}\r\n\
                 Date: Mon, 23 Nov 2026 08:00:00 +0000\r\nMessage-ID: <disk-{n}@demo.example>\r\n\
                 MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}"
            )
            .into_bytes()
        })
        .unwrap();
    let ws = stack.imap_workspace(USER, "INBOX").unwrap();
    let (rt, _store) = ws.app(None, Audit::default()).unwrap();
    let tokio = tokio::runtime::Runtime::new().unwrap();
    // Not searchable on the server, so every message is fetched and parsed in the plugin.
    let filter = Filter {
        sender_contains: None,
        subject_contains: None,
        has_attachment: Some(false),
        since: None,
        unseen: None,
    };
    let pass = |label: &str| {
        let start = Instant::now();
        let mut after: Option<String> = None;
        let (mut scanned, mut matched) = (0u64, 0u64);
        loop {
            let page = tokio
                .block_on(
                    rt.runtime()
                        .unwrap()
                        .read_mailbox("bench", "box", &filter, after, BATCH, None),
                )
                .unwrap();
            scanned += u64::from(page.scanned);
            matched += page.messages.len() as u64;
            after = Some(page.next_cursor);
            if !page.more {
                break;
            }
        }
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(scanned, COUNT as u64);
        assert_eq!(matched, COUNT as u64);
        eprintln!("{label}: {scanned} messages in {secs:.2}s");
        scanned as f64 / secs
    };
    // The first pass warms dovecot's index and the compiled plugin; the second is measured.
    pass("flowmail (warm-up)");
    let ours = pass("flowmail");
    // The host's IMAP fetch alone, without the plugin's parsing and filtering.
    let mailbox = rt.mailbox("box").unwrap();
    let start = Instant::now();
    let mut after: Option<String> = None;
    let mut fetched = 0usize;
    loop {
        let b = tokio
            .block_on(mailbox.fetch_after(after, BATCH, flowmail_tests::no_search(), None))
            .unwrap();
        fetched += b.messages.len();
        after = Some(b.next);
        if !b.more {
            break;
        }
    }
    assert_eq!(fetched, COUNT);
    let host_only = COUNT as f64 / start.elapsed().as_secs_f64();

    let script = flowmail_tests::repo().join("tests/bench/imaplib_fetch.py");
    let run_python = || {
        let out = Command::new("python3")
            .arg(&script)
            .args(["--port", &stack.ports.imap.to_string()])
            .args(["--user", USER, "--password", PASSWORD])
            .arg("--cafile")
            .arg(&stack.certs.ca)
            .args(["--batch", &BATCH.to_string()])
            .output()
            .expect("python3 runs the reference");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["messages"], COUNT);
        assert_eq!(v["matched"], COUNT);
        COUNT as f64 / v["seconds"].as_f64().unwrap()
    };
    run_python();
    let python = run_python();
    println!("| reader (10,000 messages, batches of {BATCH}) | messages/s |");
    println!("|---|---|");
    println!("| flowmail plugin: IMAP fetch, parse, filter | {ours:.0} |");
    println!("| flowmail host: IMAP fetch only, no parsing | {host_only:.0} |");
    println!("| Python imaplib + email | {python:.0} |");
    println!("| ratio flowmail / Python | {:.2} |", ours / python);
}
