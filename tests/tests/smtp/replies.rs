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
        std::fs::write(
            ws.path().join("flowmail.toml"),
            format!(
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
            report.error_kind,
            Some(kind),
            "{reply}: {}",
            report.render()
        );
        let last = report.stages.last().unwrap();
        assert!(last.detail.contains(fix), "{reply}: {}", last.detail);
        assert!(!last.detail.contains(PASSWORD));
    }
}
