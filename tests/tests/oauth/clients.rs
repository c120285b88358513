//! What the token store gives its clients: SMTP and IMAP refresh a refused token once,
//! Test Mail does as a send does, and `flowmail authorize` as a user runs it.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xoauth2_through_postfix_refreshes_after_the_server_refuses_the_token() {
    let oauth = OAuth::start().unwrap();
    let stack = MailStack::start(Some(&oauth)).unwrap();
    let transport = format!(
        "[accounts.o365.transport]\nkind = \"smtp\"\nhost = \"localhost\"\nport = {}\nca_file = \"{}\"",
        stack.ports.submission,
        stack.certs.ca.display()
    );
    let s = authorized(&oauth, &transport).await;
    let (rt, _) = s.ws.app(None, Audit::default()).unwrap();
    let msg = |subject: &str| text_message("frank@demo.example", subject, "via the token store");
    rt.runtime()
        .unwrap()
        .send_mail("send", "o365", &msg("first"))
        .await
        .unwrap();
    assert_eq!(oauth.grants("refresh_token").unwrap(), 0);

    // The provider expires the token early; flowmail still thinks it valid.
    oauth.expire_all().unwrap();
    stack.restart_postfix().unwrap();
    rt.runtime()
        .unwrap()
        .send_mail("send", "o365", &msg("second"))
        .await
        .unwrap();
    assert_eq!(
        oauth.grants("refresh_token").unwrap(),
        1,
        "one refresh after the 535"
    );
    let got = stack
        .wait_for_mail("frank@demo.example", 2, Duration::from_secs(20))
        .unwrap();
    let subjects: Vec<String> = got
        .iter()
        .map(|m| {
            MessageParser::default()
                .parse(m)
                .unwrap()
                .subject()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(subjects, ["first", "second"]);

    // Test Mail behaves as a send does: a refused token is refreshed once, and it says so.
    oauth.expire_all().unwrap();
    stack.restart_postfix().unwrap();
    let relay = rt.relay(&s.ws.config().unwrap(), "o365").unwrap();
    let report =
        flowmail::caps::transport::smtp::test_mail::run("o365", &relay, USER, "frank@demo.example")
            .await;
    assert!(report.ok, "{}", report.render());
    assert_eq!(oauth.grants("refresh_token").unwrap(), 2);
    let auth = report.stages.iter().find(|s| s.title == "AUTH").unwrap();
    assert!(auth.detail.contains("refreshed once"), "{}", auth.detail);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authorize_command_prints_the_url_and_stores_the_tokens() {
    use std::io::BufRead;
    let oauth = OAuth::start().unwrap();
    let s = setup(&oauth, OUTBOX);
    let mut child = std::process::Command::new(flowmail_tests::flowmail_bin())
        .current_dir(s.ws.path())
        .args(["authorize", "--account", "o365", "--timeout", "30"])
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (url, rest) = tokio::task::spawn_blocking(move || {
        let mut lines = std::io::BufReader::new(stdout).lines();
        let mut url = None;
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(u) = line.trim().strip_prefix("http") {
                url = Some(format!("http{u}"));
                break;
            }
        }
        let url = url.expect("the command announces the URL to open");
        // Play the browser: the provider approves and redirects to the callback.
        http_get(&provider_redirect(&url)).unwrap();
        let rest: Vec<String> = lines.map_while(Result::ok).collect();
        (url, rest)
    })
    .await
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(url.contains("code_challenge_method=S256"), "{url}");
    assert!(rest.iter().any(|l| l.contains("Authorized as")), "{rest:?}");
    let config = s.ws.config().unwrap();
    let manager = App::open(&config, Plugin::Embedded)
        .unwrap()
        .token_manager("o365")
        .unwrap();
    assert!(matches!(manager.state(), CredentialState::Ready));
    assert!(
        oauth
            .is_active(manager.access_token().await.unwrap().expose())
            .unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_xoauth2_refreshes_once_after_the_server_refuses_the_token() {
    let oauth = OAuth::start().unwrap();
    let stack = MailStack::start(Some(&oauth)).unwrap();
    let accounts = format!(
        "{OUTBOX}\n[accounts.o365.mailbox]\nkind = \"imap\"\nhost = \"localhost\"\nport = {}\nssl = true\nca_file = \"{}\"",
        stack.ports.imaps,
        stack.certs.ca.display()
    );
    let s = authorized(&oauth, &accounts).await;
    let mail = format!(
        "From: a@demo.example\r\nTo: {USER}\r\nSubject: via a refreshed token\r\nMessage-ID: <r@demo.example>\r\n\r\nhi\r\n"
    );
    stack.seed(USER, "", &[mail.as_bytes()]).unwrap();
    let filter = flowmail::bindings::actions::Filter {
        sender_contains: None,
        subject_contains: None,
        has_attachment: None,
        since: None,
        unseen: None,
    };
    let read = |app: Arc<App>| {
        let filter = filter.clone();
        async move {
            app.runtime()
                .unwrap()
                .read_mailbox("read", "o365", &filter, None, 10, None)
                .await
        }
    };
    let (app, _) = s.ws.app(None, Audit::default()).unwrap();
    assert_eq!(read(app).await.unwrap().messages.len(), 1);
    assert_eq!(oauth.grants("refresh_token").unwrap(), 0);

    // The provider expires the token early; a new connection's login is refused once,
    // the token is refreshed, and reading goes on.
    oauth.expire_all().unwrap();
    let (app, _) = s.ws.app(None, Audit::default()).unwrap();
    let page = read(app).await.unwrap();
    assert_eq!(page.messages[0].subject, "via a refreshed token");
    assert_eq!(
        oauth.grants("refresh_token").unwrap(),
        1,
        "one refresh after the refusal"
    );
}
