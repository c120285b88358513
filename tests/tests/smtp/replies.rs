//! Provider replies that no server here produces, from a scripted peer, and the fix each
//! one gets.

use flowmail::caps::transport::smtp::test_mail;
use flowmail_tests::Workspace;
use flowmail_tests::stack::PASSWORD;

use super::HEAD;

/// A scripted SMTP peer for provider replies that no server here produces: it answers
/// the one command named with the given reply, everything else as a plain server would.
async fn scripted_peer(on: &'static str, reply: &'static str) -> u16 {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (read, mut write) = socket.into_split();
            let mut lines = BufReader::new(read).lines();
            write.write_all(b"220 peer.test ESMTP\r\n").await.unwrap();
            while let Ok(Some(line)) = lines.next_line().await {
                let verb = line
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_ascii_uppercase();
                let answer = if verb == on {
                    format!("{reply}\r\n")
                } else {
                    match verb.as_str() {
                        "EHLO" => {
                            "250-peer.test\r\n250-AUTH PLAIN LOGIN XOAUTH2\r\n250 8BITMIME\r\n"
                                .into()
                        }
                        "AUTH" => "235 2.7.0 ok\r\n".into(),
                        "QUIT" => "221 bye\r\n".into(),
                        _ => "250 ok\r\n".into(),
                    }
                };
                if write.write_all(answer.as_bytes()).await.is_err() || verb == "QUIT" {
                    break;
                }
            }
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_provider_replies_come_with_their_fix() {
    let cases = [
        (
            "AUTH",
            "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant.",
            "auth-failed",
            "use the Graph communication type",
        ),
        (
            "AUTH",
            "535 5.7.3 Authentication unsuccessful",
            "auth-failed",
            "another account than the username",
        ),
        (
            "MAIL",
            "530 5.7.57 Client not authenticated to send mail.",
            "permanent",
            "turn authentication on",
        ),
        (
            "MAIL",
            "530 5.7.0 Must issue a STARTTLS command first",
            "permanent",
            "use STARTTLS",
        ),
        (
            "RCPT",
            "451 4.3.0 Temporary local problem",
            "transient",
            "451",
        ),
    ];
    for (on, reply, kind, fix) in cases {
        let port = scripted_peer(on, reply).await;
        let ws = Workspace::with_config("").unwrap();
        let pw = ws.path().join("pw");
        std::fs::write(&pw, PASSWORD).unwrap();
        ws.write_config(format!(
                "{HEAD}[accounts.p]\nfrom = \"ops@demo.example\"\n[accounts.p.transport]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\n\
                 port = {port}\ntls = \"none\"\n[accounts.p.auth]\nkind = \"basic\"\nusername = \"ops@demo.example\"\n\
                 password = {{ file = \"{}\" }}\n",
                pw.display()
            ),
        )
        .unwrap();
        let relay = flowmail::app::relay(&ws.config().unwrap(), "p", &Default::default()).unwrap();
        let report = test_mail::run("p", &relay, "ops@demo.example", "bob@demo.example").await;
        assert_eq!(
            report.error_kind.as_deref(),
            Some(kind),
            "{reply}: {}",
            report.render()
        );
        let last = report.stages.last().unwrap();
        assert!(last.detail.contains(fix), "{reply}: {}", last.detail);
        assert!(!last.detail.contains(PASSWORD));
    }
}

/// A peer that takes whole messages and answers each one's final dot by its ordinal:
/// `drop_after` (1-based) gets no reply at all, its connection closed at once, as when a
/// link dies between the server's queueing and its answer. Returns the port and the count
/// of messages whose content arrived.
async fn dropping_peer(drop_after: usize) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = std::sync::Arc::new(AtomicUsize::new(0));
    let count = received.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                if write.write_all(b"220 peer.test ESMTP\r\n").await.is_err() {
                    return;
                }
                let mut in_data = false;
                while let Ok(Some(line)) = lines.next_line().await {
                    let answer = if in_data {
                        if line != "." {
                            continue;
                        }
                        in_data = false;
                        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                        if n == drop_after {
                            return;
                        }
                        format!("250 2.0.0 Ok: queued as Q{n}\r\n")
                    } else {
                        match line.split_whitespace().next().unwrap_or_default() {
                            "EHLO" => "250-peer.test\r\n250 8BITMIME\r\n".to_owned(),
                            "DATA" => {
                                in_data = true;
                                "354 go ahead\r\n".to_owned()
                            }
                            "QUIT" => "221 bye\r\n".to_owned(),
                            _ => "250 ok\r\n".to_owned(),
                        }
                    };
                    if write.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_reply_was_lost_is_not_sent_again() {
    use flowmail::bindings::transport::Envelope;
    use flowmail::caps::transport::Transport;
    use std::sync::atomic::Ordering;
    // The first message is confirmed and its session pooled; the second one's reply is
    // lost after its content went out.
    let (port, received) = dropping_peer(2).await;
    let ws = Workspace::with_config("").unwrap();
    ws.write_config(format!(
            "{HEAD}[accounts.p]\nfrom = \"ops@demo.example\"\n[accounts.p.transport]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\n\
             port = {port}\ntls = \"none\"\n"
        ),
    )
    .unwrap();
    let relay = flowmail::app::relay(&ws.config().unwrap(), "p", &Default::default()).unwrap();
    let envelope = Envelope {
        sender: "ops@demo.example".into(),
        recipients: vec!["bob@demo.example".into()],
    };
    let message =
        b"From: ops@demo.example\r\nTo: bob@demo.example\r\nSubject: once\r\n\r\nhello\r\n";
    let first = relay.send(&envelope, message).await.unwrap();
    assert_eq!(first.reference.as_deref(), Some("Q1"));
    let lost = relay.send(&envelope, message).await.unwrap_err();
    match &lost {
        flowmail::bindings::MailError::Transient(text) => {
            assert!(text.contains("may have been queued"), "{text}")
        }
        other => panic!("expected transient, got {other:?}"),
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        received.load(Ordering::SeqCst),
        2,
        "the message whose reply was lost went out once, not again on a fresh session"
    );
    // The next message goes out normally on a new session.
    let third = relay.send(&envelope, message).await.unwrap();
    assert_eq!(third.reference.as_deref(), Some("Q3"));
}
