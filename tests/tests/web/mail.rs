//! Test Mail and Validate and Save through real postfix and dovecot, driven in the
//! browser, with every byte the browser was sent searched for the secrets.

use std::time::Duration;

use flowmail_tests::FreezableProxy;
use flowmail_tests::stack::{MailStack, PASSWORD as MAIL_PASSWORD};

use super::*;

const WRONG: &str = "wrong-secret-4711-xyz";

/// Fills the SMTP part of the form for account `name` through postfix's submission port.
pub(super) async fn fill_relay(b: &Browser, stack: &MailStack, name: Option<&str>, password: &str) {
    if let Some(name) = name {
        b.fill("#account", name).await.unwrap();
    }
    b.fill("#smtp_host", "localhost").await.unwrap();
    b.fill("#smtp_port", &stack.ports.submission.to_string())
        .await
        .unwrap();
    b.fill("#from", "Relay <relay@demo.example>").await.unwrap();
    if !b
        .find("#auth_required")
        .await
        .unwrap()
        .is_selected()
        .await
        .unwrap()
    {
        b.click("#auth_required").await.unwrap();
    }
    b.select("#auth_type", "basic").await.unwrap();
    b.fill("#username", "relay@demo.example").await.unwrap();
    b.fill("#password", password).await.unwrap();
}

async fn stage(b: &Browser, title: &str) -> String {
    b.text_of(&format!("#report tr[data-stage='{title}']"))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_mail_and_validate_and_save_through_postfix_and_no_secret_reaches_the_browser() {
    let stack = MailStack::start(None).unwrap();
    let ws = Workspace::new("").unwrap();
    add_user(ws.path(), &["--email", "ops@demo.example"], PASSWORD).unwrap();
    add_user(ws.path(), &["--no-email", "--name", "nomail"], PASSWORD).unwrap();
    let web = WebServer::start(
        ws.path(),
        &format!("ca_file = \"{}\"", stack.certs.ca.display()),
    )
    .unwrap();
    // The browser talks to the page through a proxy that keeps all it was sent.
    let port: u16 = web.url.rsplit(':').next().unwrap().parse().unwrap();
    let proxy = FreezableProxy::recording(port).unwrap();
    let page = WebServer::at(&format!("http://127.0.0.1:{}", proxy.port));
    let b = Browser::start().await.unwrap();
    log_in(&b, &page, "ops@demo.example", PASSWORD).await;
    b.find("#settings").await.unwrap();

    // A wrong password: the AUTH stage fails with the server's reply and the fix.
    fill_relay(&b, &stack, Some("relay"), WRONG).await;
    b.fill("#test_to", "bob@demo.example").await.unwrap();
    b.click("#test-button").await.unwrap();
    let auth = stage(&b, "AUTH").await;
    assert!(auth.contains("FAILED") && auth.contains("535"), "{auth}");
    assert!(
        auth.contains("check the account's username and password"),
        "{auth}"
    );
    for ok in ["DNS", "TCP connect", "TLS handshake", "EHLO"] {
        assert!(stage(&b, ok).await.contains(" ok "), "{ok}");
    }
    assert!(b.text().await.unwrap().contains("Test never saves"));

    // The right password: the test mail arrives. Still nothing is saved.
    b.fill("#password", MAIL_PASSWORD).await.unwrap();
    b.click("#test-button").await.unwrap();
    assert!(
        stage(&b, "queue id").await.contains(" ok "),
        "{}",
        b.text().await.unwrap()
    );
    stack
        .wait_for_mail("bob@demo.example", 1, Duration::from_secs(30))
        .unwrap();
    let options = b.text_of("#account-select").await.unwrap();
    assert!(!options.contains("relay"), "Test saved nothing: {options}");

    // Validate and Save with a wrong password: nothing saved, the form keeps the rest,
    // and the password typed before is held for the session, not shown.
    b.fill("#password", WRONG).await.unwrap();
    b.click("#validate-button").await.unwrap();
    let error = b.text_of("#error").await.unwrap();
    assert!(
        error.contains("AUTH") && error.contains("Nothing was saved"),
        "{error}"
    );
    assert_eq!(b.value("#smtp_host").await.unwrap(), "localhost");
    assert_eq!(b.value("#password").await.unwrap(), "");
    assert!(b.shown("#password-set").await.unwrap());
    // Now right: saved, and the validation mail goes to the user's own address.
    b.fill("#password", MAIL_PASSWORD).await.unwrap();
    b.click("#validate-button").await.unwrap();
    let notice = b.text_of("#notice").await.unwrap();
    assert!(
        notice.contains("Saved. The validation mail went to ops@demo.example"),
        "{notice}"
    );
    stack
        .wait_for_mail("ops@demo.example", 1, Duration::from_secs(30))
        .unwrap();
    let options = b.text_of("#account-select").await.unwrap();
    assert!(options.contains("relay"), "{options}");
    // Reopened, the saved password shows as set, never as itself.
    b.client
        .goto(&format!("{}/settings/smtp?account=relay", page.url))
        .await
        .unwrap();
    assert!(b.shown("#password-set").await.unwrap());
    assert_eq!(b.value("#username").await.unwrap(), "relay@demo.example");

    // A user without an email address is asked to set one; nothing is sent or saved.
    b.click("button.link").await.unwrap();
    log_in(&b, &page, "nomail", PASSWORD).await;
    fill_relay(&b, &stack, Some("other"), MAIL_PASSWORD).await;
    b.click("#validate-button").await.unwrap();
    let error = b.text_of("#error").await.unwrap();
    assert!(
        error.contains("has no email address")
            && error.contains("Nothing was sent and nothing was saved"),
        "{error}"
    );
    let options = b.text_of("#account-select").await.unwrap();
    assert!(!options.contains("other"), "{options}");
    b.close().await;

    // Everything the browser was sent, searched for the secrets: none.
    let replies = proxy.replies.lock().unwrap().clone();
    let replies = String::from_utf8_lossy(&replies);
    assert!(
        replies.contains("Settings :: SMTP"),
        "the proxy saw the pages"
    );
    for secret in [MAIL_PASSWORD, WRONG, PASSWORD] {
        assert!(
            !replies.contains(secret),
            "a secret reached the browser: {secret}"
        );
    }
}
