//! The hostile mailbox, end to end with default settings: among ordinary mail, a
//! multipart nested 20,000 deep, ten 30 MB messages, a multipart without a boundary and an
//! attachment with an invalid type. `flowmail run` and `flowmail serve` each handle every
//! readable message exactly once, skip the unreadable one with its reason, and the
//! process's peak RSS, as `/usr/bin/time -v` measures it, stays under 400 MB.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flowmail_tests::{Workspace, flowmail_bin};

const ORDINARY: usize = 12;
const BIG: usize = 10;
const RSS_LIMIT_KB: u64 = 400 * 1024;

const CONFIG: &str = r#"
[store]
path = "var/flowmail.db"

[web]
listen = "127.0.0.1:0"

[accounts.hostile]
from = "Flowmail <flowmail@demo.example>"

[accounts.hostile.transport]
kind = "outbox"
dir = "var/outbox"

[accounts.hostile.mailbox]
kind = "maildir"
path = "hostile-mailbox"
"#;

/// A per-message workflow that forwards each message's attachments.
fn workflow(name: &str) -> String {
    format!(
        "name: {name}\ntrigger:\n  mailbox:\n    account: hostile\nsteps:\n  - id: forward\n    action: send-mail\n\
         \x20   with:\n      account: hostile\n      message:\n        to: ops@demo.example\n\
         \x20       subject: \"{name}: ${{{{ trigger.message.subject }}}}\"\n\
         \x20       text: \"${{{{ trigger.message.text }}}} ${{{{ trigger.message.attachments | length }}}} attachment(s)\"\n\
         \x20       forward_attachments: [\"${{{{ trigger.message }}}}\"]\n"
    )
}

fn header(subject: &str, n: usize) -> String {
    format!(
        "From: Monitor <monitor@demo.example>\r\nTo: ops@demo.example\r\nSubject: {subject}\r\n\
         Date: Mon, 23 Nov 2026 08:00:00 +0000\r\nMessage-ID: <hostile-{n}@demo.example>\r\nMIME-Version: 1.0\r\n"
    )
}

/// About 30 MB: a text part and a 22 MB attachment in base64.
fn big(i: usize) -> Vec<u8> {
    let n = 5000 + i;
    let mut m = header(&format!("big {i}"), n).into_bytes();
    m.extend_from_slice(
        b"Content-Type: multipart/mixed; boundary=\"big\"\r\n\r\n--big\r\nContent-Type: text/plain\r\n\r\n\
          a large dump\r\n--big\r\nContent-Type: application/octet-stream\r\n\
          Content-Disposition: attachment; filename=\"dump.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n",
    );
    let mut x: u32 = 0x9e37_79b9 ^ n as u32;
    let line_bytes = 57;
    let mut raw = vec![0u8; line_bytes];
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    while m.len() < 30_000_000 {
        for b in raw.iter_mut() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        for chunk in raw.chunks(3) {
            let v = u32::from(chunk[0]) << 16 | u32::from(chunk[1]) << 8 | u32::from(chunk[2]);
            for shift in [18, 12, 6, 0] {
                m.push(B64[(v >> shift & 63) as usize]);
            }
        }
        m.extend_from_slice(b"\r\n");
    }
    m.extend_from_slice(b"--big--\r\n");
    m
}

fn deep(n: usize) -> Vec<u8> {
    let depth = 20_000;
    let mut m = header("twenty thousand deep", n);
    for level in 0..depth {
        m.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"d{level}\"\r\n\r\n--d{level}\r\n"
        ));
    }
    m.push_str("Content-Type: text/plain\r\n\r\nleaf\r\n");
    for level in (0..depth).rev() {
        m.push_str(&format!("--d{level}--\r\n"));
    }
    m.into_bytes()
}

/// Fills the Maildir; returns the subjects that must be handled once each.
fn seed(dir: &Path) -> Vec<String> {
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let mut expected = Vec::new();
    let mut n = 0;
    let mut put = |bytes: Vec<u8>, subject: Option<&str>| {
        n += 1;
        std::fs::write(
            dir.join("new")
                .join(format!("{}.M{n:05}.hostile", 1_795_000_000 + n)),
            bytes,
        )
        .unwrap();
        if let Some(s) = subject {
            expected.push(s.to_owned());
        }
    };
    for i in 0..ORDINARY {
        let subject = format!("ordinary {i}");
        put(
            format!(
                "{}\r\nall is well, number {i}\r\n",
                header(&subject, 1000 + i)
            )
            .into_bytes(),
            Some(&subject),
        );
        match i {
            1 => put(deep(2000), None),
            3 => put(
                format!(
                    "{}Content-Type: multipart/mixed\r\n\r\nno boundary, just words\r\n",
                    header("no boundary", 3000)
                )
                .into_bytes(),
                Some("no boundary"),
            ),
            5 => put(
                format!(
                    "{}Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n\
                     see the file\r\n--b\r\nContent-Type: foo bar\r\n\
                     Content-Disposition: attachment; filename=\"../../notes.txt\"\r\n\r\nnotes\r\n--b--\r\n",
                    header("invalid attachment type", 4000)
                )
                .into_bytes(),
                Some("invalid attachment type"),
            ),
            _ => {}
        }
        if i < BIG {
            let subject = format!("big {i}");
            put(big(i), Some(&subject));
        }
    }
    expected
}

/// The subjects in the outbox that start with `prefix`, with how often each came.
fn handled(ws: &Workspace, prefix: &str) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for path in ws.outbox() {
        let eml = std::fs::read(&path).unwrap();
        let m = mail_parser::MessageParser::default().parse(&eml).unwrap();
        if let Some(s) = m.subject().and_then(|s| s.strip_prefix(prefix)) {
            *seen.entry(s.to_owned()).or_insert(0) += 1;
        }
    }
    seen
}

/// The peak RSS in kB from `/usr/bin/time -v`'s report.
fn peak_rss_kb(report: &str) -> u64 {
    report
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS in: {report}"))
}

fn time_v() -> Command {
    assert!(
        Path::new("/usr/bin/time").is_file(),
        "/usr/bin/time is missing: apt-get install -y time"
    );
    let mut cmd = Command::new("/usr/bin/time");
    cmd.arg("-v").arg(flowmail_bin());
    cmd
}

fn check_outcome(ws: &Workspace, name: &str, expected: &[String], stdout: &str) {
    let got = handled(ws, &format!("{name}: "));
    let want: BTreeMap<String, usize> = expected.iter().map(|s| (s.clone(), 1)).collect();
    assert_eq!(
        got, want,
        "every readable message exactly once; stdout: {stdout}"
    );
    assert!(
        stdout.contains("skipped message") && stdout.contains("nested 20000 deep"),
        "the deep one is skipped with its depth: {stdout}"
    );
    // The invalid type was read as text/plain and its file forwarded without the path.
    let forwarded = ws
        .outbox()
        .into_iter()
        .map(|p| std::fs::read(p).unwrap())
        .find(|eml| {
            String::from_utf8_lossy(eml).contains(&format!("{name}: invalid attachment type"))
        })
        .unwrap();
    let m = mail_parser::MessageParser::default()
        .parse(&forwarded)
        .unwrap();
    let a = m.attachment(0).unwrap();
    use mail_parser::MimeHeaders;
    assert_eq!(a.attachment_name(), Some("notes.txt"));
    assert_eq!(a.contents(), b"notes");
}

#[test]
fn run_and_serve_get_through_a_hostile_mailbox_in_bounded_memory() {
    let ws = Workspace::with_config(CONFIG).unwrap();
    let expected = seed(&ws.path().join("hostile-mailbox"));
    assert_eq!(expected.len(), ORDINARY + BIG + 2);

    // `flowmail run`: one catch-up over the whole mailbox.
    std::fs::write(
        ws.path().join("workflows/hostile-run.yaml"),
        workflow("hostile-run"),
    )
    .unwrap();
    let out = time_v()
        .current_dir(ws.path())
        .env_remove("RUST_LOG")
        .args(["run", "workflows/hostile-run.yaml"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    check_outcome(&ws, "hostile-run", &expected, &stdout);
    let run_rss = peak_rss_kb(&stderr);
    assert!(
        run_rss < RSS_LIMIT_KB,
        "flowmail run peaked at {run_rss} kB, over {RSS_LIMIT_KB} kB"
    );
    // The 22 MB attachments were over the account's 10 MiB attachment limit: left out,
    // with a warning, and the runs went on.
    assert!(
        stderr.contains("left out the forwarded attachment `dump.bin`"),
        "{stdout}\n{stderr}"
    );

    // `flowmail serve`: the same mailbox for a workflow of its own, until stopped.
    std::fs::write(
        ws.path().join("workflows/hostile-serve.yaml"),
        workflow("hostile-serve"),
    )
    .unwrap();
    let log = ws.path().join("serve.out");
    let mut child = time_v()
        .current_dir(ws.path())
        .env_remove("RUST_LOG")
        .args(["serve", "workflows/hostile-serve.yaml"])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while handled(&ws, "hostile-serve: ").len() < expected.len() {
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "serve handled {:?}; it said: {}",
            handled(&ws, "hostile-serve: "),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(child.try_wait().unwrap().is_none(), "serve ended early");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Stop flowmail itself (the child of `time`), as an operator's SIGTERM would.
    let pids = Command::new("pgrep")
        .args(["-P", &child.id().to_string()])
        .output()
        .unwrap();
    let pid = String::from_utf8_lossy(&pids.stdout).trim().to_owned();
    assert!(!pid.is_empty(), "no flowmail process under time");
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = std::fs::read_to_string(&log).unwrap();
    check_outcome(&ws, "hostile-serve", &expected, &stdout);
    let serve_rss = peak_rss_kb(&stderr);
    assert!(
        serve_rss < RSS_LIMIT_KB,
        "flowmail serve peaked at {serve_rss} kB, over {RSS_LIMIT_KB} kB"
    );
    println!("peak RSS: run {run_rss} kB, serve {serve_rss} kB");
}
