//! The status page: what `flowmail status` shows, refreshed without a reload; and the
//! screenshots of the pages for the README.

use std::time::Duration;

use super::*;

/// Saves `png` as `name` where `FLOWMAIL_SCREENSHOT_DIR` says (the README's pictures are
/// made so), after checking it is a PNG of the page.
fn keep(png: &[u8], name: &str) {
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "a real screenshot"
    );
    if let Ok(dir) = std::env::var("FLOWMAIL_SCREENSHOT_DIR") {
        std::fs::write(std::path::Path::new(&dir).join(name), png).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_follows_the_triggers_without_a_reload() {
    let ws = Workspace::new("").unwrap();
    // The demo account queues its mail, so the page shows the outbox too.
    let config = std::fs::read_to_string(ws.path().join("flowmail.toml")).unwrap();
    ws.write_config(config.replace(
        "[accounts.demo]\n",
        "[accounts.demo]\ndelivery = \"queued\"\n",
    ))
    .unwrap();
    add_user(ws.path(), &["--email", "ops@demo.example"], PASSWORD).unwrap();
    std::fs::create_dir_all(ws.path().join("served")).unwrap();
    let digest = std::fs::read_to_string(ws.path().join("workflows/alert-digest.yaml"))
        .unwrap()
        .replace("    per: batch", "    per: batch\n    poll_interval: 200ms");
    std::fs::write(ws.path().join("served/alert-digest.yaml"), digest).unwrap();
    let web = WebServer::serving(ws.path(), "", "served").unwrap();
    let b = Browser::start().await.unwrap();
    log_in(&b, &web, "ops@demo.example", PASSWORD).await;
    b.find("#settings").await.unwrap();
    b.fill("#account", "alerts").await.unwrap();
    b.fill("#smtp_host", "smtp.office365.com").await.unwrap();
    b.fill("#smtp_port", "587").await.unwrap();
    b.fill("#from", "Alerts <alerts@contoso.example>")
        .await
        .unwrap();
    b.click("#auth_required").await.unwrap();
    b.select("#auth_type", "oauth2").await.unwrap();
    b.fill("#tenant_id", "contoso.onmicrosoft.com")
        .await
        .unwrap();
    b.click("#tenant-fill").await.unwrap();
    b.fill("#client_id", "11111111-2222-3333-4444-555555555555")
        .await
        .unwrap();
    b.fill(
        "#scope",
        "https://outlook.office.com/SMTP.Send offline_access",
    )
    .await
    .unwrap();
    b.fill("#oauth_username", "alerts@contoso.example")
        .await
        .unwrap();
    keep(&b.client.screenshot().await.unwrap(), "settings-smtp.png");

    b.client.goto(&format!("{}/status", web.url)).await.unwrap();
    let wait = b.client.wait().at_most(Duration::from_secs(20));
    wait.for_element(fantoccini::Locator::XPath(
        "//tbody[@id='status-body']/tr[@data-workflow='alert-digest']/td[2][. = 'OK']",
    ))
    .await
    .unwrap();
    let runs_before = b
        .find("#sends-body")
        .await
        .unwrap()
        .find_all(fantoccini::Locator::Css("tr"))
        .await
        .unwrap()
        .len();
    // New alert mail arrives; the digest runs; the page shows it by itself.
    let mail = "From: Grafana <alerts@grafana.demo.example>\r\nTo: oncall@demo.example\r\n\
                Subject: [ALERT] shown on the status page\r\nMessage-ID: <status-1@demo.example>\r\n\r\nnew\r\n";
    let dir = ws.path().join("workflows/demo-mailbox");
    std::fs::write(dir.join("tmp/2000000002.status.host"), mail).unwrap();
    std::fs::rename(
        dir.join("tmp/2000000002.status.host"),
        dir.join("new/2000000002.status.host"),
    )
    .unwrap();
    let start = std::time::Instant::now();
    loop {
        let rows = b
            .find("#sends-body")
            .await
            .unwrap()
            .find_all(fantoccini::Locator::Css("tr"))
            .await
            .unwrap()
            .len();
        if rows > runs_before {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the status page did not refresh"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The queued digests were delivered by serve's workers, and the outbox says so.
    b.client
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(fantoccini::Locator::XPath(
            "//tbody[@id='outbox-body']/tr[td[1] = 'default' and td[2] = 'sent']",
        ))
        .await
        .unwrap();
    let text = b.text().await.unwrap();
    assert!(
        text.contains("alert-digest (demo)") && text.contains("ok"),
        "{text}"
    );
    keep(&b.client.screenshot().await.unwrap(), "status.png");
    b.close().await;
}
