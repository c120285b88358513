//! OAuth2 against a real OAuth2 server on 127.0.0.1: the authorization-code flow with
//! PKCE over HTTP, refresh (single-flight, rotating), re-authorization, the sealed store,
//! and XOAUTH2 through postfix with a refresh after the server refuses a token.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod clients;
mod paused;

use std::sync::Arc;
use std::time::Duration;

use flowmail::app::{App, Plugin};
use flowmail::auth::TokenManager;
use flowmail::auth::authorize::authorize;
use flowmail::bindings::MailError;
use flowmail::bindings::tokens::CredentialState;
use flowmail::caps::Audit;
use flowmail::config::Config;
use flowmail::store::{Store, TokenRow};
use flowmail_tests::oauth::OAuth;
use flowmail_tests::stack::{MailStack, free_port};
use flowmail_tests::{Workspace, http_get, text_message};
use mail_parser::MessageParser;

const USER: &str = "owner@demo.example";

fn config(oauth: &OAuth, callback: u16, transport: &str) -> String {
    format!(
        "[store]\npath = \"var/flowmail.db\"\nkey_file = \"var/flowmail.key\"\n[runtime]\ncache_dir = \"\"\n\
         [accounts.o365]\nfrom = \"{USER}\"\n{transport}\n[accounts.o365.auth]\nkind = \"oauth2\"\nusername = \"{USER}\"\n\
         client_id = \"flowmail-test\"\nclient_secret = {{ file = \"client-secret\" }}\nauth_url = \"{url}/authorize\"\n\
         token_url = \"{url}/token\"\nredirect_url = \"http://127.0.0.1:{callback}/oauth/callback\"\n\
         scopes = [\"https://outlook.office.com/SMTP.Send\", \"offline_access\"]\n",
        url = oauth.url()
    )
}

const OUTBOX: &str = "[accounts.o365.transport]\nkind = \"outbox\"\ndir = \"var/outbox\"";

struct Setup {
    ws: Workspace,
    store: Arc<Store>,
    manager: Arc<TokenManager>,
}

fn setup(oauth: &OAuth, transport: &str) -> Setup {
    let ws = Workspace::with_config(&config(oauth, free_port().unwrap(), transport)).unwrap();
    std::fs::write(ws.path().join("client-secret"), "client-secret-value-93ab").unwrap();
    let config = ws.config().unwrap();
    let app = App::open(&config, Plugin::Embedded).unwrap();
    let manager = app.token_manager("o365").unwrap();
    Setup {
        ws,
        store: app.store().clone(),
        manager,
    }
}

/// Runs `authorize` and lets `browser` play the user's browser with the URL it announces.
async fn run_flow(
    manager: Arc<TokenManager>,
    browser: impl FnOnce(String) -> anyhow::Result<()> + Send + 'static,
) -> anyhow::Result<String> {
    let (tx, rx) = tokio::sync::oneshot::channel::<String>();
    let flow = tokio::spawn(authorize(
        manager,
        move |url| drop(tx.send(url.to_owned())),
        Duration::from_secs(20),
    ));
    let url = rx.await?;
    tokio::task::spawn_blocking(move || browser(url)).await??;
    flow.await?
}

/// Follows the provider's auto-approving authorize endpoint to the callback URL.
fn provider_redirect(url: &str) -> String {
    let (status, location, body) = http_get(url).unwrap();
    assert_eq!(status, 302, "{body}");
    location.unwrap()
}

fn force_expiry(store: &Store) -> TokenRow {
    let row = store.tokens("o365").unwrap().unwrap();
    let expired = TokenRow {
        version: row.version + 1,
        expires_at: 0,
        ..row.clone()
    };
    assert!(
        store
            .put_tokens("o365", Some(row.version), &expired)
            .unwrap()
    );
    expired
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authorization_code_flow_with_pkce_stores_sealed_tokens() {
    let oauth = OAuth::start().unwrap();
    let s = setup(&oauth, OUTBOX);
    assert!(
        matches!(s.manager.state(), CredentialState::NeedsAuthorization(m) if m.contains("flowmail authorize"))
    );

    let store = s.store.clone();
    let user = run_flow(s.manager.clone(), move |url| {
        assert!(
            url.contains("code_challenge_method=S256")
                && url.contains("state=")
                && url.contains("login_hint="),
            "{url}"
        );
        let callback = provider_redirect(&url);
        // A callback with a wrong state is refused, and nothing is stored.
        let (base, _) = callback.split_once('?').unwrap();
        let (status, _, body) = http_get(&format!("{base}?code=stolen&state=forged")).unwrap();
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("state does not match"));
        assert!(store.tokens("o365").unwrap().is_none());
        let (status, _, body) = http_get(&callback).unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(&format!("Authorized as {USER}")));
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(user, USER);
    assert!(matches!(s.manager.state(), CredentialState::Ready));
    let token = s.manager.access_token().await.unwrap();
    assert!(oauth.is_active(token.expose()).unwrap());

    // Sealed at rest: neither token nor the client secret is in the database file.
    let row = s.store.tokens("o365").unwrap().unwrap();
    assert!(row.refresh_token.is_some());
    // The whole SQLite file; on PostgreSQL, the stored values themselves.
    let (db, wal) = if s.store.is_shared() {
        (
            [row.access_token.clone(), row.refresh_token.clone().unwrap()].concat(),
            Vec::new(),
        )
    } else {
        (
            std::fs::read(s.ws.path().join("var/flowmail.db")).unwrap(),
            std::fs::read(s.ws.path().join("var/flowmail.db-wal")).unwrap_or_default(),
        )
    };
    for secret in [token.expose(), "client-secret-value-93ab"] {
        let needle = &secret.as_bytes()[..24.min(secret.len())];
        assert!(
            !db.windows(needle.len()).any(|w| w == needle)
                && !wal.windows(needle.len()).any(|w| w == needle)
        );
    }
    assert!(!format!("{:?} {:?}", s.manager, s.manager.settings()).contains("client-secret-value"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_code_fails_cleanly_and_keeps_the_tokens() {
    let oauth = OAuth::start().unwrap();
    let s = setup(&oauth, OUTBOX);
    let (tx, rx) = std::sync::mpsc::channel();
    run_flow(s.manager.clone(), move |url| {
        let callback = provider_redirect(&url);
        tx.send(callback.clone()).unwrap();
        http_get(&callback).map(drop)
    })
    .await
    .unwrap();
    let used = rx.recv().unwrap();
    let before = s.store.tokens("o365").unwrap().unwrap();
    let code = used
        .split("code=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_owned();
    let err = run_flow(s.manager.clone(), move |url| {
        let callback = provider_redirect(&url);
        let state = callback
            .split("state=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap();
        let base = callback.split_once('?').unwrap().0;
        let (status, _, body) = http_get(&format!("{base}?code={code}&state={state}")).unwrap();
        assert_eq!(status, 400, "{body}");
        Ok(())
    })
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("AADSTS54005") && err.contains("each code works once"),
        "{err}"
    );
    assert_eq!(
        s.store.tokens("o365").unwrap().unwrap().version,
        before.version,
        "the stored tokens are untouched"
    );
}

async fn authorized(oauth: &OAuth, transport: &str) -> Setup {
    let s = setup(oauth, transport);
    run_flow(s.manager.clone(), |url| {
        http_get(&provider_redirect(&url)).map(drop)
    })
    .await
    .unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tokens_are_refreshed_once_however_many_callers_wait() {
    let oauth = OAuth::start().unwrap();
    let s = authorized(&oauth, OUTBOX).await;
    let first = s.manager.access_token().await.unwrap();
    let old = force_expiry(&s.store);

    let refreshed = s.manager.access_token().await.unwrap();
    assert_ne!(refreshed.expose(), first.expose());
    assert!(oauth.is_active(refreshed.expose()).unwrap());
    assert_eq!(oauth.grants("refresh_token").unwrap(), 1);
    let rotated = s.store.tokens("o365").unwrap().unwrap();
    assert_ne!(
        rotated.refresh_token, old.refresh_token,
        "the rotated refresh token replaced the old one"
    );

    force_expiry(&s.store);
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let m = s.manager.clone();
            tokio::spawn(async move { m.access_token().await })
        })
        .collect();
    let mut tokens = Vec::new();
    for t in tasks {
        tokens.push(t.await.unwrap().unwrap().expose().to_owned());
    }
    assert_eq!(
        oauth.grants("refresh_token").unwrap(),
        2,
        "100 callers, exactly one refresh at the server"
    );
    tokens.dedup();
    assert_eq!(tokens.len(), 1, "every caller got the same new token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_refresh_token_leads_to_reauthorization_and_fast_failures() {
    let oauth = OAuth::start().unwrap();
    let s = authorized(&oauth, OUTBOX).await;
    let stale = force_expiry(&s.store);
    s.manager.access_token().await.unwrap();
    // Put the refresh token that was already used back, as a lost rotation would.
    let current = s.store.tokens("o365").unwrap().unwrap();
    let replay = TokenRow {
        version: current.version + 1,
        expires_at: 0,
        refresh_token: stale.refresh_token.clone(),
        ..current.clone()
    };
    assert!(
        s.store
            .put_tokens("o365", Some(current.version), &replay)
            .unwrap()
    );

    let err = s.manager.access_token().await.unwrap_err();
    assert!(
        matches!(&err, MailError::AuthFailed(m) if m.contains("invalid_grant") && m.contains("flowmail authorize")),
        "{err:?}"
    );
    assert!(
        matches!(s.manager.state(), CredentialState::NeedsAuthorization(m) if m.contains("AADSTS70008"))
    );
    let calls = oauth.grants("refresh_token").unwrap();
    for _ in 0..5 {
        assert!(matches!(
            s.manager.access_token().await,
            Err(MailError::AuthFailed(_))
        ));
    }
    assert_eq!(
        oauth.grants("refresh_token").unwrap(),
        calls,
        "later calls fail fast, without the token endpoint"
    );

    // The plugin sees the state too, and refuses to send before composing anything.
    let (rt, _) = s.ws.app(None, Audit::default()).unwrap();
    let msg = text_message("bob@demo.example", "x", "x");
    let e = rt
        .runtime()
        .unwrap()
        .send_mail("send", "o365", &msg)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("needs authorization"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_wrong_key_is_a_clear_error_and_never_resets_tokens() {
    let oauth = OAuth::start().unwrap();
    let s = authorized(&oauth, OUTBOX).await;
    let key = s.ws.path().join("var/flowmail.key");
    let config = Config::load(&s.ws.path().join("flowmail.toml")).unwrap();
    let original = std::fs::read(&key).unwrap();

    std::fs::remove_file(&key).unwrap();
    let err = App::open(&config, Plugin::Embedded)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("flowmail.key is missing") && err.contains("never discards"),
        "{err}"
    );
    assert!(!key.exists(), "no new key replaces the lost one");

    std::fs::write(&key, "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=").unwrap();
    let manager = App::open(&config, Plugin::Embedded)
        .unwrap()
        .token_manager("o365")
        .unwrap();
    let err = manager.access_token().await.unwrap_err();
    assert!(
        matches!(&err, MailError::AuthFailed(m) if m.contains("cannot be decrypted")),
        "{err:?}"
    );

    std::fs::write(&key, original).unwrap();
    let manager = App::open(&config, Plugin::Embedded)
        .unwrap()
        .token_manager("o365")
        .unwrap();
    assert!(
        manager.access_token().await.is_ok(),
        "with the right key the tokens are all there"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_and_keep_alive() {
    let oauth = OAuth::start().unwrap();
    // Without auth_url and redirect_url, the account uses the client-credentials grant.
    let text = config(&oauth, 1, OUTBOX)
        .lines()
        .filter(|l| !l.starts_with("auth_url") && !l.starts_with("redirect_url"))
        .collect::<Vec<_>>()
        .join("\n");
    let ws = Workspace::with_config(&text).unwrap();
    std::fs::write(ws.path().join("client-secret"), "s").unwrap();
    let config = ws.config().unwrap();
    let manager = App::open(&config, Plugin::Embedded)
        .unwrap()
        .token_manager("o365")
        .unwrap();
    assert!(matches!(manager.state(), CredentialState::Ready));
    let token = manager.access_token().await.unwrap();
    assert!(oauth.is_active(token.expose()).unwrap());
    assert_eq!(oauth.grants("client_credentials").unwrap(), 1);
    assert_eq!(
        manager.access_token().await.unwrap().expose(),
        token.expose(),
        "a fresh token is reused"
    );

    // Keep-alive refreshes a refresh token left unused too long, and nothing younger.
    let s = authorized(&oauth, OUTBOX).await;
    assert!(!s.manager.keep_alive().await.unwrap());
    let row = s.store.tokens("o365").unwrap().unwrap();
    let idle = TokenRow {
        version: row.version + 1,
        refreshed_at: row.refreshed_at - 31 * 86_400,
        ..row
    };
    assert!(
        s.store
            .put_tokens("o365", Some(idle.version - 1), &idle)
            .unwrap()
    );
    assert!(s.manager.keep_alive().await.unwrap());
    assert_eq!(oauth.grants("refresh_token").unwrap(), 1);
    assert!(!s.manager.keep_alive().await.unwrap());

    // A long-running process keeps them alive on a schedule, not only at its start.
    let (app, store) = s.ws.app(None, Audit::default()).unwrap();
    let scheduled = tokio::spawn({
        let app = app.clone();
        async move {
            app.keep_tokens_alive_every(Duration::from_millis(200))
                .await
        }
    });
    let row = store.tokens("o365").unwrap().unwrap();
    let idle = TokenRow {
        version: row.version + 1,
        refreshed_at: row.refreshed_at - 31 * 86_400,
        ..row
    };
    assert!(
        store
            .put_tokens("o365", Some(idle.version - 1), &idle)
            .unwrap()
    );
    let start = std::time::Instant::now();
    while oauth.grants("refresh_token").unwrap() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the scheduled keep-alive never refreshed the idle token"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Several more ticks: a fresh refresh token is left alone.
    tokio::time::sleep(Duration::from_millis(700)).await;
    scheduled.abort();
    assert_eq!(
        oauth.grants("refresh_token").unwrap(),
        2,
        "once, not every tick"
    );
}

/// Two processes sharing a store (two applications over one SQLite file, then over one
/// PostgreSQL database): an expired token is refreshed once between them, and both get
/// the new token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_sharing_a_store_refresh_once_between_them() {
    let oauth = OAuth::start().unwrap();
    let pg = flowmail_tests::postgres::Postgres::start().unwrap();
    let url = pg.database("tokens").unwrap();
    for shared in [None, Some(url)] {
        let s = authorized(&oauth, OUTBOX).await;
        if let Some(url) = &shared {
            // The same account on PostgreSQL: authorize there too.
            let text = std::fs::read_to_string(s.ws.path().join("flowmail.toml")).unwrap();
            let text: Vec<&str> = text
                .lines()
                .filter(|l| !l.starts_with("url = \"postgres"))
                .collect();
            s.ws.write_config(
                text.join("\n")
                    .replace("[store]\n", &format!("[store]\nurl = \"{url}\"\n")),
            )
            .unwrap();
        }
        let config = s.ws.config().unwrap();
        let first = App::open(&config, Plugin::Embedded).unwrap();
        if shared.is_some() {
            run_flow(first.token_manager("o365").unwrap(), |url| {
                http_get(&provider_redirect(&url)).map(drop)
            })
            .await
            .unwrap();
        }
        let second = App::open(&config, Plugin::Embedded).unwrap();
        let before = oauth.grants("refresh_token").unwrap();
        force_expiry(first.store());
        let mut tasks = Vec::new();
        for app in [&first, &second] {
            for _ in 0..20 {
                let m = app.token_manager("o365").unwrap();
                tasks.push(tokio::spawn(async move { m.access_token().await }));
            }
        }
        let mut tokens = Vec::new();
        for t in tasks {
            tokens.push(t.await.unwrap().unwrap().expose().to_owned());
        }
        assert_eq!(
            oauth.grants("refresh_token").unwrap(),
            before + 1,
            "two processes, one refresh at the server ({shared:?})"
        );
        tokens.dedup();
        assert_eq!(
            tokens.len(),
            1,
            "every caller of both got the same new token"
        );
        assert!(
            first
                .store()
                .tokens("o365")
                .unwrap()
                .unwrap()
                .refresh_token
                .is_some()
        );
    }
}
