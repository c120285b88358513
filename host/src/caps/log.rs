//! The `log` capability: the plugin's diagnostics, in the host's log with the step name.

use wasmtime::component::{HasData, Linker};

use super::Audit;
use crate::bindings::log::{self as generated, Level};

/// The most lines one step may log; past it the rest of the step's log is dropped, with
/// one line that says so, so that a plugin flooding its log cannot flood the host's.
pub const MAX_LINES: u32 = 1000;
/// The longest line kept; a longer one is cut, saying how much was cut.
pub const MAX_LINE_BYTES: usize = 8192;

/// What one step has logged so far.
#[derive(Debug, Default)]
pub struct Budget {
    lines: u32,
    dropped: u64,
}

impl Budget {
    /// Lines dropped past [`MAX_LINES`].
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// The view that serves one step.
pub struct Log<'a> {
    pub step: &'a str,
    pub audit: &'a Audit,
    pub budget: &'a mut Budget,
}

impl generated::Host for Log<'_> {
    async fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let step = self.step;
        if self.budget.lines >= MAX_LINES {
            if self.budget.dropped == 0 {
                tracing::warn!(
                    step,
                    "the plugin logged more than {MAX_LINES} lines in this step; the rest of its log is dropped"
                );
            }
            self.budget.dropped += 1;
            return Ok(());
        }
        self.budget.lines += 1;
        let message = if message.len() > MAX_LINE_BYTES {
            let mut end = MAX_LINE_BYTES;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}... ({} bytes cut)", &message[..end], message.len() - end)
        } else {
            message
        };
        self.audit
            .record(|| format!("import log.log {level:?} {message}"));
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
