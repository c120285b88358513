//! Progress of a long catch-up: a bar on a terminal, plain log lines otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Shows how far a catch-up has come.
pub enum Progress {
    Bar(ProgressBar),
    Lines {
        workflow: String,
        total: u64,
        done: u64,
        started: Instant,
        last: Instant,
    },
}

impl Progress {
    /// Starts showing progress of `total` messages (0 when unknown) on stderr.
    pub fn start(workflow: &str, total: u64) -> Self {
        let now = Instant::now();
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{prefix} [{bar:40}] {pos}/{len} messages ({per_sec}, {eta} left)",
            )
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_prefix(workflow.to_owned());
            return Self::Bar(bar);
        }
        eprintln!("{workflow}: catching up on {total} message(s)");
        Self::Lines {
            workflow: workflow.to_owned(),
            total,
            done: 0,
            started: now,
            last: now,
        }
    }

    /// Counts `n` more messages looked at.
    pub fn advance(&mut self, n: u64) {
        match self {
            Self::Bar(bar) => bar.inc(n),
            Self::Lines {
                workflow,
                total,
                done,
                started,
                last,
            } => {
                *done += n;
                if last.elapsed() >= Duration::from_secs(2) {
                    *last = Instant::now();
                    let rate = *done as f64 / started.elapsed().as_secs_f64().max(0.001);
                    eprintln!("{workflow}: {done}/{total} message(s) ({rate:.0}/s)");
                }
            }
        }
    }

    /// Ends the display.
    pub fn finish(self) {
        match self {
            Self::Bar(bar) => bar.finish(),
            Self::Lines {
                workflow,
                done,
                started,
                ..
            } => eprintln!(
                "{workflow}: caught up on {done} message(s) in {:.1}s",
                started.elapsed().as_secs_f64()
            ),
        }
    }
}
