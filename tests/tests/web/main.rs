//! The settings page in a real headless Chromium against `flowmail serve --web-only`:
//! access (login, CSRF, other sites), the form's conditional fields and its checks.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod mail;
mod metrics;
mod oauth;
mod routed;
mod status;

use flowmail_tests::Workspace;
use flowmail_tests::browser::{Browser, WebServer, add_user};

const PASSWORD: &str = "a long enough password 1";

/// The demo workspace with a user `ops@demo.example`, its page served.
fn served() -> (Workspace, WebServer) {
    let ws = Workspace::new("").unwrap();
    add_user(
        ws.path(),
        &["--email", "ops@demo.example", "--name", "Ops"],
        PASSWORD,
    )
    .unwrap();
    let web = WebServer::start(ws.path(), "").unwrap();
    (ws, web)
}

async fn log_in(b: &Browser, web: &WebServer, login: &str, password: &str) {
    b.client.goto(&format!("{}/login", web.url)).await.unwrap();
    b.fill("#login", login).await.unwrap();
    b.fill("#password", password).await.unwrap();
    b.click("#login-submit").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_logged_in_users_get_in_and_forms_from_elsewhere_are_refused() {
    let (_ws, web) = served();
    let b = Browser::start().await.unwrap();

    // Not logged in: every page leads to the login.
    for path in ["/", "/settings/smtp", "/status"] {
        b.client.goto(&format!("{}{path}", web.url)).await.unwrap();
        assert!(
            b.url().await.ends_with("/login"),
            "{path} -> {}",
            b.url().await
        );
    }
    log_in(&b, &web, "ops@demo.example", "wrong password here").await;
    let error = b.text_of("#login-error").await.unwrap();
    assert_eq!(error, "wrong email or password");

    log_in(&b, &web, "OPS@demo.example", PASSWORD).await;
    b.find("#settings").await.unwrap();
    assert!(b.url().await.ends_with("/settings/smtp"));
    // The session cookie is out of the page's reach (HttpOnly).
    let cookies = b
        .client
        .execute("return document.cookie", vec![])
        .await
        .unwrap();
    assert_eq!(cookies, serde_json::json!(""));

    // A form on another site that posts here is refused, token or not.
    let evil = format!(
        "data:text/html,<form method=post action='{}/settings/smtp'><input name=csrf value=x>\
         <input name=account value=stolen></form><script>document.forms[0].submit()</script>",
        web.url
    );
    b.client.goto(&evil).await.unwrap();
    let text = b.text_of("#message-text").await.unwrap();
    assert!(
        text.contains("another site") || text.contains("was refused"),
        "{text}"
    );

    // A post from the page without the session's token is refused too.
    b.client
        .goto(&format!("{}/settings/smtp", web.url))
        .await
        .unwrap();
    b.client
        .execute(
            "document.querySelector('#settings input[name=csrf]').value = 'forged';",
            vec![],
        )
        .await
        .unwrap();
    b.fill("#account", "forged").await.unwrap();
    b.click("#validate-button").await.unwrap();
    let text = b.text_of("#message-text").await.unwrap();
    assert!(
        text.contains("did not carry this session's token"),
        "{text}"
    );

    // Logging out ends the session.
    b.client
        .goto(&format!("{}/settings/smtp", web.url))
        .await
        .unwrap();
    b.click("button.link").await.unwrap();
    b.find("#login").await.unwrap();
    b.client
        .goto(&format!("{}/settings/smtp", web.url))
        .await
        .unwrap();
    assert!(b.url().await.ends_with("/login"));
    b.close().await;
}

/// Shown state of each group: email box, auth, basic, oauth2, oauth smtp, api note.
async fn groups(b: &Browser) -> [bool; 6] {
    let mut out = [false; 6];
    for (i, css) in [
        "#email-box-fields",
        "#auth-fields",
        "#basic-fields",
        "#oauth2-fields",
        "#oauth-smtp-fields",
        "#api-note",
    ]
    .iter()
    .enumerate()
    {
        out[i] = b.shown(css).await.unwrap();
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_follow_the_toggles_and_a_missing_one_is_named() {
    let (_ws, web) = served();
    let b = Browser::start().await.unwrap();
    log_in(&b, &web, "ops@demo.example", PASSWORD).await;
    b.find("#settings").await.unwrap();

    assert_eq!(
        groups(&b).await,
        [false; 6],
        "only SMTP configuration at first"
    );
    b.click("#email_box").await.unwrap();
    assert_eq!(groups(&b).await, [true, false, false, false, false, false]);
    b.click("#auth_required").await.unwrap();
    assert_eq!(
        groups(&b).await,
        [true, true, true, false, false, false],
        "Basic by default"
    );
    assert!(b.shown("#validate-button").await.unwrap());
    assert!(!b.shown("#authorize-button").await.unwrap());
    b.select("#auth_type", "oauth2").await.unwrap();
    assert_eq!(groups(&b).await, [true, true, false, true, true, false]);
    assert!(!b.shown("#validate-button").await.unwrap());
    assert!(b.shown("#authorize-button").await.unwrap());
    // The redirect URL is this server's callback, read-only.
    let redirect = b.find("#redirect_url").await.unwrap();
    assert_eq!(
        redirect.prop("value").await.unwrap().unwrap(),
        format!("{}/oauth/callback", web.url)
    );
    assert!(redirect.attr("readonly").await.unwrap().is_some());
    // The Microsoft helper fills both endpoints from the tenant.
    b.fill("#tenant_id", "contoso.onmicrosoft.com")
        .await
        .unwrap();
    b.click("#tenant-fill").await.unwrap();
    assert_eq!(
        b.value("#token_url").await.unwrap(),
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
    );
    b.select("#comm_type", "api").await.unwrap();
    assert_eq!(groups(&b).await, [true, true, false, true, false, true]);
    b.click("#auth_required").await.unwrap();
    b.click("#email_box").await.unwrap();
    assert_eq!(groups(&b).await, [false; 6]);

    // The most common misconfiguration is warned as it is typed.
    b.fill("#smtp_port", "587").await.unwrap();
    b.click("#ssl").await.unwrap();
    let warning = b.find("#port-warning").await.unwrap();
    assert!(warning.is_displayed().await.unwrap());
    assert!(warning.text().await.unwrap().contains("port 587"));

    // A missing mandatory field is named; what was typed stays.
    b.fill("#account", "alerts").await.unwrap();
    b.fill("#from", "Alerts <alerts@demo.example>")
        .await
        .unwrap();
    b.click("#validate-button").await.unwrap();
    let problem = b.text_of("#problem-smtp_host").await.unwrap();
    assert_eq!(problem, "SMTP host is required");
    assert_eq!(
        b.value("#from").await.unwrap(),
        "Alerts <alerts@demo.example>"
    );
    // The toml account is read-only, with that note.
    b.select("#account-select", "demo").await.unwrap();
    b.click("#account-open").await.unwrap();
    let note = b.text_of("#readonly-note").await.unwrap();
    assert!(note.contains("flowmail.toml"), "{note}");
    b.close().await;
}
