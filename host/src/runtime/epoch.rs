//! The epoch that bounds a step's time. An engine's ticker thread advances it every
//! [`TICK`] while a step runs anywhere in the process, and sleeps while none does, so that
//! an idle `serve` (a thousand triggers waiting in IDLE) is not woken a hundred times a
//! second for nothing. A step's deadline counts ticks from its start, and ticks pass only
//! while at least that step runs, so pausing between steps changes no deadline.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use wasmtime::EngineWeak;

/// How often the epoch advances while steps run.
pub const TICK: Duration = Duration::from_millis(10);

/// How often a sleeping ticker looks whether its engine is gone.
const ENGINE_CHECK: Duration = Duration::from_secs(1);

/// Steps under way in this process, over all engines, and the tickers waiting for one.
struct Counts {
    steps: usize,
    /// Tickers asleep on [`STARTED`]; a starting step wakes them only if there are any,
    /// which saves a system call per step while steps follow one another.
    sleeping: usize,
}

static RUNNING: Mutex<Counts> = Mutex::new(Counts {
    steps: 0,
    sleeping: 0,
});
static STARTED: Condvar = Condvar::new();

fn running() -> MutexGuard<'static, Counts> {
    // The counts stay right even if a holder panicked: each change is one statement.
    RUNNING.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Counts a step as running while it lives; held by the step's store.
pub struct Running(());

impl Running {
    pub fn start() -> Self {
        let mut counts = running();
        counts.steps += 1;
        let wake = counts.sleeping > 0;
        drop(counts);
        if wake {
            STARTED.notify_all();
        }
        Self(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut counts = running();
        counts.steps = counts.steps.saturating_sub(1);
    }
}

/// Starts the ticker of the engine behind `engine`; it ends once the engine is dropped.
pub fn spawn_ticker(engine: EngineWeak) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("flowmail-epoch".into())
        .spawn(move || {
            loop {
                let mut counts = running();
                while counts.steps == 0 {
                    counts.sleeping += 1;
                    counts = STARTED
                        .wait_timeout(counts, ENGINE_CHECK)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                    counts.sleeping = counts.sleeping.saturating_sub(1);
                    if engine.upgrade().is_none() {
                        return;
                    }
                }
                drop(counts);
                let Some(live) = engine.upgrade() else {
                    return;
                };
                live.increment_epoch();
                drop(live);
                std::thread::sleep(TICK);
            }
        })
        .map(drop)
}
