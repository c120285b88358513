//! The SMTP transport: sessions pooled per account and reused across steps. An account
//! holds at most `max_connections` sessions open at once, busy or idle; a send that finds
//! them all busy waits for one. A pooled session that turns out broken is replaced once,
//! transparently.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::classify::classify;
use super::session::{self, Auth, Failure, Stage};
use super::transaction::{Session, queue_id};
use crate::BoxFuture;
use crate::bindings::MailError;
use crate::bindings::transport::{Delivery, DeliveryStatus, Envelope};
use crate::caps::transport::Transport;
use crate::net::Settings;

/// How long an idle session is kept.
const IDLE: Duration = Duration::from_secs(60);

/// Sends through one account's SMTP server.
pub struct Relay {
    settings: Settings,
    auth: Auth,
    idle: Mutex<Vec<(Session, Instant)>>,
    /// One permit per session that may be open; a send holds one from before it takes
    /// or opens a session until the session is back in `idle` or closed, so the idle
    /// sessions and the busy ones together never exceed the limit.
    sessions: tokio::sync::Semaphore,
}

impl Relay {
    /// A relay holding at most `max_connections` sessions (at least one).
    pub fn new(settings: Settings, auth: Auth, max_connections: usize) -> Self {
        Self {
            settings,
            auth,
            idle: Mutex::new(Vec::new()),
            sessions: tokio::sync::Semaphore::new(max_connections.max(1)),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    fn server(&self) -> String {
        format!("{}:{}", self.settings.host, self.settings.port)
    }

    fn take_idle(&self) -> Option<Session> {
        let mut idle = self.idle.lock().ok()?;
        while let Some((conn, since)) = idle.pop() {
            if since.elapsed() < IDLE && !conn.has_broken() {
                return Some(conn);
            }
        }
        None
    }

    fn put_idle(&self, conn: Session) {
        // The caller holds a permit for this session, so the pool cannot outgrow the limit.
        if let Ok(mut idle) = self.idle.lock() {
            idle.push((conn, Instant::now()));
        }
    }

    /// A new session. When the server refuses an OAuth2 token, the token is refreshed
    /// and the session opened once more.
    async fn fresh(&self) -> Result<Session, MailError> {
        let classify = |f: &Failure| classify(f, &self.server(), &self.auth);
        let started = crate::unix_now();
        let failure = match session::open(&self.settings, &self.auth, &mut |_, _, _| {}).await {
            Ok(conn) => return Ok(conn),
            Err(f) => f,
        };
        let error = classify(&failure);
        if let Some(token) = refused_token(&failure, &error, &self.auth) {
            tracing::info!(
                "{} refused the access token; refreshing it once",
                self.server()
            );
            if let Err(refresh) = token.refresh_after_rejection(started).await {
                return Err(MailError::AuthFailed(format!(
                    "{}; {}",
                    error.message(),
                    refresh.message()
                )));
            }
            return session::open(&self.settings, &self.auth, &mut |_, _, _| {})
                .await
                .map_err(|f| classify(&f));
        }
        Err(error)
    }

    async fn deliver(&self, envelope: &Envelope, message: &[u8]) -> Result<Delivery, MailError> {
        let classify = |f: &Failure| classify(f, &self.server(), &self.auth);
        // The semaphore is never closed; were it, sending without a permit is still safe.
        let _permit = self.sessions.acquire().await.ok();
        let (mut conn, pooled) = match self.take_idle() {
            Some(conn) => (conn, true),
            None => (self.fresh().await?, false),
        };
        let mut result = conn
            .transaction(envelope, message, self.settings.timeout)
            .await;
        if pooled
            && let Err(f) = &result
            && broken_before_reply(f)
        {
            tracing::debug!(
                "a pooled SMTP session to {} was broken; opening a new one",
                self.server()
            );
            conn = self.fresh().await?;
            result = conn
                .transaction(envelope, message, self.settings.timeout)
                .await;
        }
        match result {
            Ok(reply) => {
                let reference = queue_id(&reply);
                self.put_idle(conn);
                Ok(Delivery {
                    transport: "smtp".into(),
                    status: DeliveryStatus::Queued,
                    accepted: envelope.recipients.clone(),
                    reference,
                })
            }
            Err(f) => {
                if conn.reset_after(&f).await {
                    self.put_idle(conn);
                } else {
                    conn.abort().await;
                }
                Err(classify(&f))
            }
        }
    }
}

/// The token source to refresh when `failure` is the server refusing an OAuth2 token at
/// AUTH (not a network or TLS failure, and not a password).
pub(super) fn refused_token<'a>(
    failure: &Failure,
    error: &MailError,
    auth: &'a Auth,
) -> Option<&'a std::sync::Arc<dyn crate::auth::TokenSource>> {
    match (error, auth, failure.stage, &failure.cause) {
        (
            MailError::AuthFailed(_),
            Auth::OAuth2 { token, .. },
            Stage::Auth,
            session::Cause::Smtp(_),
        ) => Some(token),
        _ => None,
    }
}

/// A failure where the server never replied: the session died while idle, so sending
/// again on a new one cannot duplicate the message.
fn broken_before_reply(f: &Failure) -> bool {
    match &f.cause {
        session::Cause::Smtp(e) => {
            f.stage == Stage::Transaction
                && !e.is_permanent()
                && (e.status().is_none() || e.status().is_some_and(|c| c.to_string() == "421"))
        }
        _ => false,
    }
}

impl Transport for Relay {
    fn send<'a>(
        &'a self,
        envelope: &'a Envelope,
        message: &'a [u8],
    ) -> BoxFuture<'a, Result<Delivery, MailError>> {
        Box::pin(self.deliver(envelope, message))
    }

    fn kind(&self) -> &'static str {
        "smtp"
    }
}
