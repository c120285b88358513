//! The `flowmail` binary as a user runs it: the demo, twice, and bad inputs; `serve`,
//! `status` and trigger settings in [`triggers`].

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod triggers;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mail_parser::{MessageParser, MimeHeaders};

const BIN: &str = env!("CARGO_BIN_EXE_flowmail");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A private copy of the repository's demo: `flowmail.toml` and `workflows/`.
fn demo(extra_config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("cp")
        .arg("-r")
        .arg(repo().join("workflows"))
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let config = std::fs::read_to_string(repo().join("flowmail.toml")).unwrap();
    // Tests run side by side: each settings page takes a free port.
    std::fs::write(
        dir.path().join("flowmail.toml"),
        format!("{config}\n{extra_config}\n[web]\nlisten = \"127.0.0.1:0\"\n"),
    )
    .unwrap();
    dir
}

fn flowmail(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .current_dir(dir)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn outbox(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("var/outbox"))
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn demo_message(name: &str) -> Vec<u8> {
    std::fs::read(repo().join("workflows/demo-mailbox/new").join(name)).unwrap()
}

#[test]
fn the_demo_sends_one_digest_then_nothing_until_the_store_is_deleted() {
    let dir = demo("");
    let out = flowmail(dir.path(), &["run", "workflows/alert-digest.yaml"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let sent = outbox(dir.path());
    assert_eq!(sent.len(), 1, "{stdout}");
    let name = sent[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        stdout.contains(&name),
        "the output says where the .eml went: {stdout}"
    );
    assert!(
        stdout.lines().any(|l| l.starts_with("skipped message ")
            && l.ends_with(":6 of `demo`: it has no From header")),
        "the malformed sixth message is named by its id: {stdout}"
    );

    let bytes = std::fs::read(&sent[0]).unwrap();
    let eml = MessageParser::default().parse(&bytes).unwrap();
    assert_eq!(eml.subject(), Some("Alert digest: 4 new alert(s)"));
    let from = eml.from().unwrap().first().unwrap();
    assert_eq!(
        (from.name(), from.address()),
        (Some("Flowmail Demo"), Some("flowmail@demo.example"))
    );
    assert_eq!(
        eml.to().unwrap().first().unwrap().address(),
        Some("oncall@demo.example")
    );
    assert!(eml.message_id().unwrap().ends_with("@demo.example"));
    assert!(eml.date().is_some());
    assert_eq!(
        eml.header_raw("X-Flowmail-Workflow").map(str::trim),
        Some("alert-digest")
    );
    let body = eml.body_text(0).unwrap();
    for alert in [
        "[ALERT] Disk usage 91% on db-1",
        "[ALERT] Error rate above 5% on checkout",
        "[ALERT] Backup failed on nas-2",
        "[ALERT] Température élevée dans la salle serveurs 🔥",
    ] {
        assert!(body.contains(alert), "digest lists {alert}: {body}");
    }
    for other in [
        "weekly infrastructure report",
        "Lunch",
        "Certificate expiring",
    ] {
        assert!(!body.contains(other), "digest must not list {other}");
    }
    assert!(
        eml.body_html(0)
            .unwrap()
            .contains("<li><b>[ALERT] Disk usage 91% on db-1</b>")
    );

    // The forwarded attachments are byte for byte those of the alert.
    let source_bytes = demo_message("1795428312.M4P100.demo");
    let source = MessageParser::default().parse(&source_bytes).unwrap();
    let expected: Vec<(String, Vec<u8>)> = source
        .attachments()
        .map(|a| {
            (
                a.attachment_name().unwrap().to_owned(),
                a.contents().to_vec(),
            )
        })
        .collect();
    let got: Vec<(String, Vec<u8>)> = eml
        .attachments()
        .map(|a| {
            (
                a.attachment_name().unwrap().to_owned(),
                a.contents().to_vec(),
            )
        })
        .collect();
    assert_eq!(expected.len(), 2);
    assert_eq!(got, expected);
    assert!(got[1].1.starts_with(b"\x89PNG\r\n\x1a\n"));

    let envelope = std::fs::read_to_string(sent[0].with_extension("envelope.json")).unwrap();
    assert!(
        envelope.contains("\"recipients\":[\"oncall@demo.example\"]"),
        "{envelope}"
    );

    let again = flowmail(dir.path(), &["run", "workflows/alert-digest.yaml"]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(text(&again.stdout).contains("nothing to send"));
    assert_eq!(outbox(dir.path()).len(), 1, "a second run sends nothing");

    std::fs::remove_file(dir.path().join("var/flowmail.db")).unwrap();
    let fresh = flowmail(dir.path(), &["run", "workflows/alert-digest.yaml"]);
    assert!(fresh.status.success(), "{}", text(&fresh.stderr));
    assert_eq!(
        outbox(dir.path()).len(),
        2,
        "deleting the store sends again"
    );
}

#[test]
fn new_mail_after_a_run_is_digested_on_the_next() {
    let dir = demo("");
    assert!(
        flowmail(dir.path(), &["run", "workflows/alert-digest.yaml"])
            .status
            .success()
    );
    let msg = "From: Grafana <alerts@grafana.demo.example>\r\nSubject: [ALERT] Memory on web-3\r\nDate: Tue, 24 Nov 2026 07:00:00 +0000\r\n\r\nRSS 95%\r\n";
    std::fs::write(
        dir.path()
            .join("workflows/demo-mailbox/tmp/1795500000.M9P1.demo"),
        msg,
    )
    .unwrap();
    std::fs::rename(
        dir.path()
            .join("workflows/demo-mailbox/tmp/1795500000.M9P1.demo"),
        dir.path()
            .join("workflows/demo-mailbox/new/1795500000.M9P1.demo"),
    )
    .unwrap();
    let out = flowmail(dir.path(), &["run", "workflows/alert-digest.yaml"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let sent = outbox(dir.path());
    assert_eq!(sent.len(), 2);
    let eml = std::fs::read(&sent[1]).unwrap();
    let eml = MessageParser::default().parse(&eml).unwrap();
    assert_eq!(eml.subject(), Some("Alert digest: 1 new alert(s)"));
    assert!(
        eml.body_text(0)
            .unwrap()
            .contains("[ALERT] Memory on web-3")
    );
}

/// Writes `workflow` into the demo and runs it; returns (success, stderr).
fn run_workflow(dir: &Path, workflow: &str) -> (bool, String) {
    std::fs::write(dir.join("workflows/bad.yaml"), workflow).unwrap();
    let out = flowmail(dir, &["run", "workflows/bad.yaml"]);
    (out.status.success(), text(&out.stderr))
}

const SEND: &str = "name: bad\nsteps:\n  - id: notify\n    action: send-mail\n    with:\n      account: demo\n      message:\n";

#[test]
fn bad_inputs_name_the_step_and_field_and_nothing_is_sent() {
    let dir = demo("");
    std::fs::write(dir.path().join("workflows/big.bin"), vec![7u8; 2048]).unwrap();
    let cases = [
        (
            format!(
                "{SEND}        to: \"ops@@demo.example\"\n        subject: hi\n        text: x\n"
            ),
            "step `notify` failed at `with.message.to[0].email`",
        ),
        (
            format!(
                "{SEND}        to: ops@demo.example\n        subject: \"hi\\r\\nBcc: victim@example.net\"\n        text: x\n"
            ),
            "step `notify` failed at `with.message.subject`: contains a line break",
        ),
        (
            format!(
                "{SEND}        to: ops@demo.example\n        subject: hi\n        attachments:\n          - name: big.bin\n            path: big.bin\n"
            ),
            "step `notify` failed at `with.message.attachments[0].data`: `big.bin` is 2048 bytes, over this account's attachment limit of 1024 bytes",
        ),
        (
            format!(
                "{SEND}        to: ops@demo.example\n        subject: \"${{{{ steps.nothere.subject }}}}\"\n"
            ),
            "step `notify` failed at `with.message.subject`: refers to unknown step `nothere`",
        ),
        (
            SEND.replace("account: demo", "account: nobody") + "        to: ops@demo.example\n",
            "step `notify` failed at `with.account`: unknown account `nobody`",
        ),
    ];
    let config = std::fs::read_to_string(dir.path().join("flowmail.toml")).unwrap();
    std::fs::write(
        dir.path().join("flowmail.toml"),
        config.replace(
            "max_attachment_bytes = 10485760",
            "max_attachment_bytes = 1024",
        ),
    )
    .unwrap();
    for (workflow, expected) in cases {
        let (ok, stderr) = run_workflow(dir.path(), &workflow);
        assert!(!ok, "{workflow} must fail");
        assert!(
            stderr.contains(expected),
            "expected `{expected}` in: {stderr}"
        );
        assert!(
            outbox(dir.path()).is_empty(),
            "nothing may reach the outbox: {workflow}"
        );
    }
}

#[test]
fn check_validates_without_running() {
    let dir = demo("");
    let ok = flowmail(dir.path(), &["check", "workflows/alert-digest.yaml"]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert!(text(&ok.stdout).contains("is valid"));
    assert!(!dir.path().join("var").exists(), "check touches nothing");
    std::fs::write(
        dir.path().join("workflows/bad.yaml"),
        format!("{SEND}        to: ops@demo.example\n        text: \"${{{{ trigger.count }}}}\"\n"),
    )
    .unwrap();
    let bad = flowmail(dir.path(), &["check", "workflows/bad.yaml"]);
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("no mailbox trigger"),
        "{}",
        text(&bad.stderr)
    );
}

#[test]
fn unknown_config_keys_are_refused() {
    let dir = demo("[accounts.demo.smtp]\nhost = \"x\"\n");
    let out = flowmail(dir.path(), &["check", "workflows/alert-digest.yaml"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("unknown field `smtp`"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn another_plugin_can_be_given() {
    let dir = demo("");
    let out = flowmail(
        dir.path(),
        &[
            "--plugin",
            "no-such.wasm",
            "run",
            "workflows/alert-digest.yaml",
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("reading the plugin no-such.wasm"),
        "{}",
        text(&out.stderr)
    );
}
