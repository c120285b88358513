//! The `log` capability: the plugin's diagnostics, in the host's log with the step name.

use wasmtime::component::{HasData, Linker};

use super::Audit;
use crate::bindings::log::{self as generated, Level};

/// The view that serves one step.
pub struct Log<'a> {
    pub step: &'a str,
    pub audit: &'a Audit,
}

impl generated::Host for Log<'_> {
    async fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        self.audit
            .record(|| format!("import log.log {level:?} {message}"));
        let step = self.step;
        match level {
            Level::Trace => tracing::trace!(step, "{message}"),
            Level::Debug => tracing::debug!(step, "{message}"),
            Level::Info => tracing::info!(step, "{message}"),
            Level::Warn => tracing::warn!(step, "{message}"),
            Level::Error => tracing::error!(step, "{message}"),
        }
        Ok(())
    }
}

struct HasLog;

impl HasData for HasLog {
    type Data<'a> = Log<'a>;
}

/// Adds the `log` interface to `linker`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    f: fn(&mut T) -> Log<'_>,
) -> wasmtime::Result<()> {
    generated::add_to_linker::<T, HasLog>(linker, f)
}
