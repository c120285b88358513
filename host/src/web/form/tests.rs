#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

fn form(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

const BASE: &[(&str, &str)] = &[
    ("smtp_host", "smtp.example.com"),
    ("smtp_port", "587"),
    ("data_center", "default"),
    ("from", "Alerts <alerts@example.com>"),
    ("min_tls", "1.2"),
];

fn with(extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut f = form(BASE);
    f.extend(form(extra));
    f
}

fn dcs() -> Vec<String> {
    vec!["default".into()]
}

fn fields(c: &Checked) -> Vec<&str> {
    c.problems.iter().map(|p| p.field.as_str()).collect()
}

#[test]
fn hidden_fields_are_neither_checked_nor_saved() {
    // Authentication off, Email box off: their fields are ignored, even when sent.
    let c = check(
        &with(&[
            ("username", "u"),
            ("imap_host", "imap.example.com"),
            ("password", "pw"),
        ]),
        &PageSecrets::default(),
        &dcs(),
    );
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    assert_eq!(c.settings.username, "");
    assert_eq!(c.settings.imap_host, "");
    assert!(c.secrets.password.is_none(), "a hidden secret is not kept");
}

#[test]
fn each_missing_mandatory_field_is_named_with_its_label() {
    let c = check(
        &form(&[("data_center", "default")]),
        &PageSecrets::default(),
        &dcs(),
    );
    assert_eq!(fields(&c), ["smtp_port", "smtp_host", "from", "min_tls"]);
    assert_eq!(c.problems[1].label, "SMTP host");
    let c = check(
        &with(&[
            ("auth_required", "on"),
            ("auth_type", "basic"),
            ("email_box", "on"),
        ]),
        &PageSecrets::default(),
        &dcs(),
    );
    assert_eq!(
        fields(&c),
        [
            "imap_port",
            "imap_email",
            "imap_password",
            "imap_host",
            "username",
            "password"
        ]
    );
    // A secret saved before counts: the empty field keeps it.
    let held = PageSecrets {
        password: Some("kept".into()),
        ..PageSecrets::default()
    };
    let c = check(
        &with(&[
            ("auth_required", "on"),
            ("auth_type", "basic"),
            ("username", "u"),
        ]),
        &held,
        &dcs(),
    );
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    assert_eq!(c.secrets.password.as_deref(), Some("kept"));
}

#[test]
fn oauth2_smtp_needs_its_fields_and_the_from_user() {
    let oauth = [
        ("auth_required", "on"),
        ("auth_type", "oauth2"),
        ("comm_type", "smtp"),
        ("client_id", "app"),
        ("client_secret", "s3cret"),
        ("token_url", "https://login.example.com/token"),
        ("redirect_url", "http://127.0.0.1:8025/oauth/callback"),
        ("auth_url", "https://login.example.com/authorize"),
        (
            "scope",
            "https://outlook.office.com/SMTP.Send offline_access",
        ),
        ("oauth_username", "someone.else@example.com"),
    ];
    let c = check(&with(&oauth), &PageSecrets::default(), &dcs());
    assert_eq!(fields(&c), ["oauth_username"]);
    assert!(c.problems[0].message.contains("alerts@example.com"));
    let mut ok = with(&oauth);
    ok.insert("oauth_username".into(), "ALERTS@example.com".into());
    let c = check(&ok, &PageSecrets::default(), &dcs());
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    // API: the SMTP-only fields are hidden, so not needed, and not saved.
    let mut api = with(&oauth);
    api.insert("comm_type".into(), "api".into());
    let c = check(&api, &PageSecrets::default(), &dcs());
    assert_eq!(fields(&c), ["tenant_id"], "the API sends through a tenant");
    api.insert("tenant_id".into(), "contoso.onmicrosoft.com".into());
    let c = check(&api, &PageSecrets::default(), &dcs());
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    assert_eq!(c.settings.auth_url, "");
    let account = account(&c.settings, &c.secrets, None);
    assert!(matches!(
        account.transport,
        Some(TransportConfig::Graph(ref g))
            if g.user == "alerts@example.com" && g.tenant == "contoso.onmicrosoft.com"
    ));
}

#[test]
fn ssl_on_587_and_starttls_on_465_are_warned() {
    let c = check(&with(&[("ssl", "on")]), &PageSecrets::default(), &dcs());
    assert!(c.warnings[0].contains("port 587"), "{:?}", c.warnings);
    let mut f = with(&[]);
    f.insert("smtp_port".into(), "465".into());
    let c = check(&f, &PageSecrets::default(), &dcs());
    assert!(c.warnings[0].contains("port 465"), "{:?}", c.warnings);
    assert!(c.problems.is_empty());
}

#[test]
fn only_tls_1_2_and_1_3_and_known_data_centers() {
    let mut f = with(&[]);
    f.insert("min_tls".into(), "1.0".into());
    f.insert("data_center".into(), "mars".into());
    let c = check(&f, &PageSecrets::default(), &dcs());
    assert_eq!(fields(&c), ["data_center", "min_tls"]);
}
