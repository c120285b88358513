//! The SMTP transport against real postfix and dovecot on 127.0.0.1: TLS modes and
//! policy, PLAIN, LOGIN and XOAUTH2, refusals, a dead server, pooling, and what arrives.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod pipelining;
mod self_signed;
mod test_mail_stages;

use std::time::Duration;

use flowmail::bindings::MailError;
use flowmail::bindings::types::{Address, Attachment, OutgoingMessage};
use flowmail::caps::Audit;
use flowmail::caps::transport::smtp::test_mail;
use flowmail::runtime::StepError;
use flowmail::workflow::{Runner, Workflow};
use flowmail_tests::Workspace;
use flowmail_tests::oauth::OAuth;
use flowmail_tests::stack::{MailStack, PASSWORD, free_port};
use mail_parser::{MessageParser, MimeHeaders};

const HEAD: &str = "[store]\npath = \"var/flowmail.db\"\n[runtime]\ncache_dir = \"\"\n";

fn basic(
    ws_dir: &std::path::Path,
    name: &str,
    user: &str,
    password: &str,
    mechanism: Option<&str>,
) -> String {
    let file = ws_dir.join(format!("{name}.password"));
    std::fs::write(&file, password).unwrap();
    let mechanism = mechanism
        .map(|m| format!("mechanism = \"{m}\"\n"))
        .unwrap_or_default();
    format!(
        "[accounts.{name}.auth]\nkind = \"basic\"\nusername = \"{user}\"\npassword = {{ file = \"{}\" }}\n{mechanism}",
        file.display()
    )
}

fn message(to: &str, subject: &str) -> OutgoingMessage {
    OutgoingMessage {
        sender: None,
        to: vec![Address {
            name: Some("Bob Empfänger".into()),
            email: to.into(),
        }],
        cc: vec![],
        bcc: vec![],
        reply_to: vec![],
        subject: subject.into(),
        text: Some("Grüße aus flowmail — ✓ UTF-8 arrives intact.\n".into()),
        html: Some("<p>Grüße — <b>✓</b></p>".into()),
        attachments: vec![],
        forward_attachments: vec![],
        extra_headers: vec![],
    }
}

/// A workspace whose config is `HEAD` plus `accounts`, and its runtime.
fn runtime(
    accounts: impl FnOnce(&std::path::Path) -> String,
) -> (Workspace, std::sync::Arc<flowmail::app::App>) {
    let ws = Workspace::with_config("").unwrap();
    let config = format!("{HEAD}{}", accounts(ws.path()));
    ws.write_config(config).unwrap();
    let (rt, _) = ws.app(None, Audit::default()).unwrap();
    (ws, rt)
}

/// A runtime whose account `ops` (ops@demo.example) sends through `port` with a password.
fn ops_runtime(
    stack: &MailStack,
    port: u16,
    ssl: bool,
    password: &str,
    mechanism: Option<&str>,
) -> (Workspace, std::sync::Arc<flowmail::app::App>) {
    runtime(|dir| {
        stack.account(
            "ops",
            "ops@demo.example",
            port,
            ssl,
            &basic(dir, "ops", "ops@demo.example", password, mechanism),
        )
    })
}

fn expect_mail_error(r: Result<impl std::fmt::Debug, StepError>) -> MailError {
    match r {
        Err(StepError::Mail(e)) => e,
        other => panic!("expected a mail error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_with_plain_delivers_utf8_intact() {
    let stack = MailStack::start(None).unwrap();
    let (_ws, rt) = runtime(|dir| {
        stack.account(
            "ops",
            "Ops <ops@demo.example>",
            stack.ports.submission,
            false,
            &basic(dir, "ops", "ops@demo.example", PASSWORD, Some("plain")),
        )
    });
    let receipt = rt
        .runtime()
        .unwrap()
        .send_mail(
            "send",
            "ops",
            &message("bob@demo.example", "Prüfung: Lieferung ✓"),
        )
        .await
        .unwrap();
    assert_eq!(receipt.transport, "smtp");
    let queue_id = receipt.reference.clone().expect("postfix names a queue id");
    let got = stack
        .wait_for_mail("bob@demo.example", 1, Duration::from_secs(20))
        .unwrap();
    let m = MessageParser::default().parse(&got[0]).unwrap();
    assert_eq!(m.subject(), Some("Prüfung: Lieferung ✓"));
    assert_eq!(m.message_id(), Some(receipt.message_id.as_str()));
    assert_eq!(
        m.body_text(0).unwrap().trim_end(),
        "Grüße aus flowmail — ✓ UTF-8 arrives intact."
    );
    assert!(m.body_html(0).unwrap().contains("<b>✓</b>"));
    assert_eq!(
        m.to().unwrap().first().unwrap().name(),
        Some("Bob Empfänger")
    );
    let log = stack.log_with("sasl_method=PLAIN", 1);
    assert!(
        log.contains(&format!("{queue_id}: client=localhost")),
        "the queue id is postfix's"
    );
    assert!(log.contains("sasl_method=PLAIN"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_tls_with_login_delivers_a_10_mb_attachment_intact() {
    let stack = MailStack::start(None).unwrap();
    let (_ws, rt) = ops_runtime(&stack, stack.ports.smtps, true, PASSWORD, Some("login"));
    let mut data = Vec::with_capacity(10_000_000);
    let mut x: u32 = 0x1234_5678;
    while data.len() < 10_000_000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(10_000_000);
    let mut msg = message("carol@demo.example", "10 MB");
    msg.attachments.push(Attachment {
        name: "Messdaten-März.bin".into(),
        content_type: "application/octet-stream".into(),
        data: data.clone(),
        content_id: None,
    });
    rt.runtime()
        .unwrap()
        .send_mail("send", "ops", &msg)
        .await
        .unwrap();
    let got = stack
        .wait_for_mail("carol@demo.example", 1, Duration::from_secs(60))
        .unwrap();
    let m = MessageParser::default().parse(&got[0]).unwrap();
    let a = m.attachment(0).unwrap();
    assert_eq!(a.attachment_name(), Some("Messdaten-März.bin"));
    assert!(
        a.contents() == data.as_slice(),
        "the 10 MB attachment must arrive byte for byte"
    );
    let log = stack.log_with("sasl_method=LOGIN", 1);
    assert!(log.contains("sasl_method=LOGIN"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_auth_failed_and_never_echoed() {
    let stack = MailStack::start(None).unwrap();
    let (_ws, rt) = ops_runtime(
        &stack,
        stack.ports.submission,
        false,
        "wrong-password-1234",
        None,
    );
    let e = expect_mail_error(
        rt.runtime()
            .unwrap()
            .send_mail("send", "ops", &message("bob@demo.example", "x"))
            .await,
    );
    let MailError::AuthFailed(text) = &e else {
        panic!("expected auth-failed, got {e:?}")
    };
    assert!(text.contains("535"), "{text}");
    assert!(
        text.contains("check the account's username and password"),
        "{text}"
    );
    assert!(!text.contains("wrong-password-1234"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sending_without_authentication_is_refused() {
    let stack = MailStack::start(None).unwrap();
    let (_ws, rt) = runtime(|_| {
        stack.account(
            "anon",
            "ops@demo.example",
            stack.ports.submission,
            false,
            "",
        )
    });
    let e = expect_mail_error(
        rt.runtime()
            .unwrap()
            .send_mail("send", "anon", &message("bob@demo.example", "x"))
            .await,
    );
    let MailError::Permanent(text) = &e else {
        panic!("expected permanent, got {e:?}")
    };
    assert!(
        text.contains("554") && text.contains("authentication"),
        "{text}"
    );
    assert!(
        stack
            .wait_for_mail("bob@demo.example", 1, Duration::from_millis(500))
            .is_err(),
        "nothing was delivered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_server_is_transient() {
    let port = free_port().unwrap();
    let (_ws, rt) = runtime(|_| {
        format!(
            "[accounts.down]\nfrom = \"ops@demo.example\"\n[accounts.down.transport]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {port}\n"
        )
    });
    let e = expect_mail_error(
        rt.runtime()
            .unwrap()
            .send_mail("send", "down", &message("bob@demo.example", "x"))
            .await,
    );
    let MailError::Transient(text) = &e else {
        panic!("expected transient, got {e:?}")
    };
    assert!(text.contains("refused the connection"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xoauth2_works_with_a_valid_token_and_fails_with_a_revoked_one() {
    let oauth = OAuth::start().unwrap();
    let stack = MailStack::start(Some(&oauth)).unwrap();
    let (ws, rt) = runtime(|dir| {
        let token = dir.join("token");
        stack.account(
            "o365",
            "owner@demo.example",
            stack.ports.submission,
            false,
            &format!(
                "[accounts.o365.auth]\nkind = \"oauth2\"\nusername = \"owner@demo.example\"\naccess_token = {{ file = \"{}\" }}\n",
                token.display()
            ),
        )
    });
    std::fs::write(
        ws.path().join("token"),
        oauth.token_for("owner@demo.example").unwrap(),
    )
    .unwrap();
    rt.runtime()
        .unwrap()
        .send_mail("send", "o365", &message("dave@demo.example", "via XOAUTH2"))
        .await
        .unwrap();
    let got = stack
        .wait_for_mail("dave@demo.example", 1, Duration::from_secs(20))
        .unwrap();
    assert_eq!(
        MessageParser::default().parse(&got[0]).unwrap().subject(),
        Some("via XOAUTH2")
    );

    // Another user's From is refused before anything is sent.
    let mut other = message("dave@demo.example", "spoof");
    other.sender = Some(Address {
        name: None,
        email: "ceo@demo.example".into(),
    });
    let e = expect_mail_error(
        rt.runtime()
            .unwrap()
            .send_mail("send", "o365", &other)
            .await,
    );
    assert!(
        matches!(&e, MailError::InvalidInput(f) if f.field == "message.sender"),
        "{e:?}"
    );

    oauth.revoke_all().unwrap();
    // A new session is needed for the server to check the token again.
    stack.restart_postfix().unwrap();
    let e = expect_mail_error(
        rt.runtime()
            .unwrap()
            .send_mail("send", "o365", &message("dave@demo.example", "revoked"))
            .await,
    );
    assert!(
        matches!(&e, MailError::AuthFailed(t) if t.contains("535")),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_is_reused_and_replaced_once_when_broken() {
    let stack = MailStack::start(None).unwrap();
    let (_ws, rt) = ops_runtime(&stack, stack.ports.submission, false, PASSWORD, None);
    for i in 0..3 {
        rt.runtime()
            .unwrap()
            .send_mail(
                "send",
                "ops",
                &message("erin@demo.example", &format!("pooled {i}")),
            )
            .await
            .unwrap();
    }
    let log = stack.log_with("sasl_method=PLAIN", 3);
    assert_eq!(
        log.matches("sasl_method=PLAIN").count(),
        3,
        "three messages:\n{log}"
    );
    assert_eq!(
        log.matches("TLS connection established from localhost")
            .count(),
        1,
        "over one session:\n{log}"
    );
    stack.restart_postfix().unwrap();
    rt.runtime()
        .unwrap()
        .send_mail(
            "send",
            "ops",
            &message("erin@demo.example", "after restart"),
        )
        .await
        .unwrap();
    stack
        .wait_for_mail("erin@demo.example", 4, Duration::from_secs(20))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_share_at_most_max_connections_sessions() {
    let stack = MailStack::start(None).unwrap();
    let account = |dir: &std::path::Path, limit: &str| {
        stack
            .account(
                "ops",
                "ops@demo.example",
                stack.ports.submission,
                false,
                &basic(dir, "ops", "ops@demo.example", PASSWORD, None),
            )
            .replace(
                "timeout_secs = 10\n",
                &format!("timeout_secs = 10\nmax_connections = {limit}\n"),
            )
    };
    // Out of range: refused naming the field and the range.
    let ws = Workspace::with_config("").unwrap();
    ws.write_config(format!("{HEAD}{}", account(ws.path(), "0")))
        .unwrap();
    let err = ws.app(None, Audit::default()).err().unwrap();
    assert!(
        format!("{err:#}")
            .contains("accounts.ops.transport.max_connections: 0 is out of range; use 1 to 100"),
        "{err:#}"
    );

    // Twelve sends at once over at most two sessions; each waits for a free one.
    let (_ws, rt) = runtime(|dir| account(dir, "2"));
    let sends: Vec<_> = (0..12)
        .map(|i| {
            let rt = rt.clone();
            tokio::spawn(async move {
                rt.runtime()
                    .unwrap()
                    .send_mail(
                        "send",
                        "ops",
                        &message("erin@demo.example", &format!("at once {i}")),
                    )
                    .await
            })
        })
        .collect();
    for s in sends {
        s.await.unwrap().unwrap();
    }
    let log = stack.log_with("sasl_method=PLAIN", 12);
    assert_eq!(log.matches("sasl_method=PLAIN").count(), 12, "{log}");
    let sessions = log
        .matches("TLS connection established from localhost")
        .count();
    assert!(
        (1..=2).contains(&sessions),
        "twelve messages over at most two sessions, not {sessions}:\n{log}"
    );
    stack
        .wait_for_mail("erin@demo.example", 12, Duration::from_secs(20))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_workflow_delivers_through_postfix() {
    let stack = MailStack::start(None).unwrap();
    let ws = Workspace::new("").unwrap();
    let config = std::fs::read_to_string(ws.path().join("flowmail.toml")).unwrap();
    let smtp = stack.account(
        "demo",
        "unused",
        stack.ports.submission,
        false,
        &basic(ws.path(), "demo", "flowmail@demo.example", PASSWORD, None),
    );
    let transport = smtp.split_once("[accounts.demo.transport]").unwrap().1;
    let config = config.replace(
        "[accounts.demo.transport]\nkind = \"outbox\"\ndir = \"var/outbox\"\n",
        "",
    ) + "\n[accounts.demo.transport]"
        + transport;
    ws.write_config(config).unwrap();
    let (rt, _store) = ws.app(None, Audit::default()).unwrap();
    let wf = Workflow::load(&ws.path().join("workflows/alert-digest.yaml")).unwrap();
    wf.check(&ws.config().unwrap()).unwrap();
    let report = flowmail::workflow::run(&Runner::new(&rt).unwrap(), &wf)
        .await
        .unwrap();
    assert_eq!(report.sent.len(), 1);
    let got = stack
        .wait_for_mail("oncall@demo.example", 1, Duration::from_secs(20))
        .unwrap();
    let m = MessageParser::default().parse(&got[0]).unwrap();
    assert_eq!(m.subject(), Some("Alert digest: 4 new alert(s)"));
    let names: Vec<&str> = m
        .attachments()
        .filter_map(|a| a.attachment_name())
        .collect();
    assert_eq!(names, ["backup.log", "usage.png"]);
    assert!(ws.outbox().is_empty());
}

mod replies;
