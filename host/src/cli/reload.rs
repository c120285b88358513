//! `serve` reloads its `--plugin` file on SIGHUP: the steps that start afterwards run the
//! new plugin, the ones under way finish on the old, and triggers and connections stay.
//! A file that is not a component of the world leaves the old plugin serving; the reason
//! is logged and recorded on the node, where `flowmail status` shows it.

use std::sync::Arc;

use flowmail::app::{App, Reload};
use tokio::signal::unix::{Signal, SignalKind, signal};

/// The SIGHUP listener, taken before start-up work so that a SIGHUP then does not kill
/// the process (its default action).
pub fn listen() -> Option<Signal> {
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("SIGHUP cannot be caught, so the plugin cannot be reloaded: {e}");
            None
        }
    }
}

/// Reloads the plugin at every SIGHUP, recording the outcome on the node.
pub async fn on_hangup(hangup: Option<Signal>, app: Arc<App>, node: String) {
    let pid = std::process::id();
    let Some(mut hangup) = hangup else {
        return std::future::pending().await;
    };
    while hangup.recv().await.is_some() {
        let reloading = app.clone();
        let outcome = tokio::task::spawn_blocking(move || reloading.reload_plugin()).await;
        let error = match outcome {
            Ok(Ok(Reload::Swapped(label))) => {
                eprintln!("plugin reloaded: steps that start from now on run {label}");
                None
            }
            Ok(Ok(Reload::Unchanged(label))) => {
                eprintln!("plugin unchanged on SIGHUP: {label} serves already");
                None
            }
            Ok(Err(e)) => Some(format!("{e:#}")),
            Err(e) => Some(format!("the reload stopped: {e}")),
        };
        if let Some(e) = &error {
            eprintln!(
                "the plugin was not reloaded: {e}; {} keeps serving",
                app.serving()
            );
        }
        record(&app, &node, pid, error.as_deref());
    }
}

/// Records the plugin in force on the node; `serve` calls it before the first step, so
/// that `status` names the plugin of every run it shows.
pub fn serving(app: &App, node: &str) {
    record(app, node, std::process::id(), None);
}

fn record(app: &App, node: &str, pid: u32, error: Option<&str>) {
    if let Err(e) = app
        .store()
        .set_node_plugin(node, pid, &app.serving(), error)
    {
        tracing::warn!("the node's plugin could not be recorded: {e}");
    }
}
