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

/// The app of `ws`, and the first page of its account `box`, from the start.
async fn first_page(
    ws: &Workspace,
) -> (
    std::sync::Arc<flowmail::app::App>,
    flowmail::bindings::actions::MailboxPage,
) {
    let (rt, _) = ws.app(None, Audit::default()).unwrap();
    let page = rt
        .runtime()
        .unwrap()
        .read_mailbox("read", "box", &all(), None, 10, None)
        .await
        .unwrap();
    (rt, page)
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
        let (rt, page) = first_page(&ws).await;
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
    let (_rt, page) = first_page(&ws).await;
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

/// A server that answers nothing of NOOP until STATUS and UID SEARCH arrived too (or 3 s
/// passed), and records which it was. It holds one message, UID 1, in a folder of
/// UIDVALIDITY 7.
fn holding_peer() -> (u16, std::sync::mpsc::Receiver<bool>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (told, together) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (sock, _) = listener.accept().unwrap();
        let mut out = sock.try_clone().unwrap();
        let mut lines = BufReader::new(sock);
        let read = |lines: &mut BufReader<std::net::TcpStream>| {
            let mut line = String::new();
            match lines.read_line(&mut line) {
                Ok(n) if n > 0 => Some(line.trim_end().to_owned()),
                _ => None,
            }
        };
        out.write_all(b"* OK [CAPABILITY IMAP4rev1 IDLE] ready\r\n")
            .unwrap();
        let body = mail("held");
        while let Some(line) = read(&mut lines) {
            let (tag, command) = line.split_once(' ').unwrap_or((&line, ""));
            let verb = command.to_ascii_uppercase();
            let reply = if verb.starts_with("SELECT") {
                format!(
                    "* 1 EXISTS\r\n* OK [UIDVALIDITY 7] v\r\n* OK [UIDNEXT 2] n\r\n{tag} OK [READ-WRITE] selected\r\n"
                )
            } else if verb == "NOOP" {
                // Wait for the two commands that follow, without answering.
                lines
                    .get_ref()
                    .set_read_timeout(Some(std::time::Duration::from_secs(3)))
                    .unwrap();
                let status = read(&mut lines);
                let search = status.as_ref().and_then(|_| read(&mut lines));
                lines.get_ref().set_read_timeout(None).unwrap();
                let arrived = status.is_some() && search.is_some();
                told.send(arrived).unwrap();
                let mut reply = format!("{tag} OK noop\r\n");
                for later in [status, search].into_iter().flatten() {
                    let (t, c) = later.split_once(' ').unwrap();
                    if c.to_ascii_uppercase().starts_with("STATUS") {
                        reply.push_str(&format!(
                            "* STATUS INBOX (UIDVALIDITY 7 UIDNEXT 2)\r\n{t} OK status\r\n"
                        ));
                    } else {
                        reply.push_str(&format!("* SEARCH 1\r\n{t} OK search\r\n"));
                    }
                }
                if !arrived {
                    // A client that waits for each answer: serve it one by one.
                    out.write_all(reply.as_bytes()).unwrap();
                    continue;
                }
                reply
            } else if verb.starts_with("STATUS") {
                format!("* STATUS INBOX (UIDVALIDITY 7 UIDNEXT 2)\r\n{tag} OK status\r\n")
            } else if verb.starts_with("UID SEARCH") {
                format!("* SEARCH 1\r\n{tag} OK search\r\n")
            } else if verb.starts_with("UID FETCH") {
                let head = format!(
                    "* 1 FETCH (UID 1 FLAGS () RFC822.SIZE {n} BODY[] {{{n}}}\r\n",
                    n = body.len()
                );
                let mut reply = head.into_bytes();
                reply.extend_from_slice(&body);
                reply.extend_from_slice(format!(")\r\n{tag} OK fetch\r\n").as_bytes());
                out.write_all(&reply).unwrap();
                continue;
            } else if verb.starts_with("LOGOUT") {
                format!("* BYE\r\n{tag} OK bye\r\n")
            } else {
                format!("{tag} OK done\r\n")
            };
            out.write_all(reply.as_bytes()).unwrap();
        }
    });
    (port, together)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_asks_for_the_folder_and_searches_it_in_one_round_trip() {
    let (port, together) = holding_peer();
    let ws = Workspace::with_scripted_imap(USER, port).unwrap();
    let (_rt, page) = first_page(&ws).await;
    assert!(
        together.recv().unwrap(),
        "STATUS and UID SEARCH were sent only after NOOP's answer"
    );
    let subjects: Vec<&str> = page.messages.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(subjects, ["held"]);
    assert_eq!(page.next_cursor, "7:1");
}
