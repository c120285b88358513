//! The host side of the `flowmail:mail` WIT world.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "mail-plugin",
    imports: { default: async | trappable },
    exports: { default: async },
    with: {
        "flowmail:mail/tokens.credential": Credential,
    },
});

pub use self::exports::flowmail::mail::actions;
pub use self::flowmail::mail::{log, mailbox, tokens, transport, types};
pub use types::MailError;

/// The guest's handle on an account's credential: the account it stands for, nothing
/// secret.
#[derive(Debug)]
pub struct Credential {
    pub account: String,
}

impl MailError {
    /// The case's name as the WIT spells it, for reports and JSON.
    pub fn kind_name(&self) -> &'static str {
        match self {
            MailError::InvalidInput(_) => "invalid-input",
            MailError::AccessDenied(_) => "access-denied",
            MailError::AuthFailed(_) => "auth-failed",
            MailError::Transient(_) => "transient",
            MailError::Permanent(_) => "permanent",
            MailError::NotFound(_) => "not-found",
        }
    }

    /// Whether trying the same thing again later, unchanged, can succeed. Only transient
    /// failures (4xx replies, lost connections, timeouts) qualify; every other case needs
    /// a change first: of the input, the config, or the credentials.
    pub fn is_retryable(&self) -> bool {
        matches!(self, MailError::Transient(_))
    }

    /// What a failed run should do with the message(s) it ran for. This is the one place
    /// that decides it, from the case alone.
    pub fn recovery(&self) -> Recovery {
        match self {
            MailError::Transient(_) => Recovery::Retry,
            MailError::AuthFailed(_) => Recovery::Pause,
            MailError::InvalidInput(_)
            | MailError::Permanent(_)
            | MailError::NotFound(_)
            | MailError::AccessDenied(_) => Recovery::DeadLetter,
        }
    }

    /// The text of the error, with its fix where one is known; for `invalid-input` the
    /// reason alone (see [`MailError::field`]).
    pub fn message(&self) -> &str {
        match self {
            MailError::InvalidInput(f) => &f.reason,
            MailError::AccessDenied(m)
            | MailError::AuthFailed(m)
            | MailError::Transient(m)
            | MailError::Permanent(m)
            | MailError::NotFound(m) => m,
        }
    }

    /// The field an `invalid-input` error names.
    pub fn field(&self) -> Option<&str> {
        match self {
            MailError::InvalidInput(f) => Some(&f.field),
            _ => None,
        }
    }

    /// A sentence for people: the case, whether retrying helps, and the text with its fix.
    pub fn describe(&self) -> Described<'_> {
        Described(self)
    }
}

/// What to do with a message whose run failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Recovery {
    /// Try again later with backoff: the failure may pass by itself.
    Retry,
    /// Put the message in the dead letters now: the same run would fail the same way
    /// until the input, the workflow or the config is changed.
    DeadLetter,
    /// The message is not at fault, the account's credentials are: keep the message
    /// waiting with its attempts untouched, pause the trigger, and go on once they work.
    Pause,
}

/// A [`MailError`] rendered for people (the generated `Display` is its `Debug`).
pub struct Described<'a>(&'a MailError);

impl std::fmt::Display for Described<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0.message();
        match self.0 {
            MailError::InvalidInput(e) => write!(f, "field `{}`: {m}", e.field),
            MailError::AccessDenied(_) => write!(f, "access denied: {m}"),
            MailError::AuthFailed(_) => write!(f, "authentication failed: {m}"),
            MailError::Transient(_) => write!(f, "temporary failure, retrying later can help: {m}"),
            MailError::Permanent(_) => write!(f, "permanent failure: {m}"),
            MailError::NotFound(_) => write!(f, "not found: {m}"),
        }
    }
}
