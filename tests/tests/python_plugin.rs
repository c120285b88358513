//! The contract implemented in another language: `examples/python-plugin/`, built with
//! componentize-py by its own script and loaded with `--plugin`, runs the demo against
//! the demo Maildir and the file outbox, and refuses bad input naming the field.
//!
//! One test, so that the debug host compiles the large component once: every run shares
//! the workspace's compiled-component cache.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use flowmail_tests::{Workspace, flowmail_bin, repo};
use mail_parser::{MessageParser, MimeHeaders};

/// Builds the Python plugin with its script into `dir`.
fn build_plugin(dir: &Path) -> PathBuf {
    let out = dir.join("flowmail-python.wasm");
    let script = repo().join("examples/python-plugin/build.sh");
    let built = Command::new("bash")
        .arg(&script)
        .arg(&out)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        built.status.success(),
        "{} failed (it needs python3 with venv: `apt-get install -y python3 python3-venv`, \
         and reaches the Python registry once for componentize-py):\n{}{}",
        script.display(),
        String::from_utf8_lossy(&built.stdout),
        String::from_utf8_lossy(&built.stderr)
    );
    out
}

fn run(ws: &Workspace, plugin: &Path, workflow: &str) -> Output {
    Command::new(flowmail_bin())
        .current_dir(ws.path())
        .env_remove("RUST_LOG")
        .arg("--plugin")
        .arg(plugin)
        .args(["run", workflow])
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn write_workflow(ws: &Workspace, name: &str, body: &str) -> String {
    let path = format!("workflows/{name}.yaml");
    std::fs::write(ws.path().join(&path), body).unwrap();
    path
}

fn send_step(message: &str) -> String {
    format!(
        "name: probe\nsteps:\n  - id: send\n    action: send-mail\n    with:\n      account: demo\n      message: {message}\n"
    )
}

/// Runs `workflow`, which must fail on `field`, and checks that nothing was sent.
fn refused(ws: &Workspace, plugin: &Path, workflow: &str, field: &str, sent_before: usize) {
    let out = run(ws, plugin, workflow);
    let all = text(&out);
    assert!(!out.status.success(), "{workflow} must fail:\n{all}");
    assert!(all.contains(field), "the error must name `{field}`:\n{all}");
    assert!(
        !all.contains("the plugin failed"),
        "bad input is a contract error, not a fault of the plugin:\n{all}"
    );
    assert_eq!(ws.outbox().len(), sent_before, "nothing may be sent");
}

#[test]
fn the_python_plugin_runs_the_demo_and_refuses_bad_input_by_field() {
    let build = tempfile::tempdir().unwrap();
    let plugin = build_plugin(build.path());
    let ws = Workspace::new("").unwrap();

    // The demo: the digest of the alert mails, with their attachments forwarded.
    let out = run(&ws, &plugin, "workflows/alert-digest.yaml");
    let all = text(&out);
    assert!(out.status.success(), "the demo failed:\n{all}");
    assert!(all.contains("4 matched"), "{all}");
    assert!(
        all.contains("is skipped: it has no From address"),
        "the message without From is reported and left out:\n{all}"
    );
    let sent = ws.outbox();
    assert_eq!(sent.len(), 1, "{all}");
    let eml = std::fs::read(&sent[0]).unwrap();
    assert!(
        !eml.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'),
        "every line ends in CRLF"
    );
    let digest = MessageParser::default().parse(&eml).unwrap();
    assert_eq!(digest.subject(), Some("Alert digest: 4 new alert(s)"));
    let header = |name: &str| {
        digest
            .header_raw(name)
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    assert_eq!(header("X-Flowmail-Plugin"), "python-example");
    assert_eq!(header("X-Flowmail-Workflow"), "alert-digest");
    let body = digest.body_text(0).unwrap().replace("\r\n", "\n");
    assert!(body.contains("Température élevée"), "{body}");
    assert!(
        body.contains("-- \nSent by flowmail through the account `demo`."),
        "this plugin's signature ends the text:\n{body}"
    );
    assert!(
        digest
            .body_html(0)
            .unwrap()
            .contains("<h2>4 new alert(s)</h2>")
    );

    // The attachments arrive byte for byte as they are in the demo mailbox.
    let source =
        std::fs::read(repo().join("workflows/demo-mailbox/new/1795428312.M4P100.demo")).unwrap();
    let source = MessageParser::default().parse(&source).unwrap();
    let files = |m: &mail_parser::Message| {
        m.attachments()
            .map(|a| {
                (
                    a.attachment_name().unwrap_or_default().to_owned(),
                    a.contents().to_vec(),
                )
            })
            .collect::<Vec<_>>()
    };
    let expected = files(&source);
    assert_eq!(
        expected.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["backup.log", "usage.png"]
    );
    assert_eq!(files(&digest), expected);

    // Run again: the cursor remembers what was handled, and nothing is sent.
    let again = run(&ws, &plugin, "workflows/alert-digest.yaml");
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(ws.outbox().len(), 1, "{}", text(&again));

    // Bad input is refused by the plugin, naming the field; nothing is sent.
    let bad_address = write_workflow(
        &ws,
        "bad-address",
        &send_step("{ to: [{ email: \"oncall@@demo.example\" }], subject: s, text: t }"),
    );
    refused(&ws, &plugin, &bad_address, "message.to[0].email", 1);
    let bad_domain = write_workflow(
        &ws,
        "bad-domain",
        &send_step(
            "{ to: ops@demo.example, cc: [{ email: \"x@-bad-.example\" }], subject: s, text: t }",
        ),
    );
    refused(&ws, &plugin, &bad_domain, "message.cc[0].email", 1);
    let crlf = write_workflow(
        &ws,
        "crlf",
        &send_step(
            "{ to: ops@demo.example, subject: \"hi\\r\\nBcc: evil@demo.example\", text: t }",
        ),
    );
    refused(&ws, &plugin, &crlf, "message.subject", 1);
    let header = write_workflow(
        &ws,
        "header",
        &send_step(
            "{ to: ops@demo.example, subject: s, text: t, headers: { \"X-Ok\": \"a\\nb\" } }",
        ),
    );
    refused(&ws, &plugin, &header, "message.extra_headers[0].value", 1);
    let since = write_workflow(
        &ws,
        "since",
        "name: since\nsteps:\n  - id: read\n    action: read-mailbox\n    with:\n      account: demo\n      filter: { since: yesterday }\n",
    );
    refused(&ws, &plugin, &since, "filter.since", 1);

    // An attachment over the account's limit, which is lowered for it.
    let config = std::fs::read_to_string(ws.path().join("flowmail.toml")).unwrap();
    ws.write_config(config.replace(
        "max_attachment_bytes = 10485760",
        "max_attachment_bytes = 1000",
    ))
    .unwrap();
    std::fs::write(ws.path().join("workflows/big.txt"), "x".repeat(2000)).unwrap();
    let big = write_workflow(
        &ws,
        "big",
        &send_step(
            "{ to: ops@demo.example, subject: s, text: t, attachments: [{ name: big.txt, path: big.txt }] }",
        ),
    );
    refused(&ws, &plugin, &big, "message.attachments[0].data", 1);

    // And a good message after all that, HTML only: this plugin derives the text part.
    let html = write_workflow(
        &ws,
        "html",
        &send_step(
            "{ to: \"Ops <ops@demo.example>\", subject: \"Café ☕\", html: \"<p>Hello <b>there</b></p><ul><li>one</li></ul>\" }",
        ),
    );
    let out = run(&ws, &plugin, &html);
    assert!(out.status.success(), "{}", text(&out));
    let sent = ws.outbox();
    assert_eq!(sent.len(), 2);
    let eml = std::fs::read(&sent[1]).unwrap();
    let m = MessageParser::default().parse(&eml).unwrap();
    assert_eq!(m.subject(), Some("Café ☕"));
    let body = m.body_text(0).unwrap();
    assert!(body.contains("Hello there"), "{body}");
    assert!(body.contains("- one"), "{body}");
    assert_eq!(
        m.to().and_then(|a| a.first()).and_then(|a| a.address()),
        Some("ops@demo.example")
    );
}
