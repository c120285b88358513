//! What a runner tells the outside as it goes: catch-up progress, lines worth showing,
//! alerts. The library never prints; the command line renders these (a progress bar on a
//! terminal, plain lines otherwise), and a web page or a test can collect them instead.

/// Receives what happens, as it happens. Every method has an empty default.
pub trait Events: Send + Sync {
    /// A catch-up of `workflow` starts on about `total` messages (0 when unknown).
    fn catch_up_started(&self, _workflow: &str, _total: u64) {}
    /// `scanned` more messages of the catch-up were looked at.
    fn catch_up_advanced(&self, _workflow: &str, _scanned: u64) {}
    /// The catch-up of `workflow` is over.
    fn catch_up_finished(&self, _workflow: &str) {}
    /// A line about `workflow` worth showing as it happens (a served trigger's report).
    fn line(&self, _workflow: &str, _line: &str) {}
    /// An alert: someone should look.
    fn alert(&self, _alert: &Alert<'_>) {}
}

/// What an alert is about. Alert mails go at most once an hour per kind and account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertKind {
    /// A trigger heard nothing from its mailbox for longer than its `silence_alert`.
    Silent,
    /// Runs fail on an account's credentials: it needs re-authorization or a new secret.
    Credentials,
    /// Messages went to the dead letters.
    DeadLetters,
    /// An OAuth2 client secret expires soon, or has.
    SecretExpiry,
    /// Sends keep failing for a message, retry after retry.
    DeliveryFailures,
}

impl AlertKind {
    /// The kind as the alert mail's subject names it.
    pub fn title(self) -> &'static str {
        match self {
            AlertKind::Silent => "trigger silent",
            AlertKind::Credentials => "credentials refused",
            AlertKind::DeadLetters => "dead letters",
            AlertKind::SecretExpiry => "client secret expiring",
            AlertKind::DeliveryFailures => "repeated delivery failures",
        }
    }
}

/// One alert.
#[derive(Debug, Clone, Copy)]
pub struct Alert<'a> {
    pub kind: AlertKind,
    /// The account it is about.
    pub account: &'a str,
    /// The workflow that raised it, or `settings` for the settings' own checks.
    pub workflow: &'a str,
    pub text: &'a str,
}

/// Tells no one.
pub struct Silent;

impl Events for Silent {}

/// The runner's default sink.
pub static SILENT: Silent = Silent;
