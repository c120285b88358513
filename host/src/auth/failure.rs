//! What goes wrong obtaining an account's tokens, and the one place it becomes a
//! [`MailError`].

use super::seal::KeyError;
use crate::bindings::MailError;
use crate::store::StoreError;

/// A token failure of `account`, before classification.
#[derive(Debug)]
pub(super) enum TokenFailure<'a> {
    /// The token store failed.
    Store(StoreError),
    /// The sealing key is missing or not the one the tokens were sealed with.
    Key(KeyError),
    /// Sealing a token failed.
    Seal(String),
    /// The account was marked as needing authorization; `why` says how it came to be.
    NeedsAuthorization { account: &'a str, why: &'a str },
    /// The account was never authorized; `hint` says how to.
    NotAuthorized { account: &'a str, hint: String },
    /// Another process removed the tokens while this one refreshed them.
    Vanished,
    /// The token endpoint refused or failed; `fatal` when the grant or the client is
    /// refused, so retrying cannot help. `text` carries the provider's fix where known.
    Endpoint { fatal: bool, text: String },
    /// A refresh failed in a way a retry can cure.
    Refresh { account: &'a str, text: String },
    /// The server refused a token given by reference, which flowmail cannot refresh.
    ReferenceRefused { account: &'a str },
    /// A token given by reference could not be read.
    ReferenceUnusable { account: &'a str, why: String },
}

impl From<TokenFailure<'_>> for MailError {
    fn from(f: TokenFailure<'_>) -> Self {
        match f {
            TokenFailure::Store(e) => MailError::Transient(format!("the token store: {e}")),
            TokenFailure::Key(e) => MailError::AuthFailed(e.to_string()),
            TokenFailure::Seal(e) => MailError::Transient(e),
            TokenFailure::NeedsAuthorization { account, why } => {
                MailError::AuthFailed(format!("account `{account}` needs authorization: {why}"))
            }
            TokenFailure::NotAuthorized { account, hint } => {
                MailError::AuthFailed(format!("account `{account}` is not authorized yet; {hint}"))
            }
            TokenFailure::Vanished => {
                MailError::Transient("tokens vanished during a refresh".into())
            }
            TokenFailure::Endpoint { fatal: true, text } => MailError::AuthFailed(text),
            TokenFailure::Endpoint { fatal: false, text } => MailError::Transient(text),
            TokenFailure::Refresh { account, text } => MailError::Transient(format!(
                "refreshing the token of `{account}` failed: {text}"
            )),
            TokenFailure::ReferenceRefused { account } => MailError::AuthFailed(format!(
                "the server refused the access token of `{account}`, and flowmail does not refresh a token given by reference"
            )),
            TokenFailure::ReferenceUnusable { account, why } => MailError::AuthFailed(format!(
                "account `{account}` has no usable access token: {why}; authorize it again"
            )),
        }
    }
}
