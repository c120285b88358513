//! One SMTP session, stage by stage: DNS, TCP, TLS, EHLO, AUTH, then transactions. Each
//! stage reports its time to an observer, which is how Test Mail shows its report.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;

use super::transaction::{self, Session};
use super::wire::{self, WireError};
use crate::auth::TokenSource;
use crate::bindings::MailError;
use crate::net::{self, Recording, Security, Settings, Stream, TlsInfo};
use crate::secret::Secret;

/// How the session authenticates.
pub enum Auth {
    None,
    Basic {
        username: String,
        password: Secret,
        /// The mechanisms to try, in order of preference.
        mechanisms: Vec<Mechanism>,
    },
    OAuth2 {
        username: String,
        token: Arc<dyn TokenSource>,
    },
}

/// The stages of a session, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Dns,
    Tcp,
    Tls,
    Ehlo,
    Auth,
    Transaction,
    Queue,
}

impl Stage {
    pub fn title(self) -> &'static str {
        match self {
            Stage::Dns => "DNS",
            Stage::Tcp => "TCP connect",
            Stage::Tls => "TLS handshake",
            Stage::Ehlo => "EHLO",
            Stage::Auth => "AUTH",
            Stage::Transaction => "MAIL, RCPT, DATA",
            Stage::Queue => "queue id",
        }
    }
}

/// What failed, and where.
#[derive(Debug)]
pub struct Failure {
    pub stage: Stage,
    pub cause: Cause,
}

#[derive(Debug)]
pub enum Cause {
    Wire(WireError),
    Smtp(lettre::transport::smtp::Error),
    /// The message's content had been sent (after DATA) when this happened. Without a reply
    /// from the server the outcome is unknown: it may have been queued.
    AfterData(lettre::transport::smtp::Error),
    Token(MailError),
    Address(String),
    TimedOut(Duration),
}

/// What the server offers, in a stable order (lettre's own text lists a hash set).
fn capabilities(info: &lettre::transport::smtp::extension::ServerInfo, pipelining: bool) -> String {
    use lettre::transport::smtp::extension::Extension;
    let mut offered: Vec<String> = [
        Extension::EightBitMime,
        Extension::SmtpUtfEight,
        Extension::StartTls,
    ]
    .into_iter()
    .filter(|e| info.supports_feature(*e))
    .map(|e| e.to_string())
    .collect();
    let mechanisms: Vec<String> = [Mechanism::Plain, Mechanism::Login, Mechanism::Xoauth2]
        .into_iter()
        .filter(|m| info.supports_auth_mechanism(*m))
        .map(|m| m.to_string())
        .collect();
    if !mechanisms.is_empty() {
        offered.push(format!("AUTH {}", mechanisms.join(" ")));
    }
    if pipelining {
        offered.push("PIPELINING".into());
    }
    match offered.is_empty() {
        true => format!("{} with no extension flowmail uses", info.name()),
        false => format!("{} with {}", info.name(), offered.join(", ")),
    }
}

/// Receives each finished stage: its duration and what it found.
pub type Observer<'a> = &'a mut (dyn FnMut(Stage, Duration, String) + Send);

pub(super) async fn timed<T, E>(
    stage: Stage,
    limit: Duration,
    fut: impl Future<Output = Result<T, E>>,
    cause: impl FnOnce(E) -> Cause,
) -> Result<T, Failure> {
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Failure {
            stage,
            cause: cause(e),
        }),
        Err(_) => Err(Failure {
            stage,
            cause: Cause::TimedOut(limit),
        }),
    }
}

/// An SMTP command line that lettre does not have, such as XOAUTH2.
struct Line(String);

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\r\n", self.0)
    }
}

/// Opens a session up to and including AUTH.
pub async fn open(s: &Settings, auth: &Auth, observe: Observer<'_>) -> Result<Session, Failure> {
    let t = Instant::now();
    let addrs = timed(Stage::Dns, s.timeout, net::resolve(&s.host, s.port), |e| {
        Cause::Wire(e.into())
    })
    .await?;
    observe(
        Stage::Dns,
        t.elapsed(),
        addrs
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    );

    let t = Instant::now();
    let mut tcp = timed(
        Stage::Tcp,
        s.timeout,
        net::connect(&addrs, s.timeout),
        |e| Cause::Wire(e.into()),
    )
    .await?;
    let peer = tcp.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    observe(Stage::Tcp, t.elapsed(), format!("connected to {peer}"));

    let t = Instant::now();
    let stream = match s.security {
        Security::None => {
            observe(
                Stage::Tls,
                t.elapsed(),
                "none: plaintext, as the account's tls = \"none\" allows".into(),
            );
            Stream::plain(tcp)
        }
        Security::Implicit | Security::StartTls => {
            if s.security == Security::StartTls {
                timed(
                    Stage::Tls,
                    s.timeout,
                    wire::starttls(&mut tcp, &s.hello),
                    Cause::Wire,
                )
                .await?;
            }
            let tls = timed(
                Stage::Tls,
                s.timeout,
                net::handshake(tcp, &s.host, s.tls.clone()),
                |e| Cause::Wire(e.into()),
            )
            .await?;
            let info = TlsInfo::of(&tls);
            observe(
                Stage::Tls,
                t.elapsed(),
                format!(
                    "{} {}, {}{}; certificate {} issued by {}, valid {} to {}",
                    if s.security == Security::StartTls {
                        "STARTTLS"
                    } else {
                        "implicit TLS"
                    },
                    info.version,
                    info.cipher,
                    if info.resumed {
                        ", an earlier session resumed"
                    } else {
                        ""
                    },
                    info.subject,
                    info.issuer,
                    info.not_before,
                    info.not_after
                ),
            );
            let wire = Stream::tls(tls);
            if s.security == Security::StartTls {
                wire.replaying(b"220 flowmail after STARTTLS\r\n".to_vec())
            } else {
                wire
            }
        }
    };

    let t = Instant::now();
    let hello = ClientId::Domain(s.hello.clone());
    // lettre keeps only the extensions it uses from the EHLO reply; the rest (PIPELINING)
    // is read from a copy of what the server sent.
    let heard = Recording::new();
    let stream = stream.recording(heard.clone());
    let mut conn = timed(
        Stage::Ehlo,
        s.timeout,
        AsyncSmtpConnection::connect_with_transport(Box::new(stream), &hello),
        Cause::Smtp,
    )
    .await?;
    let pipelining = transaction::offers(&String::from_utf8_lossy(&heard.take()), "PIPELINING");
    observe(
        Stage::Ehlo,
        t.elapsed(),
        capabilities(conn.server_info(), pipelining),
    );

    let t = Instant::now();
    match auth {
        Auth::None => observe(
            Stage::Auth,
            t.elapsed(),
            "none: the account has no authentication".into(),
        ),
        Auth::Basic {
            username,
            password,
            mechanisms,
        } => {
            let credentials = Credentials::new(username.clone(), password.expose().to_owned());
            let r = timed(
                Stage::Auth,
                s.timeout,
                conn.auth(mechanisms, &credentials),
                Cause::Smtp,
            )
            .await?;
            observe(
                Stage::Auth,
                t.elapsed(),
                format!(
                    "{} {} as {username}",
                    conn.server_info()
                        .get_auth_mechanism(mechanisms)
                        .map(|m| m.to_string())
                        .unwrap_or_default(),
                    reply_text(&r)
                ),
            );
        }
        Auth::OAuth2 { username, token } => {
            let token = token.access_token().await.map_err(|e| Failure {
                stage: Stage::Auth,
                cause: Cause::Token(e),
            })?;
            let r = timed(
                Stage::Auth,
                s.timeout,
                xoauth2(&mut conn, username, &token),
                Cause::Smtp,
            )
            .await?;
            observe(
                Stage::Auth,
                t.elapsed(),
                format!("XOAUTH2 {} as {username}", reply_text(&r)),
            );
        }
    }
    Ok(Session::new(conn, pipelining))
}

/// XOAUTH2 done by hand, so that a refusal ends in the server's own 535 reply: after the
/// error challenge (334) the client answers with an empty line.
async fn xoauth2(
    conn: &mut AsyncSmtpConnection,
    username: &str,
    token: &Secret,
) -> Result<Response, lettre::transport::smtp::Error> {
    let sasl = format!("user={username}\x01auth=Bearer {}\x01\x01", token.expose());
    let encoded = base64::engine::general_purpose::STANDARD.encode(sasl);
    let r = conn
        .command(Line(format!("AUTH XOAUTH2 {encoded}")))
        .await?;
    if r.has_code(334) {
        return conn.command(Line(String::new())).await;
    }
    Ok(r)
}

/// The reply's code and text on one line.
pub fn reply_text(r: &Response) -> String {
    format!(
        "{} {}",
        r.code(),
        r.message().collect::<Vec<_>>().join(" / ")
    )
}
