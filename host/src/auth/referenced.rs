//! An access token given by reference (an environment variable or a file) instead of
//! the token store.

use super::TokenSource;
use super::failure::TokenFailure;
use crate::BoxFuture;
use crate::bindings::MailError;
use crate::secret::{Secret, SecretRef};

/// An access token given by reference (env var or file), read anew for each session so
/// that whatever refreshes it can replace it in place.
pub struct ReferencedToken {
    source: SecretRef,
    base: std::path::PathBuf,
    account: String,
}

impl ReferencedToken {
    pub fn new(source: SecretRef, base: std::path::PathBuf, account: &str) -> Self {
        Self {
            source,
            base,
            account: account.to_owned(),
        }
    }
}

impl TokenSource for ReferencedToken {
    fn refresh_after_rejection(&self, _since: i64) -> BoxFuture<'_, Result<Secret, MailError>> {
        Box::pin(async move {
            Err(TokenFailure::ReferenceRefused {
                account: &self.account,
            }
            .into())
        })
    }

    fn access_token(&self) -> BoxFuture<'_, Result<Secret, MailError>> {
        Box::pin(async move {
            self.source.resolve(&self.base).map_err(|why| {
                TokenFailure::ReferenceUnusable {
                    account: &self.account,
                    why,
                }
                .into()
            })
        })
    }
}
