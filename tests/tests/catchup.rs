//! A long catch-up in bounded memory: 10,000 messages in a real dovecot mailbox, read
//! batch by batch. This file holds one test, so the process's peak memory is its own.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

use flowmail::caps::Audit;
use flowmail::workflow::{RunOptions, Runner, Workflow};
use flowmail_tests::stack::MailStack;

const USER: &str = "bulk@demo.example";
const COUNT: usize = 10_000;

/// The kernel's `VmHWM` (peak resident memory) of this process, in KiB.
fn peak_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_catch_up_in_bounded_memory() {
    let stack = MailStack::start(None).unwrap();
    // About 30 KB each: 300 MB in all, far more than the catch-up may hold at once.
    let filler =
        "All quiet on db-1; this line pads the message to a realistic size.\r\n".repeat(440);
    let total_bytes = stack
        .seed_many(USER, COUNT, |n| {
            format!(
                "From: Monitor <monitor@demo.example>\r\nTo: {USER}\r\nSubject: [ALERT] check {n}\r\n\
                 Date: Mon, 23 Nov 2026 08:00:00 +0000\r\nMessage-ID: <check-{n}@demo.example>\r\n\r\n{filler}"
            )
            .into_bytes()
        })
        .unwrap();
    let ws = stack.imap_workspace(USER, "INBOX").unwrap();
    std::fs::write(
        ws.path().join("workflows/bulk.yaml"),
        "name: bulk\ntrigger:\n  mailbox:\n    account: box\n    per: batch\n    batch: 100\nsteps:\n  - id: digest\n    action: send-mail\n    with:\n      account: box\n      message:\n        to: ops@demo.example\n        subject: \"${{ trigger.count }} checks\"\n        text: \"first: ${{ trigger.messages[0].subject }}\"\n",
    )
    .unwrap();
    let wf = Workflow::load(&ws.path().join("workflows/bulk.yaml")).unwrap();
    wf.check(&ws.config().unwrap()).unwrap();
    let (rt, store) = ws.app(None, Audit::default()).unwrap();
    // Reset the peak to what the process holds now, with the runtime loaded.
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let before = peak_kib();
    let started = Instant::now();
    let report = flowmail::workflow::run_with(
        &Runner::new(&rt).unwrap(),
        &wf,
        RunOptions {
            retry_now: true,
            progress: true,
        },
    )
    .await
    .unwrap();
    let growth_mib = (peak_kib().saturating_sub(before)) / 1024;
    let mailbox_mib = (total_bytes / (1024 * 1024)) as u64;
    eprintln!(
        "caught up on {} messages ({mailbox_mib} MiB) in {:?}; peak memory grew by {growth_mib} MiB",
        report.scanned,
        started.elapsed()
    );
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.scanned, COUNT as u64);
    assert_eq!(report.runs, COUNT / 100);
    assert_eq!(ws.outbox().len(), COUNT / 100);
    assert_eq!(
        store.handled_counts("bulk", "box").unwrap().done,
        COUNT as u64
    );
    // Bounded: a few batches' worth at most, not the mailbox.
    assert!(
        growth_mib < 100 && growth_mib * 3 < mailbox_mib,
        "peak memory grew by {growth_mib} MiB while reading a {mailbox_mib} MiB mailbox"
    );
}
