//! The IMAP mailbox against real dovecot on 127.0.0.1: LOGIN over STARTTLS and implicit
//! TLS, XOAUTH2, flags and moves, malformed messages, and a mailbox-triggered workflow.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use flowmail::bindings::actions::Filter;
use flowmail::bindings::mailbox::Flag;
use flowmail::caps::Audit;
use flowmail::workflow::{Runner, Workflow};
use flowmail_tests::Workspace;
use flowmail_tests::oauth::OAuth;
use flowmail_tests::stack::MailStack;

const USER: &str = "inbox@demo.example";

fn mail(subject: &str) -> Vec<u8> {
    format!("From: Grafana <alerts@grafana.demo.example>\r\nTo: {USER}\r\nSubject: {subject}\r\nDate: Mon, 23 Nov 2026 08:00:00 +0000\r\nMessage-ID: <{}@demo.example>\r\n\r\nbody of {subject}\r\n", subject.replace(' ', "-"))
        .into_bytes()
}

fn imap_account(
    stack: &MailStack,
    dir: &std::path::Path,
    port: u16,
    ssl: bool,
    auth: &str,
) -> String {
    stack
        .imap_config(dir, USER, port, ssl, "INBOX", auth)
        .unwrap()
}

fn all() -> Filter {
    Filter {
        sender_contains: None,
        subject_contains: None,
        has_attachment: None,
        since: None,
        unseen: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_over_starttls_and_implicit_tls_reads_parses_and_reports_malformed() {
    let stack = MailStack::start(None).unwrap();
    stack
        .seed(
            USER,
            "",
            &[
                &mail("[ALERT] one"),
                b"no headers at all",
                &mail("weekly report"),
            ],
        )
        .unwrap();
    for (port, ssl) in [(stack.ports.imap, false), (stack.ports.imaps, true)] {
        let ws = Workspace::with_config("").unwrap();
        ws.write_config(imap_account(&stack, ws.path(), port, ssl, ""))
            .unwrap();
        let (rt, _) = ws.app(None, Audit::default()).unwrap();
        let page = rt
            .runtime()
            .unwrap()
            .read_mailbox("read", "box", &all(), None, 10, None)
            .await
            .unwrap();
        let subjects: Vec<&str> = page.messages.iter().map(|m| m.subject.as_str()).collect();
        assert_eq!(subjects, ["[ALERT] one", "weekly report"], "ssl = {ssl}");
        assert_eq!(page.skipped.len(), 1);
        assert!(page.skipped[0].reason.contains("header"));
        assert!(
            page.next_cursor.ends_with(":3"),
            "past all three messages: {}",
            page.next_cursor
        );
        let again = rt
            .runtime()
            .unwrap()
            .read_mailbox(
                "read",
                "box",
                &all(),
                Some(page.next_cursor.clone()),
                10,
                None,
            )
            .await
            .unwrap();
        assert!(again.messages.is_empty() && again.skipped.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_auth_failed() {
    let stack = MailStack::start(None).unwrap();
    let ws = Workspace::with_config("").unwrap();
    let config = imap_account(&stack, ws.path(), stack.ports.imap, false, "");
    ws.write_config(config).unwrap();
    std::fs::write(ws.path().join("imap-password"), "wrong").unwrap();
    let (rt, _) = ws.app(None, Audit::default()).unwrap();
    let e = rt
        .runtime()
        .unwrap()
        .read_mailbox("read", "box", &all(), None, 10, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("authentication failed") && e.contains("refused the credentials"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xoauth2_reads_the_mailbox() {
    let oauth = OAuth::start().unwrap();
    let stack = MailStack::start(Some(&oauth)).unwrap();
    stack.seed(USER, "", &[&mail("via xoauth2")]).unwrap();
    let ws = Workspace::with_config("").unwrap();
    std::fs::write(ws.path().join("token"), oauth.token_for(USER).unwrap()).unwrap();
    let auth = format!(
        "[accounts.box.auth]\nkind = \"oauth2\"\nusername = \"{USER}\"\naccess_token = {{ file = \"{}\" }}\n",
        ws.path().join("token").display()
    );
    ws.write_config(imap_account(
        &stack,
        ws.path(),
        stack.ports.imaps,
        true,
        &auth,
    ))
    .unwrap();
    let (rt, _) = ws.app(None, Audit::default()).unwrap();
    let page = rt
        .runtime()
        .unwrap()
        .read_mailbox("read", "box", &all(), None, 10, None)
        .await
        .unwrap();
    assert_eq!(page.messages[0].subject, "via xoauth2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_and_moves_reach_the_server() {
    let stack = MailStack::start(None).unwrap();
    stack.seed(USER, "", &[&mail("a"), &mail("b")]).unwrap();
    stack.seed(USER, "Archive", &[]).unwrap();
    let ws = Workspace::with_config("").unwrap();
    ws.write_config(imap_account(&stack, ws.path(), stack.ports.imap, false, ""))
        .unwrap();
    let config = ws.config().unwrap();
    let app = flowmail::app::App::open(&config, flowmail::app::Plugin::Embedded).unwrap();
    let imap = app.mailbox("box").unwrap();
    let ids: Vec<String> = imap
        .fetch_after(None, 10, flowmail_tests::no_search(), None)
        .await
        .unwrap()
        .messages
        .into_iter()
        .map(|m| m.id)
        .collect();
    let (a, b) = (ids[0].clone(), ids[1].clone());
    imap.set_flags(vec![a.clone()], vec![Flag::Seen], vec![])
        .await
        .unwrap();
    assert_eq!(imap.fetch(a.clone()).await.unwrap().flags, ["\\Seen"]);
    imap.move_to(vec![b.clone()], "Archive".into())
        .await
        .unwrap();
    let left = imap
        .fetch_after(None, 10, flowmail_tests::no_search(), None)
        .await
        .unwrap();
    assert_eq!(
        left.messages
            .iter()
            .map(|m| m.id.as_str())
            .collect::<Vec<_>>(),
        [a.as_str()]
    );
    assert!(matches!(
        imap.fetch(b).await,
        Err(flowmail::bindings::MailError::NotFound(_))
    ));
    // An id from another UIDVALIDITY names nothing; text the mailbox never wrote is
    // refused with the field.
    let (validity, uid) = a.split_once(':').unwrap();
    let stale = format!("{}:{uid}", validity.parse::<u32>().unwrap() + 1);
    assert!(matches!(
        imap.fetch(stale).await,
        Err(flowmail::bindings::MailError::NotFound(m)) if m.contains("UIDVALIDITY")
    ));
    // An id of the right UIDVALIDITY that no message has: nothing changes, and it is named.
    let nobody = format!("{validity}:999");
    assert!(matches!(
        imap.set_flags(vec![a.clone(), nobody.clone()], vec![Flag::Flagged], vec![]).await,
        Err(flowmail::bindings::MailError::NotFound(m)) if m.contains("UID 999")
    ));
    assert!(
        !imap
            .fetch(a.clone())
            .await
            .unwrap()
            .flags
            .contains(&"\\Flagged".to_owned()),
        "the existing message was not changed either"
    );
    assert!(matches!(
        imap.move_to(vec![nobody], "Archive".into()).await,
        Err(flowmail::bindings::MailError::NotFound(_))
    ));
    assert!(matches!(
        imap.set_flags(vec!["AAMkAGI2".into()], vec![Flag::Seen], vec![]).await,
        Err(flowmail::bindings::MailError::InvalidInput(e)) if e.field == "ids[0]"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailbox_triggered_workflow_runs_once_per_new_mail() {
    let stack = MailStack::start(None).unwrap();
    stack
        .seed(USER, "", &[&mail("[ALERT] disk"), &mail("lunch")])
        .unwrap();
    let ws = Workspace::with_config("").unwrap();
    ws.write_config(imap_account(&stack, ws.path(), stack.ports.imap, false, ""))
        .unwrap();
    let wf_text = std::fs::read_to_string(ws.path().join("workflows/alert-digest.yaml"))
        .unwrap()
        .replace("account: demo", "account: box");
    std::fs::write(ws.path().join("workflows/imap.yaml"), wf_text).unwrap();
    let wf = Workflow::load(&ws.path().join("workflows/imap.yaml")).unwrap();
    wf.check(&ws.config().unwrap()).unwrap();
    let (rt, _store) = ws.app(None, Audit::default()).unwrap();
    let first = flowmail::workflow::run(&Runner::new(&rt).unwrap(), &wf)
        .await
        .unwrap();
    assert_eq!(first.sent.len(), 1);
    let second = flowmail::workflow::run(&Runner::new(&rt).unwrap(), &wf)
        .await
        .unwrap();
    assert!(second.sent.is_empty(), "nothing new, nothing sent");
    assert_eq!(ws.outbox().len(), 1);
}
