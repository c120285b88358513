//! What the mail logic needs from the host, as a trait, so that unit tests can stand in
//! for the WIT imports.

use crate::mailbox::{Batch, RawMessage, Search, SizeCap};
use crate::tokens::{AuthKind, CredentialState};
use crate::transport::{AccountPolicy, Delivery, Envelope};
use crate::types::MailError;

/// What the plugin may know of an account's credential: never the secret itself.
#[derive(Debug, Clone)]
pub struct CredentialInfo {
    pub kind: AuthKind,
    pub username: Option<String>,
    pub state: CredentialState,
}

/// The host capabilities the mail logic uses.
pub trait Host {
    fn policy(&self, account: &str) -> Result<AccountPolicy, MailError>;
    fn credential(&self, account: &str) -> Result<CredentialInfo, MailError>;
    fn send(
        &self,
        account: &str,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<Delivery, MailError>;
    fn fetch_after(
        &self,
        account: &str,
        after: Option<&str>,
        limit: u32,
        search: &Search,
        cap: Option<SizeCap>,
    ) -> Result<Batch, MailError>;
    fn fetch(&self, account: &str, id: &str) -> Result<RawMessage, MailError>;
    fn warn(&self, message: &str);
    /// Seconds since the Unix epoch.
    fn now(&self) -> i64;
    /// 128 random bits, for Message-IDs.
    fn random(&self) -> u128;
}

/// Shorthand for an `invalid-input` error.
pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> MailError {
    MailError::InvalidInput(crate::types::FieldError {
        field: field.into(),
        reason: reason.into(),
    })
}
