//! PIPELINING (RFC 2920): MAIL, RCPT and DATA in one write where the server offers it, one
//! by one where it does not, and a recipient refused among accepted ones, on real postfix.

use std::sync::{Arc, Mutex};

use flowmail::bindings::MailError;
use flowmail::bindings::transport::Envelope;
use flowmail::caps::transport::Transport;
use flowmail_tests::stack::REFUSED;

use super::*;

/// The commands a peer read, grouped by the read that brought them.
type Reads = Arc<Mutex<Vec<Vec<String>>>>;

/// A peer that offers PIPELINING or not, accepts everything, and records which commands
/// each of its reads brought in.
async fn recording_peer(pipelining: bool) -> (u16, Reads) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let reads: Reads = Arc::default();
    let seen = reads.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                if socket.write_all(b"220 peer.test ESMTP\r\n").await.is_err() {
                    return;
                }
                let (mut pending, mut in_data) = (Vec::new(), false);
                let mut chunk = vec![0u8; 64 * 1024];
                loop {
                    let n = match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    pending.extend_from_slice(&chunk[..n]);
                    let (mut verbs, mut answer) = (Vec::new(), String::new());
                    while let Some(end) = pending.windows(2).position(|w| w == b"\r\n") {
                        let line = String::from_utf8_lossy(&pending[..end]).into_owned();
                        pending.drain(..end + 2);
                        if in_data {
                            if line == "." {
                                in_data = false;
                                answer.push_str("250 2.0.0 Ok: queued as P1\r\n");
                            }
                            continue;
                        }
                        let verb = line.split([' ', ':']).next().unwrap_or_default().to_owned();
                        answer.push_str(match verb.as_str() {
                            "EHLO" if pipelining => {
                                "250-peer.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
                            }
                            "EHLO" => "250-peer.test\r\n250 8BITMIME\r\n",
                            "DATA" => {
                                in_data = true;
                                "354 go ahead\r\n"
                            }
                            "QUIT" => "221 bye\r\n",
                            _ => "250 ok\r\n",
                        });
                        verbs.push(verb);
                    }
                    if !verbs.is_empty() {
                        seen.lock().unwrap().push(verbs);
                    }
                    if socket.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, reads)
}

fn peer_relay(ws: &Workspace, port: u16) -> flowmail::caps::transport::smtp::Relay {
    ws.write_config(format!(
        "{HEAD}[accounts.p]\nfrom = \"ops@demo.example\"\n[accounts.p.transport]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\n\
         port = {port}\ntls = \"none\"\n"
    ))
    .unwrap();
    flowmail::app::relay(&ws.config().unwrap(), "p", &Default::default()).unwrap()
}

const CONTENT: &[u8] =
    b"From: ops@demo.example\r\nTo: bob@demo.example\r\nSubject: grouped\r\n\r\nhello\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_rcpt_and_data_go_in_one_write_only_to_a_server_that_offers_pipelining() {
    let envelope = Envelope {
        sender: "ops@demo.example".into(),
        recipients: vec!["bob@demo.example".into(), "carol@demo.example".into()],
    };
    let group = |reads: &Reads| -> Vec<Vec<String>> {
        reads
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.iter().any(|v| v == "MAIL" || v == "RCPT" || v == "DATA"))
            .cloned()
            .collect()
    };
    let ws = Workspace::with_config("").unwrap();
    let (port, reads) = recording_peer(true).await;
    let relay = peer_relay(&ws, port);
    for _ in 0..2 {
        let delivery = relay.send(&envelope, CONTENT).await.unwrap();
        assert_eq!(delivery.reference.as_deref(), Some("P1"));
    }
    let one_write = vec!["MAIL", "RCPT", "RCPT", "DATA"];
    assert_eq!(
        group(&reads),
        vec![one_write.clone(), one_write],
        "each message's commands in one write, over the pooled session too"
    );

    let (port, reads) = recording_peer(false).await;
    let relay = peer_relay(&ws, port);
    relay.send(&envelope, CONTENT).await.unwrap();
    assert_eq!(
        group(&reads),
        vec![vec!["MAIL"], vec!["RCPT"], vec!["RCPT"], vec!["DATA"]],
        "one command at a time to a server without PIPELINING"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_recipients_send_nothing_and_the_session_goes_on_where_it_can() {
    let stack = MailStack::start(None).unwrap();
    let (ws, _rt) = ops_runtime(&stack, stack.ports.submission, false, PASSWORD, None);
    let relay = flowmail::app::relay(&ws.config().unwrap(), "ops", &Default::default()).unwrap();
    // postfix offers PIPELINING: its Test Mail report says so.
    let report = test_mail::run("ops", &relay, "ops@demo.example", "dave@demo.example").await;
    assert!(report.ok, "{}", report.render());
    assert!(
        report.render().contains("PIPELINING"),
        "{}",
        report.render()
    );
    // Every recipient refused: postfix refuses DATA too, the session stays in step and is
    // kept (RSET) for the next message.
    let nobody = Envelope {
        sender: "ops@demo.example".into(),
        recipients: vec![REFUSED.into()],
    };
    let e = relay
        .send(&nobody, b"Subject: none\r\n\r\nnone\r\n")
        .await
        .unwrap_err();
    assert!(
        matches!(&e, MailError::Permanent(t) if t.contains(REFUSED)),
        "{e:?}"
    );
    // postfix accepts dave, refuses the other, and still answers DATA with 354: the
    // content must not follow, or dave would get a message its sender was told failed.
    // That session can only be closed.
    let envelope = Envelope {
        sender: "ops@demo.example".into(),
        recipients: vec!["dave@demo.example".into(), REFUSED.into()],
    };
    let message =
        b"From: ops@demo.example\r\nTo: dave@demo.example\r\nSubject: half\r\n\r\nnever\r\n";
    let e = relay.send(&envelope, message).await.unwrap_err();
    let MailError::Permanent(text) = &e else {
        panic!("expected permanent, got {e:?}")
    };
    assert!(
        text.contains(REFUSED) && text.contains("no such mailbox here"),
        "the refusal names the recipient: {text}"
    );
    assert!(
        !text.contains("auth section"),
        "an authenticated account is not told to authenticate: {text}"
    );
    // The next message goes out, on a session in step with the server.
    let envelope = Envelope {
        sender: "ops@demo.example".into(),
        recipients: vec!["dave@demo.example".into()],
    };
    let message =
        b"From: ops@demo.example\r\nTo: dave@demo.example\r\nSubject: whole\r\n\r\nonce\r\n";
    relay.send(&envelope, message).await.unwrap();
    let got = stack
        .wait_for_mail("dave@demo.example", 2, std::time::Duration::from_secs(20))
        .unwrap();
    // Test Mail's message and the whole one; give a stray third one time to show.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let got_now = stack
        .wait_for_mail("dave@demo.example", 2, std::time::Duration::ZERO)
        .unwrap();
    assert_eq!(got.len(), 2);
    // Three sessions: Test Mail's; the one reset after the refusal and closed after the
    // 354; and the last message's. The reset session's closing line counts its RSET.
    let log = stack.log_with("rset=1", 1);
    assert_eq!(
        log.matches("TLS connection established from localhost")
            .count(),
        3,
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("disconnect from") && l.contains("mail=2") && l.contains("rset=1")),
        "{log}"
    );
    assert_eq!(
        got_now.len(),
        2,
        "nothing of the refused transaction arrived"
    );
    assert!(
        got_now
            .iter()
            .all(|m| !String::from_utf8_lossy(m).contains("Subject: half")),
        "the half-refused message was not delivered"
    );
}
