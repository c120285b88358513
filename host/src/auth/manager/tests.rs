#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

fn row(sealer: &Sealer, version: i64, access: &str) -> TokenRow {
    TokenRow {
        version,
        access_token: sealer.seal("o/access", access).unwrap(),
        refresh_token: Some(sealer.seal("o/refresh", "r").unwrap()),
        expires_at: crate::unix_now() + 3600,
        scope: String::new(),
        username: "u@example.com".into(),
        needs_reauth: None,
        refreshed_at: crate::unix_now(),
    }
}

#[test]
fn a_refusal_of_a_replaced_refresh_token_uses_the_new_tokens_instead_of_marking() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("s.db")).unwrap());
    let sealer = Arc::new(Sealer::load(&dir.path().join("key"), false).unwrap());
    let settings = OAuthSettings {
        account: "o".into(),
        username: "u@example.com".into(),
        client_id: "c".into(),
        client_secret: None,
        auth_url: Some("http://127.0.0.1:9/authorize".into()),
        token_url: "http://127.0.0.1:9/token".into(),
        redirect_url: Some("http://127.0.0.1:9/cb".into()),
        scopes: Vec::new(),
        margin: Duration::from_secs(60),
        keep_alive: Duration::from_secs(86_400),
    };
    let manager = TokenManager::new(settings, store.clone(), sealer.clone()).unwrap();
    let first = row(&sealer, 1, "old");
    assert!(store.put_tokens("o", None, &first).unwrap());
    // Another process re-authorizes while this one's refresh is being refused.
    let theirs = row(&sealer, 2, "new");
    assert!(store.put_tokens("o", Some(1), &theirs).unwrap());
    let token = manager.mark(&first, "invalid_grant".into()).unwrap();
    assert_eq!(token.expose(), "new");
    assert!(store.tokens("o").unwrap().unwrap().needs_reauth.is_none());

    // With nobody else's tokens, the refusal marks the account.
    let e = manager.mark(&theirs, "invalid_grant".into()).unwrap_err();
    assert_eq!(e.kind_name(), "auth-failed");
    assert!(store.tokens("o").unwrap().unwrap().needs_reauth.is_some());
    assert!(matches!(
        manager.state(),
        CredentialState::NeedsAuthorization(_)
    ));
}
