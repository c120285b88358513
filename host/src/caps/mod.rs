//! The host capabilities, one module each: a context, a view implementing the generated
//! `Host` trait, a small backend trait, and `add_to_linker`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub mod log;
pub mod mailbox;
pub mod smtp;
pub mod tokens;

/// A boxed future, for backend traits that must stay object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Everything the capabilities serve, shared by all steps.
pub struct Capabilities {
    pub smtp: smtp::SmtpCtx,
    pub mailbox: mailbox::MailboxCtx,
    pub tokens: tokens::TokensCtx,
}

/// An optional tap on every value that crosses the component boundary, for audits and
/// for tests that prove what the guest can see.
#[derive(Clone, Default)]
pub struct Audit(Option<Arc<Tap>>);

/// What an [`Audit`] calls with each crossing.
pub type Tap = dyn Fn(&str) + Send + Sync;

impl Audit {
    /// A tap that hands each crossing, rendered as text, to `f`.
    pub fn new(f: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(f)))
    }

    /// Records one crossing; `what` is only rendered when a tap is set.
    pub fn record(&self, what: impl FnOnce() -> String) {
        if let Some(tap) = &self.0 {
            tap(&what());
        }
    }
}
