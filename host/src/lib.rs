//! flowmail's host: loads the mail plugin component, serves it the smtp, mailbox, tokens
//! and log capabilities, and runs workflows whose steps call the plugin's actions.

pub mod app;
pub mod auth;
pub mod bindings;
pub mod blocking;
pub mod caps;
pub mod cluster;
pub mod config;
pub mod metrics;
pub mod net;
pub mod runtime;
pub mod secret;
pub mod status;
pub mod store;
pub mod web;
pub mod workflow;

/// A boxed future, for traits that must stay object safe.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// The plugin built from `plugin/` by the build script, used unless `--plugin` says otherwise.
pub const DEFAULT_PLUGIN: &[u8] = include_bytes!(env!("FLOWMAIL_DEFAULT_PLUGIN"));
