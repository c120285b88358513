//! Authentication for accounts: the [`TokenSource`] that transports and mailboxes take
//! access tokens from, the OAuth2 token manager (refresh single-flight, rows written with
//! compare-and-swap), sealing of stored secrets, and the authorization-code flow ("Save &
//! Authorize"). It builds on `net` and `store` and knows no capability.

pub mod authorize;
mod failure;
mod manager;
mod provider;
mod referenced;
pub mod seal;

pub use self::manager::{OAuthSettings, TokenManager};
pub use self::provider::fix_for;
pub use self::referenced::ReferencedToken;
use crate::BoxFuture;
use crate::bindings::MailError;
use crate::secret::Secret;

/// Gives the current OAuth2 access token of an account.
pub trait TokenSource: Send + Sync {
    /// A usable access token, refreshed first when it is about to expire.
    fn access_token(&self) -> BoxFuture<'_, Result<Secret, MailError>>;
    /// A new token after the server refused one obtained at or before `since` (Unix
    /// seconds); an error when no new one can be had.
    fn refresh_after_rejection(&self, since: i64) -> BoxFuture<'_, Result<Secret, MailError>>;
}
