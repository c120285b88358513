//! The `smtp` WIT import: hands composed messages to an account's transport. Backends:
//! the file outbox and SMTP (Microsoft Graph next).

pub mod graph;
mod outbox;
pub mod queued;
pub mod smtp;

use std::collections::HashMap;
use std::sync::Arc;

use tracing::instrument;
use wasmtime::component::{HasData, Linker};

pub use self::outbox::Outbox;
pub use self::smtp::Relay;
use super::Audit;
use crate::BoxFuture;
use crate::bindings::MailError;
use crate::bindings::transport::{
    self as generated, AccountPolicy, Delivery, DeliveryStatus, Envelope,
};
use crate::bindings::types::FieldError;

/// A way out for mail. Implementations classify their own failures into [`MailError`].
pub trait Transport: Send + Sync {
    /// Sends one message; `message` is complete RFC 5322 with CRLF line endings.
    fn send<'a>(
        &'a self,
        envelope: &'a Envelope,
        message: &'a [u8],
    ) -> BoxFuture<'a, Result<Delivery, MailError>>;
    /// The transport's kind, as receipts and metrics name it (`outbox`, `smtp`, `graph`).
    fn kind(&self) -> &'static str;
}

/// One account's sending side.
#[derive(Clone)]
pub struct TransportAccount {
    pub policy: AccountPolicy,
    /// What a step's send goes through: the server, or the outbox.
    pub transport: Arc<dyn Transport>,
    /// The server itself, for the outbox's delivery workers.
    pub direct: Arc<dyn Transport>,
}

/// The accounts that may send, by name.
#[derive(Clone, Default)]
pub struct TransportCtx {
    pub accounts: HashMap<String, TransportAccount>,
}

/// The view of [`TransportCtx`] that serves one step.
pub struct TransportView<'a> {
    pub ctx: &'a TransportCtx,
    pub audit: &'a Audit,
    pub scope: &'a super::Scope,
}

impl TransportView<'_> {
    fn account(&self, name: &str) -> Result<&TransportAccount, MailError> {
        self.scope.admit(name)?;
        self.ctx.accounts.get(name).ok_or_else(|| {
            MailError::NotFound(format!(
                "no account `{name}` with a transport is configured"
            ))
        })
    }
}

impl generated::Host for TransportView<'_> {
    #[instrument(name = "smtp.policy", skip(self))]
    async fn policy(
        &mut self,
        account: String,
    ) -> wasmtime::Result<Result<AccountPolicy, MailError>> {
        let result = self.account(&account).map(|a| a.policy.clone());
        self.audit
            .record(|| format!("import smtp.policy account={account} -> {result:?}"));
        Ok(result)
    }

    #[instrument(name = "smtp.send", skip(self, envelope, message), fields(size = message.len()))]
    async fn send(
        &mut self,
        account: String,
        envelope: Envelope,
        message: Vec<u8>,
    ) -> wasmtime::Result<Result<Delivery, MailError>> {
        self.audit.record(|| {
            format!(
                "import smtp.send account={account} envelope={envelope:?} message={}",
                String::from_utf8_lossy(&message)
            )
        });
        let result = match self.account(&account) {
            Ok(a) => {
                let result = match check(a, &envelope, &message) {
                    Ok(()) => a.transport.send(&envelope, &message).await,
                    Err(e) => Err(e),
                };
                let outcome = match &result {
                    Ok(d) if d.status == DeliveryStatus::Delivered => "delivered",
                    Ok(_) => "queued",
                    Err(e) => e.kind_name(),
                };
                crate::metrics::send(&account, a.transport.kind(), outcome);
                result
            }
            Err(e) => Err(e),
        };
        self.audit
            .record(|| format!("import smtp.send -> {result:?}"));
        Ok(result)
    }
}

/// The host never trusts the guest's checks alone.
fn check(account: &TransportAccount, envelope: &Envelope, message: &[u8]) -> Result<(), MailError> {
    let invalid = |field: &str, reason: String| {
        MailError::InvalidInput(FieldError {
            field: field.into(),
            reason,
        })
    };
    if envelope.recipients.is_empty() {
        return Err(invalid("envelope.recipients", "no recipients".into()));
    }
    for a in envelope.recipients.iter().chain([&envelope.sender]) {
        if a.contains(['\r', '\n', '<', '>']) || !a.contains('@') {
            return Err(invalid(
                "envelope",
                format!("`{}` is not a valid envelope address", a.escape_debug()),
            ));
        }
    }
    if message.len() as u64 > account.policy.max_message_bytes {
        return Err(invalid(
            "message",
            format!(
                "{} bytes is over the account's limit of {}",
                message.len(),
                account.policy.max_message_bytes
            ),
        ));
    }
    Ok(())
}

struct HasTransport;

impl HasData for HasTransport {
    type Data<'a> = TransportView<'a>;
}

/// Adds the `smtp` interface to `linker`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    f: fn(&mut T) -> TransportView<'_>,
) -> wasmtime::Result<()> {
    generated::add_to_linker::<T, HasTransport>(linker, f)
}
