//! The Settings :: SMTP form: what it holds, which fields count under the toggles and
//! choices, the checks that name each missing or wrong field, and the account it becomes.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::config::{
    AccountConfig, AuthConfig, Config, GraphConfig, MailboxConfig, ServerConfig, TransportConfig,
};
use crate::secret::{Secret, SecretRef};

/// Everything on the form but the secrets. Fields hidden by a toggle or choice are empty:
/// they are neither checked nor saved.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct PageSettings {
    pub smtp_host: String,
    pub smtp_port: Option<u16>,
    pub data_center: String,
    pub from: String,
    /// Enable SSL: implicit TLS; off means STARTTLS, required.
    pub ssl: bool,
    /// `1.2` or `1.3`.
    pub min_tls: String,
    pub email_box: bool,
    pub imap_email: String,
    pub imap_host: String,
    pub imap_port: Option<u16>,
    pub imap_ssl: bool,
    pub auth_required: bool,
    /// `basic` or `oauth2`.
    pub auth_type: String,
    pub username: String,
    /// `smtp` or `api` (Microsoft Graph).
    pub comm_type: String,
    pub client_id: String,
    /// `YYYY-MM-DD`, when the client secret expires.
    pub client_secret_expires: String,
    pub token_url: String,
    pub redirect_url: String,
    pub auth_url: String,
    pub scope: String,
    pub oauth_username: String,
    pub tenant_id: String,
}

/// The secrets of the form. Never rendered back, never logged.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct PageSecrets {
    pub imap_password: Option<String>,
    pub password: Option<String>,
    pub client_secret: Option<String>,
}

impl std::fmt::Debug for PageSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageSecrets")
            .field(
                "imap_password",
                &self.imap_password.as_ref().map(|_| "[set]"),
            )
            .field("password", &self.password.as_ref().map(|_| "[set]"))
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "[set]"),
            )
            .finish()
    }
}

/// A field that is missing or wrong: its form name, its label, and what to do.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FieldProblem {
    pub field: String,
    pub label: String,
    pub message: String,
}

/// A form read and checked: the settings and secrets it gives, the problems that stop a
/// save, and warnings that do not.
#[derive(Debug, Default)]
pub struct Checked {
    pub settings: PageSettings,
    pub secrets: PageSecrets,
    pub problems: Vec<FieldProblem>,
    pub warnings: Vec<String>,
}

/// The labels of the fields, as the page shows them.
pub fn label(field: &str) -> &'static str {
    match field {
        "account" => "Account name",
        "smtp_host" => "SMTP host",
        "smtp_port" => "SMTP port",
        "data_center" => "Data center",
        "from" => "From address",
        "min_tls" => "SMTP TLS Version",
        "imap_email" => "Email",
        "imap_password" => "Password",
        "imap_host" => "Host name",
        "imap_port" => "Port",
        "auth_type" => "Authentication type",
        "username" => "Username",
        "password" => "Password",
        "comm_type" => "Communication type",
        "client_id" => "Client ID",
        "client_secret" => "Client Secret",
        "client_secret_expires" => "Client Secret expires",
        "token_url" => "Token endpoint",
        "redirect_url" => "Redirect URL",
        "auth_url" => "Authorization endpoint",
        "scope" => "Scope",
        "oauth_username" => "Username",
        "tenant_id" => "Tenant ID",
        _ => "field",
    }
}

/// The microsoft endpoints of a tenant, for the Tenant ID helper.
pub fn microsoft_endpoints(tenant: &str) -> (String, String) {
    let base = format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0");
    (format!("{base}/authorize"), format!("{base}/token"))
}

/// Reads and checks the submitted `form`. An empty secret field keeps `held`'s value (a
/// secret saved before, or entered earlier in this session).
pub fn check(
    form: &HashMap<String, String>,
    held: &PageSecrets,
    data_centers: &[String],
) -> Checked {
    let text = |name: &str| {
        form.get(name)
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    let on = |name: &str| form.get(name).is_some_and(|v| v == "on" || v == "true");
    let secret = |name: &str, held: &Option<String>| {
        form.get(name)
            .filter(|v| !v.is_empty())
            .cloned()
            .or_else(|| held.clone())
    };
    let mut c = Checked::default();
    let mut problem = |field: &str, message: String| {
        c.problems.push(FieldProblem {
            field: field.to_owned(),
            label: label(field).to_owned(),
            message,
        })
    };
    let mut s = PageSettings {
        smtp_host: text("smtp_host"),
        data_center: text("data_center"),
        from: text("from"),
        ssl: on("ssl"),
        min_tls: text("min_tls"),
        email_box: on("email_box"),
        auth_required: on("auth_required"),
        ..PageSettings::default()
    };
    let mut secrets = PageSecrets::default();
    let required = |v: &str| v.is_empty();
    let mut port = |field: &str| -> Option<u16> {
        let v = text(field);
        if v.is_empty() {
            problem(field, "is required".into());
            return None;
        }
        match v.parse::<u16>() {
            Ok(p) if p > 0 => Some(p),
            _ => {
                problem(
                    field,
                    format!("`{v}` is not a port; give a number from 1 to 65535"),
                );
                None
            }
        }
    };
    s.smtp_port = port("smtp_port");
    if s.email_box {
        s.imap_port = port("imap_port");
    }
    let mut problem = |field: &str, message: String| {
        c.problems.push(FieldProblem {
            field: field.to_owned(),
            label: label(field).to_owned(),
            message,
        })
    };
    if required(&s.smtp_host) {
        problem("smtp_host", "is required".into());
    } else if s
        .smtp_host
        .contains(|c: char| c.is_whitespace() || c == '/' || c == ':')
    {
        problem(
            "smtp_host",
            "is a host name like smtp.example.com, without a scheme or port".into(),
        );
    }
    if !data_centers.contains(&s.data_center) {
        problem(
            "data_center",
            format!(
                "choose one of the configured data centers: {}",
                data_centers.join(", ")
            ),
        );
    }
    if required(&s.from) {
        problem("from", "is required".into());
    } else if crate::config::parse_address(&s.from)
        .map(|a| !a.email.contains('@'))
        .unwrap_or(true)
    {
        problem(
            "from",
            format!(
                "`{}` is not an address like Name <name@example.com>",
                s.from
            ),
        );
    }
    if s.min_tls != "1.2" && s.min_tls != "1.3" {
        problem(
            "min_tls",
            "choose 1.2 or 1.3; nothing lower is offered (RFC 8996)".into(),
        );
    }
    match (s.ssl, s.smtp_port) {
        (true, Some(587)) => c_warn(
            &mut c.warnings,
            "Enable SSL is on with port 587, which expects STARTTLS: turn Enable SSL off, or use port 465",
        ),
        (false, Some(465)) => c_warn(
            &mut c.warnings,
            "Enable SSL is off (STARTTLS) with port 465, which expects SSL from the first byte: turn Enable SSL on, or use port 587",
        ),
        _ => {}
    }
    if s.email_box {
        s.imap_email = text("imap_email");
        s.imap_host = text("imap_host");
        s.imap_ssl = on("imap_ssl");
        secrets.imap_password = secret("imap_password", &held.imap_password);
        if required(&s.imap_email) {
            problem("imap_email", "is required".into());
        }
        if secrets.imap_password.is_none() {
            problem("imap_password", "is required".into());
        }
        if required(&s.imap_host) {
            problem("imap_host", "is required".into());
        }
    }
    if s.auth_required {
        s.auth_type = text("auth_type");
        match s.auth_type.as_str() {
            "basic" => {
                s.username = text("username");
                secrets.password = secret("password", &held.password);
                if required(&s.username) {
                    problem("username", "is required".into());
                }
                if secrets.password.is_none() {
                    problem("password", "is required".into());
                }
            }
            "oauth2" => {
                s.comm_type = text("comm_type");
                s.client_id = text("client_id");
                s.client_secret_expires = text("client_secret_expires");
                s.token_url = text("token_url");
                s.tenant_id = text("tenant_id");
                secrets.client_secret = secret("client_secret", &held.client_secret);
                if required(&s.client_id) {
                    problem("client_id", "is required".into());
                }
                if secrets.client_secret.is_none() {
                    problem("client_secret", "is required".into());
                }
                if !s.client_secret_expires.is_empty() && !is_date(&s.client_secret_expires) {
                    problem(
                        "client_secret_expires",
                        "give the date as YYYY-MM-DD".into(),
                    );
                }
                if required(&s.token_url) {
                    problem("token_url", "is required".into());
                } else if !is_url(&s.token_url) {
                    problem(
                        "token_url",
                        "is an https:// (or http:// on this machine) URL".into(),
                    );
                }
                match s.comm_type.as_str() {
                    "smtp" => {
                        s.redirect_url = text("redirect_url");
                        s.auth_url = text("auth_url");
                        s.scope = text("scope");
                        s.oauth_username = text("oauth_username");
                        for field in ["redirect_url", "auth_url"] {
                            let v = if field == "redirect_url" {
                                &s.redirect_url
                            } else {
                                &s.auth_url
                            };
                            if required(v) {
                                problem(field, "is required".into());
                            } else if !is_url(v) {
                                problem(
                                    field,
                                    "is an https:// (or http:// on this machine) URL".into(),
                                );
                            }
                        }
                        if required(&s.scope) {
                            problem("scope", "is required, for example https://outlook.office.com/SMTP.Send offline_access".into());
                        }
                        let from = crate::config::parse_address(&s.from)
                            .map(|a| a.email)
                            .unwrap_or_default();
                        if required(&s.oauth_username) {
                            problem("oauth_username", "is required".into());
                        } else if !s.oauth_username.eq_ignore_ascii_case(&from) {
                            problem(
                                "oauth_username",
                                format!(
                                    "must equal the From address ({from}): an OAuth2 account sends only as its own user"
                                ),
                            );
                        }
                    }
                    "api" => {
                        if required(&s.tenant_id) {
                            problem(
                                "tenant_id",
                                "is required for the API: Microsoft Graph sends through the tenant's mailbox".into(),
                            );
                        }
                    }
                    _ => problem("comm_type", "choose SMTP or API".into()),
                }
            }
            _ => problem("auth_type", "choose Basic or OAuth2".into()),
        }
    }
    c.settings = s;
    c.secrets = secrets;
    c
}

fn c_warn(warnings: &mut Vec<String>, text: &str) {
    warnings.push(text.to_owned());
}

fn is_date(v: &str) -> bool {
    let parts: Vec<&str> = v.split('-').collect();
    parts.len() == 3
        && parts[0].len() == 4
        && parts[1].len() == 2
        && parts[2].len() == 2
        && parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

fn is_url(v: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(v) else {
        return false;
    };
    url.scheme() == "https"
        || (url.scheme() == "http"
            && matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]")))
}

/// The account the settings make, for the config; `ca_file` is the page's trusted CA.
pub fn account(
    settings: &PageSettings,
    secrets: &PageSecrets,
    ca_file: Option<&std::path::Path>,
) -> AccountConfig {
    let held = |v: &Option<String>| SecretRef::Held(Secret::new(v.clone().unwrap_or_default()));
    let server = |host: &str, port: Option<u16>, ssl: bool, min_tls: &str| ServerConfig {
        host: host.to_owned(),
        port,
        ssl,
        tls: "required".into(),
        min_tls: min_tls.to_owned(),
        ca_file: ca_file.map(std::path::Path::to_path_buf),
        timeout_secs: 30,
        hello_name: None,
        max_connections: 8,
        folder: "INBOX".into(),
        username: None,
        password: None,
    };
    let api =
        settings.auth_required && settings.auth_type == "oauth2" && settings.comm_type == "api";
    let transport = Some(if api {
        TransportConfig::Graph(GraphConfig {
            tenant: settings.tenant_id.clone(),
            user: crate::config::parse_address(&settings.from)
                .map(|a| a.email)
                .unwrap_or_default(),
            graph_url: "https://graph.microsoft.com/v1.0".into(),
            ca_file: None,
            timeout_secs: 30,
            max_wait_secs: 60,
        })
    } else {
        TransportConfig::Smtp(server(
            &settings.smtp_host,
            settings.smtp_port,
            settings.ssl,
            &settings.min_tls,
        ))
    });
    let mailbox = settings.email_box.then(|| {
        let mut imap = server(
            &settings.imap_host,
            settings.imap_port,
            settings.imap_ssl,
            "1.2",
        );
        imap.username = Some(settings.imap_email.clone());
        imap.password = Some(held(&secrets.imap_password));
        MailboxConfig::Imap(imap)
    });
    let auth = match (settings.auth_required, settings.auth_type.as_str()) {
        (false, _) => None,
        (true, "basic") => Some(AuthConfig::Basic {
            username: settings.username.clone(),
            password: held(&secrets.password),
            mechanism: None,
        }),
        (true, _) => Some(AuthConfig::OAuth2 {
            username: if settings.comm_type == "smtp" {
                settings.oauth_username.clone()
            } else {
                crate::config::parse_address(&settings.from)
                    .map(|a| a.email)
                    .unwrap_or_default()
            },
            access_token: None,
            client_id: Some(settings.client_id.clone()),
            client_secret: Some(held(&secrets.client_secret)),
            auth_url: (settings.comm_type == "smtp").then(|| settings.auth_url.clone()),
            token_url: Some(settings.token_url.clone()),
            redirect_url: (settings.comm_type == "smtp").then(|| settings.redirect_url.clone()),
            scopes: if settings.comm_type == "smtp" {
                settings
                    .scope
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect()
            } else {
                vec!["https://graph.microsoft.com/.default".into()]
            },
            refresh_margin_secs: 300,
            keep_alive_days: 30,
        }),
    };
    AccountConfig {
        from: Some(settings.from.clone()),
        max_message_bytes: 25 << 20,
        max_attachment_bytes: 10 << 20,
        transport,
        mailbox,
        auth,
        delivery: crate::config::Delivery::Direct,
        data_center: Some(settings.data_center.clone()),
    }
}

/// Checks an account name for the page: letters, digits, `-` and `_`, and not one of
/// `flowmail.toml`'s.
pub fn check_name(name: &str, config: &Config) -> Option<String> {
    if name.is_empty() {
        return Some("is required".into());
    }
    if name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Some("use letters, digits, - and _ (at most 64)".into());
    }
    if config.accounts.contains_key(name) {
        return Some(format!(
            "`{name}` is defined in flowmail.toml and is read-only here; choose another name"
        ));
    }
    None
}

#[cfg(test)]
mod tests;
