//! Progress of a long catch-up: a bar on a terminal, plain log lines otherwise.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use flowmail::workflow::{Alert, Events};

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
            let known = (total > 0).then_some(total);
            let bar = ProgressBar::with_draw_target(known, ProgressDrawTarget::stderr());
            let template = if known.is_some() {
                "{prefix} [{bar:40}] {pos}/{len} messages ({per_sec}, {eta} left)"
            } else {
                "{prefix} {spinner} {pos} messages ({per_sec})"
            };
            let style = ProgressStyle::with_template(template)
                .map(|s| s.progress_chars("=> "))
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_prefix(workflow.to_owned());
            return Self::Bar(bar);
        }
        if total > 0 {
            eprintln!("{workflow}: catching up on {total} message(s)");
        } else {
            // A Graph delta link cannot tell how much follows it.
            eprintln!("{workflow}: catching up");
        }
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
            Self::Bar(bar) => {
                bar.inc(n);
                // Mail that arrived during the catch-up: the total grows with it.
                if bar.length().is_some_and(|len| bar.position() > len) {
                    bar.set_length(bar.position());
                }
            }
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
                    // Mail that arrived during the catch-up can take it past the count
                    // taken at its start.
                    if *total > 0 {
                        let shown = (*done).max(*total);
                        eprintln!("{workflow}: {done}/{shown} message(s) ({rate:.0}/s)");
                    } else {
                        eprintln!("{workflow}: {done} message(s) ({rate:.0}/s)");
                    }
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

/// The command line's [`Events`] sink: catch-up progress on stderr, lines on stdout as
/// they happen, alerts on stderr.
#[derive(Default)]
pub struct Console {
    progress: Mutex<HashMap<String, Progress>>,
    /// Lines name their workflow unless one workflow runs (`flowmail run`).
    unnamed: bool,
}

impl Console {
    /// A console for one workflow: its lines need no name.
    pub fn for_one_workflow() -> Self {
        Self {
            unnamed: true,
            ..Self::default()
        }
    }
}

impl Events for Console {
    fn catch_up_started(&self, workflow: &str, total: u64) {
        if let Ok(mut p) = self.progress.lock() {
            p.insert(workflow.to_owned(), Progress::start(workflow, total));
        }
    }

    fn catch_up_advanced(&self, workflow: &str, scanned: u64) {
        if let Ok(mut p) = self.progress.lock()
            && let Some(p) = p.get_mut(workflow)
        {
            p.advance(scanned);
        }
    }

    fn catch_up_finished(&self, workflow: &str) {
        if let Ok(mut p) = self.progress.lock()
            && let Some(p) = p.remove(workflow)
        {
            p.finish();
        }
    }

    fn line(&self, workflow: &str, line: &str) {
        let text = if self.unnamed {
            line.to_owned()
        } else {
            format!("{workflow}: {line}")
        };
        // A progress bar on the terminal steps aside for the line.
        match self
            .progress
            .lock()
            .ok()
            .as_ref()
            .and_then(|p| p.get(workflow))
        {
            Some(Progress::Bar(bar)) => bar.suspend(|| println!("{text}")),
            _ => println!("{text}"),
        }
    }

    fn alert(&self, alert: &Alert<'_>) {
        flowmail::metrics::alert(alert.kind.title(), alert.account);
        eprintln!("ALERT: {}: {}", alert.workflow, alert.text);
    }
}
