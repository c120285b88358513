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
    /// An alert about `workflow`: someone should look.
    fn alert(&self, _workflow: &str, _alert: &str) {}
}

/// Tells no one.
pub struct Silent;

impl Events for Silent {}

/// The runner's default sink.
pub static SILENT: Silent = Silent;
