use super::*;
use crate::net::Security;

fn load(text: &str) -> anyhow::Result<Config> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("flowmail.toml");
    std::fs::write(&path, text)?;
    Config::load(&path)
}

#[test]
fn refuses_unknown_keys() {
    let err = load("[accounts.a]\nfrom = \"a@example.com\"\ncolour = 1\n[accounts.a.transport]\nkind = \"outbox\"\ndir = \"o\"\n")
        .unwrap_err();
    assert!(format!("{err:#}").contains("colour"), "{err:#}");
    let err =
        load("[accounts.a.transport]\nkind = \"outbox\"\ndir = \"o\"\nhost = \"x\"\n").unwrap_err();
    assert!(format!("{err:#}").contains("host"), "{err:#}");
}

#[test]
fn secrets_come_by_reference_and_stay_redacted() {
    let err = load("[accounts.a.transport]\nkind = \"outbox\"\ndir = \"o\"\n[accounts.a.auth]\nkind = \"basic\"\nusername = \"u\"\npassword = \"plain\"\n")
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("never written into the config"),
        "{err:#}"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "s3cret-value\n").unwrap();
    std::fs::write(
        dir.path().join("flowmail.toml"),
        "[accounts.a.transport]\nkind = \"outbox\"\ndir = \"o\"\n[accounts.a.auth]\nkind = \"basic\"\nusername = \"u\"\npassword = { file = \"pw\" }\n",
    )
    .unwrap();
    let config = Config::load(&dir.path().join("flowmail.toml")).unwrap();
    let creds = config.credentials("a").unwrap();
    assert!(
        matches!(&creds, Credentials::Basic { password, .. } if password.expose() == "s3cret-value")
    );
    assert!(!format!("{creds:?}").contains("s3cret"));
}

fn smtp(extra: &str) -> String {
    format!(
        "[accounts.m]\nfrom = \"me@example.com\"\n[accounts.m.transport]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\n{extra}"
    )
}

#[test]
fn smtp_tls_settings_are_checked() {
    let err = load(&smtp("min_tls = \"1.0\"\n")).unwrap_err();
    assert!(format!("{err:#}").contains("RFC 8996"), "{err:#}");
    let err = load(&smtp("min_tls = \"1.1\"\n")).unwrap_err();
    assert!(
        format!("{err:#}").contains("accounts.m.transport.min_tls"),
        "{err:#}"
    );
    let err = load(&smtp("ssl = true\ntls = \"none\"\n")).unwrap_err();
    assert!(format!("{err:#}").contains("contradict"), "{err:#}");
    let err = load(&smtp("tls = \"optional\"\n")).unwrap_err();
    assert!(format!("{err:#}").contains("not a TLS policy"), "{err:#}");
    let config = load(&smtp("")).unwrap();
    let settings = config.smtp_settings("m").unwrap();
    assert_eq!(
        settings.security,
        Security::StartTls,
        "STARTTLS is required by default"
    );
    assert_eq!(settings.port, 587);
    let config = load(&smtp("ssl = true\n")).unwrap();
    assert_eq!(
        (
            config.smtp_settings("m").unwrap().security,
            config.smtp_settings("m").unwrap().port
        ),
        (Security::Implicit, 465)
    );
    assert_eq!(
        load(&smtp("tls = \"none\"\n"))
            .unwrap()
            .smtp_settings("m")
            .unwrap()
            .security,
        Security::None
    );
}

#[test]
fn an_oauth2_account_sends_only_as_its_user() {
    let auth = "[accounts.m.auth]\nkind = \"oauth2\"\nusername = \"owner@example.com\"\naccess_token = { env = \"NOPE\" }\n";
    let err = load(&format!("{}{auth}", smtp(""))).unwrap_err();
    assert!(
        format!("{err:#}").contains("only send as its own user"),
        "{err:#}"
    );
    assert!(
        load(&format!(
            "{}{auth}",
            smtp("").replace("me@example.com", "owner@example.com")
        ))
        .is_ok()
    );
}

#[test]
fn parses_addresses() {
    let a = parse_address("Ops Team <ops@example.com>").unwrap();
    assert_eq!(
        (a.name.as_deref(), a.email.as_str()),
        (Some("Ops Team"), "ops@example.com")
    );
    assert!(parse_address("a\nb").is_err());
    assert!(load("[accounts.a]\nfrom = \"nobody\"\n[accounts.a.transport]\nkind = \"outbox\"\ndir = \"o\"\n").is_err());
}

#[test]
fn a_graph_mailbox_takes_its_token_endpoint_and_scope_from_the_tenant() {
    let mailbox = "[accounts.g.mailbox]\nkind = \"graph\"\ntenant = \"contoso.example\"\nuser = \"box@contoso.example\"\n";
    let err = load(mailbox).unwrap_err();
    assert!(
        format!("{err:#}").contains("accounts.g.auth: a Graph mailbox needs kind = \"oauth2\""),
        "{err:#}"
    );
    let auth = |user: &str, extra: &str| {
        format!(
            "{mailbox}[accounts.g.auth]\nkind = \"oauth2\"\nusername = \"{user}\"\nclient_id = \"app\"\n\
             client_secret = {{ env = \"PATH\" }}\n{extra}"
        )
    };
    let err = load(&auth("other@contoso.example", "")).unwrap_err();
    assert!(
        format!("{err:#}").contains("accounts.g.mailbox.user"),
        "{err:#}"
    );
    let config = load(&auth("box@contoso.example", "")).unwrap();
    let Some(MailboxConfig::Graph(g)) = &config.accounts["g"].mailbox else {
        panic!()
    };
    assert_eq!(g.folder, "inbox");
    let oauth = config.oauth_settings("g").unwrap().unwrap();
    assert_eq!(
        oauth.token_url,
        "https://login.microsoftonline.com/contoso.example/oauth2/v2.0/token"
    );
    assert_eq!(oauth.scopes, ["https://graph.microsoft.com/.default"]);
    let delegated = load(&auth(
        "box@contoso.example",
        "auth_url = \"https://login.microsoftonline.com/contoso.example/oauth2/v2.0/authorize\"\nredirect_url = \"http://127.0.0.1:8025/oauth/callback\"\n",
    ))
    .unwrap();
    let oauth = delegated.oauth_settings("g").unwrap().unwrap();
    assert_eq!(
        oauth.scopes,
        ["Mail.Send", "Mail.ReadWrite", "offline_access"]
    );
}

#[test]
fn a_store_url_is_postgresql_and_carries_no_password() {
    let outbox = "[accounts.a.transport]\nkind = \"outbox\"\ndir = \"o\"\n";
    let config = load(&format!(
        "[store]\nurl = \"postgres://flowmail:hunter2@db.example/flowmail\"\n{outbox}"
    ))
    .unwrap();
    let err = config.open_store().err().unwrap();
    assert!(
        format!("{err:#}").contains("store.url: the password is never written into the config"),
        "{err:#}"
    );
    let config = load(&format!(
        "[store]\nurl = \"mysql://db.example/x\"\n{outbox}"
    ))
    .unwrap();
    let err = config.open_store().err().unwrap();
    assert!(
        format!("{err:#}").contains("not a PostgreSQL URL"),
        "{err:#}"
    );
}

#[test]
fn queued_delivery_and_data_centers_are_checked() {
    let err = load(
        "[accounts.a]\ndata_center = \"mars\"\n[accounts.a.transport]\nkind = \"outbox\"\ndir = \"o\"\n",
    )
    .unwrap_err();
    assert!(
        format!("{err:#}")
            .contains("accounts.a.data_center: `mars` is not one of data_centers (default)"),
        "{err:#}"
    );
    let err = load("[accounts.a]\ndelivery = \"queued\"\n[accounts.a.mailbox]\nkind = \"maildir\"\npath = \"m\"\n")
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("accounts.a.delivery"),
        "{err:#}"
    );
    let config = load(
        "data_centers = [\"a\", \"b\"]\n[accounts.x]\ndelivery = \"queued\"\n[accounts.x.transport]\nkind = \"outbox\"\ndir = \"o\"\n",
    )
    .unwrap();
    assert_eq!(config.accounts["x"].delivery, Delivery::Queued);
    assert_eq!(
        (config.account_data_center("x"), config.node_data_center()),
        ("a".into(), "a".into())
    );
}
