//! The host capabilities, one module each: a context, a view implementing the generated
//! `Host` trait, a small backend trait, and `add_to_linker`.

use std::sync::{Arc, RwLock};

pub mod log;
pub mod mailbox;
pub mod tokens;
pub mod transport;

/// Everything the capabilities serve, shared by all steps.
#[derive(Clone, Default)]
pub struct Capabilities {
    pub transport: transport::TransportCtx,
    pub mailbox: mailbox::MailboxCtx,
    pub tokens: tokens::TokensCtx,
}

impl Capabilities {
    /// Forgets everything of `account`.
    pub fn remove_account(&mut self, account: &str) {
        self.transport.accounts.remove(account);
        self.mailbox.accounts.remove(account);
        self.tokens.accounts.remove(account);
        self.tokens.managers.remove(account);
    }
}

/// The capabilities in force. A step takes the set current when it starts and keeps it to
/// its end; replacing the set (an account edited while `serve` runs) affects later steps.
#[derive(Default)]
pub struct Live(RwLock<Arc<Capabilities>>);

impl Live {
    pub fn new(caps: Capabilities) -> Self {
        Self(RwLock::new(Arc::new(caps)))
    }

    /// The set in force now.
    pub fn current(&self) -> Arc<Capabilities> {
        match self.0.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts `caps` in force for the steps that start from now on.
    pub fn replace(&self, caps: Capabilities) {
        let caps = Arc::new(caps);
        match self.0.write() {
            Ok(mut c) => *c = caps,
            Err(poisoned) => *poisoned.into_inner() = caps,
        }
    }
}

/// The accounts one call of the plugin may reach: those the call names (the step's
/// account, and the accounts of the attachments it forwards). A plugin that asks any
/// capability for another account gets `access-denied`, so a workflow reaches only the
/// accounts its trigger and steps name.
#[derive(Debug, Clone, Default)]
pub struct Scope(std::collections::BTreeSet<String>);

impl Scope {
    pub fn of(accounts: impl IntoIterator<Item = String>) -> Self {
        Self(accounts.into_iter().collect())
    }

    /// `Ok` when `account` is one this call named.
    pub fn admit(&self, account: &str) -> Result<(), crate::bindings::MailError> {
        if self.0.contains(account) {
            return Ok(());
        }
        let named: Vec<String> = self.0.iter().map(|a| format!("`{a}`")).collect();
        Err(crate::bindings::MailError::AccessDenied(format!(
            "the plugin asked for account `{account}`, but this step names only {}; a step reaches only the accounts it names (not retryable: name the account in the step)",
            named.join(", ")
        )))
    }
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
