#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

fn config(dir: &std::path::Path, text: &str) -> Config {
    std::fs::write(dir.join("flowmail.toml"), text).unwrap();
    Config::load(&dir.join("flowmail.toml")).unwrap()
}

#[test]
fn an_account_is_rebuilt_or_removed_while_others_stay() {
    let dir = tempfile::tempdir().unwrap();
    let base = "[accounts.keep.transport]\nkind = \"outbox\"\ndir = \"k\"\n";
    let first = config(
        dir.path(),
        &format!(
            "{base}[accounts.edit]\nmax_message_bytes = 1000\n[accounts.edit.transport]\nkind = \"outbox\"\ndir = \"a\"\n"
        ),
    );
    let app = App::open(&first, Plugin::Embedded).unwrap();
    let before = app.capabilities();
    let keep = before.transport.accounts["keep"].transport.clone();
    assert_eq!(
        before.transport.accounts["edit"].policy.max_message_bytes,
        1000
    );

    let second = config(
        dir.path(),
        &format!(
            "{base}[accounts.edit]\nmax_message_bytes = 2000\n[accounts.edit.transport]\nkind = \"outbox\"\ndir = \"b\"\n"
        ),
    );
    app.reload_account(&second, "edit").unwrap();
    let after = app.capabilities();
    assert_eq!(
        after.transport.accounts["edit"].policy.max_message_bytes,
        2000
    );
    assert!(
        Arc::ptr_eq(&after.transport.accounts["keep"].transport, &keep),
        "other accounts keep their backends"
    );
    assert_eq!(
        before.transport.accounts["edit"].policy.max_message_bytes, 1000,
        "a step that started before keeps what it had"
    );

    let third = config(dir.path(), base);
    app.reload_account(&third, "edit").unwrap();
    let now = app.capabilities();
    assert!(!now.transport.accounts.contains_key("edit"));
    assert!(!now.tokens.accounts.contains_key("edit"));
    assert!(now.transport.accounts.contains_key("keep"));
}
