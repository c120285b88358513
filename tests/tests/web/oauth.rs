//! Save & Authorize end to end: the consent in a second tab against the OAuth2 test
//! server, the first tab updating by itself, and a workflow of the running `serve`
//! sending with XOAUTH2 through the account just saved.

use std::time::Duration;

use flowmail_tests::oauth::OAuth;
use flowmail_tests::stack::MailStack;

use super::*;

const OWNER: &str = "owner@demo.example";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_and_authorize_then_a_running_workflow_sends_through_the_account() {
    let oauth = OAuth::start().unwrap();
    let stack = MailStack::start(Some(&oauth)).unwrap();
    let ws = Workspace::new("").unwrap();
    add_user(ws.path(), &["--email", "ops@demo.example"], PASSWORD).unwrap();
    // A served workflow that sends through `o365`, which does not exist yet.
    std::fs::create_dir_all(ws.path().join("served")).unwrap();
    std::fs::write(
        ws.path().join("served/relay.yaml"),
        "name: relay\ntrigger:\n  mailbox:\n    account: demo\n    filter:\n      subject_contains: \"[PAGE]\"\n\
         \x20   poll_interval: 200ms\nsteps:\n  - id: send\n    action: send-mail\n    with:\n      account: o365\n\
         \x20     message:\n        to: frank@demo.example\n        subject: \"relayed: ${{ trigger.message.subject }}\"\n\
         \x20       text: via the page's account\n",
    )
    .unwrap();
    let served = WebServer::serving(
        ws.path(),
        &format!("ca_file = \"{}\"", stack.certs.ca.display()),
        "served",
    )
    .unwrap();
    // The browser reaches the page through a proxy that keeps all it was sent.
    let port: u16 = served.url.rsplit(':').next().unwrap().parse().unwrap();
    let proxy = flowmail_tests::FreezableProxy::recording(port).unwrap();
    let web = WebServer::at(&format!("http://127.0.0.1:{}", proxy.port));
    let b = Browser::start().await.unwrap();
    log_in(&b, &web, "ops@demo.example", PASSWORD).await;
    b.find("#settings").await.unwrap();
    fill_oauth(
        &b,
        &oauth,
        "o365",
        "smtp",
        &format!("{}/authorize", oauth.url()),
        stack.ports.submission,
    )
    .await;
    // The consent opens in a new tab, comes back to the callback, and says so.
    let first = authorize_in_new_tab(&b).await;
    let title = b.text_of("#message-title").await.unwrap();
    let text = b.text_of("#message-text").await.unwrap();
    assert_eq!(title, "SMTP Settings Authorized", "{text}");
    assert!(text.contains(OWNER), "{text}");

    // The settings tab shows the new state by itself.
    b.client.switch_to_window(first).await.unwrap();
    let wait = b.client.wait().at_most(Duration::from_secs(15));
    wait.for_element(fantoccini::Locator::XPath(
        "//p[@id='notice' and contains(., 'SMTP Settings Authorized as owner@demo.example')]",
    ))
    .await
    .unwrap();

    // New mail for the running serve: its run sends through o365 with XOAUTH2.
    let mail = "From: Monitor <monitor@demo.example>\r\nTo: ops@demo.example\r\nSubject: [PAGE] disk full\r\n\
                Message-ID: <page-1@demo.example>\r\n\r\nthe disk is full\r\n";
    let dir = ws.path().join("workflows/demo-mailbox");
    std::fs::write(dir.join("tmp/2000000001.page.host"), mail).unwrap();
    std::fs::rename(
        dir.join("tmp/2000000001.page.host"),
        dir.join("new/2000000001.page.host"),
    )
    .unwrap();
    let got = stack
        .wait_for_mail("frank@demo.example", 1, Duration::from_secs(30))
        .unwrap();
    let m = mail_parser::MessageParser::default()
        .parse(&got[0])
        .unwrap();
    assert_eq!(m.subject(), Some("relayed: [PAGE] disk full"));
    let log = stack.log_with("sasl_method=XOAUTH2", 1);
    assert!(log.contains("sasl_method=XOAUTH2"), "{log}");
    assert_eq!(oauth.grants("authorization_code").unwrap(), 1);

    // The token status shows who the account is authorized as.
    b.client
        .goto(&format!("{}/settings/smtp?account=o365", web.url))
        .await
        .unwrap();
    let who = b.text_of("#token-authorized").await.unwrap();
    assert_eq!(who, format!("yes, as {OWNER}"));
    b.close().await;
    let replies = proxy.replies.lock().unwrap().clone();
    let replies = String::from_utf8_lossy(&replies);
    assert!(replies.contains("SMTP Settings Authorized"));
    for secret in [SECRET, PASSWORD] {
        assert!(
            !replies.contains(secret),
            "a secret reached the browser: {secret}"
        );
    }
}

const SECRET: &str = "client-secret-value-93ab";

/// Fills the OAuth2 part of the form for `name`, with `auth_url` as the consent page.
async fn fill_oauth(
    b: &Browser,
    oauth: &OAuth,
    name: &str,
    comm: &str,
    auth_url: &str,
    smtp_port: u16,
) {
    b.fill("#account", name).await.unwrap();
    b.fill("#smtp_host", "localhost").await.unwrap();
    b.fill("#smtp_port", &smtp_port.to_string()).await.unwrap();
    b.fill("#from", OWNER).await.unwrap();
    b.click("#auth_required").await.unwrap();
    b.select("#auth_type", "oauth2").await.unwrap();
    b.select("#comm_type", comm).await.unwrap();
    b.fill("#client_id", "flowmail-test").await.unwrap();
    b.fill("#client_secret", SECRET).await.unwrap();
    b.fill("#tenant_id", "contoso.onmicrosoft.com")
        .await
        .unwrap();
    b.fill("#token_url", &format!("{}/token", oauth.url()))
        .await
        .unwrap();
    if comm == "smtp" {
        b.fill("#auth_url", auth_url).await.unwrap();
        b.fill(
            "#scope",
            "https://outlook.office.com/SMTP.Send offline_access",
        )
        .await
        .unwrap();
        b.fill("#oauth_username", OWNER).await.unwrap();
    }
}

/// Clicks Save & Authorize and switches to the tab it opened; returns the first tab.
async fn authorize_in_new_tab(b: &Browser) -> fantoccini::wd::WindowHandle {
    let first = b.client.window().await.unwrap();
    b.click("#authorize-button").await.unwrap();
    for _ in 0..100 {
        let windows = b.client.windows().await.unwrap();
        if let Some(w) = windows.into_iter().find(|w| *w != first) {
            b.client.switch_to_window(w).await.unwrap();
            return first;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("Save & Authorize opened no tab");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_consent_keeps_the_previous_settings_and_api_uses_client_credentials() {
    let oauth = OAuth::start().unwrap();
    let ws = Workspace::new("").unwrap();
    add_user(ws.path(), &["--email", "ops@demo.example"], PASSWORD).unwrap();
    let web = WebServer::start(ws.path(), "").unwrap();
    let b = Browser::start().await.unwrap();
    log_in(&b, &web, "ops@demo.example", PASSWORD).await;
    b.find("#settings").await.unwrap();

    // A consent page that does not answer by itself: this server's own status page.
    fill_oauth(
        &b,
        &oauth,
        "denied",
        "smtp",
        &format!("{}/status.json", web.url),
        587,
    )
    .await;
    let first = authorize_in_new_tab(&b).await;
    let consent = b.url().await;
    assert!(consent.contains("code_challenge_method=S256"), "{consent}");
    assert!(
        consent.contains("login_hint=owner%40demo.example"),
        "{consent}"
    );
    let state = consent
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("state="))
        .unwrap()
        .to_owned();
    // The user declines: the provider sends the browser back with the error.
    b.client
        .goto(&format!(
            "{}/oauth/callback?error=access_denied&error_description=AADSTS65004%3A+User+declined+to+consent&state={state}",
            web.url
        ))
        .await
        .unwrap();
    let title = b.text_of("#message-title").await.unwrap();
    let text = b.text_of("#message-text").await.unwrap();
    assert_eq!(title, "Not authorized");
    assert!(
        text.contains("declined the consent") && text.contains("stay active"),
        "{text}"
    );
    // The state works once: a replay is refused.
    b.client.refresh().await.unwrap();
    let text = b.text_of("#message-text").await.unwrap();
    assert!(text.contains("was already used"), "{text}");
    b.client.close_window().await.unwrap();
    b.client.switch_to_window(first).await.unwrap();

    // The account was never authorized: it is listed as pending, not active.
    b.client
        .goto(&format!("{}/settings/smtp", web.url))
        .await
        .unwrap();
    let options = b.text_of("#account-select").await.unwrap();
    assert!(options.contains("denied (pending)"), "{options}");

    // Communication type API: a client-credentials token, reported the same way.
    fill_oauth(&b, &oauth, "graph", "api", "", 587).await;
    authorize_in_new_tab(&b).await;
    let title = b.text_of("#message-title").await.unwrap();
    let text = b.text_of("#message-text").await.unwrap();
    assert_eq!(title, "SMTP Settings Authorized", "{text}");
    assert!(text.contains("client credentials"), "{text}");
    assert_eq!(oauth.grants("client_credentials").unwrap(), 1);
    b.close().await;
}
