//! Blocking work (a store query waited for, a file written) called from async code. On the
//! multi-threaded runtime that `serve` runs on, the worker thread hands its other tasks to
//! another worker for the time of the call, so one trigger's commit does not hold up the
//! IDLE answers and runs of the others. Elsewhere (a current-thread runtime, a plain
//! thread) the call simply runs.

use std::time::Duration;

use tokio::runtime::{Handle, RuntimeFlavor};

/// At most this many threads take over a worker's tasks while it blocks, or run
/// `spawn_blocking` work. tokio's default, 512, let a thousand triggers starting at once
/// grow the process to 514 threads, each with its stack and allocator arena (147 MB
/// resident against 113 MB bounded), all exiting ten seconds later at once. A
/// blocked call beyond the bound still runs; only the hand-over of its worker's other
/// tasks waits for a thread.
const MAX_BLOCKING_THREADS: usize = 32;

/// How long an idle blocking thread is kept for the next call.
const KEEP_ALIVE: Duration = Duration::from_secs(60);

/// The multi-threaded runtime of the commands that talk to servers or run the plugin.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .thread_keep_alive(KEEP_ALIVE)
        .enable_all()
        .build()
}

/// Runs `f`, keeping the async worker it is called on free for other tasks meanwhile.
pub fn off_async<T>(f: impl FnOnce() -> T) -> T {
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn runs_outside_any_runtime() {
        assert_eq!(off_async(|| 7), 7);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn runs_inline_on_a_current_thread_runtime() {
        assert_eq!(off_async(|| "inline"), "inline");
    }

    /// A task blocked in `off_async` on a runtime of one worker does not stop another
    /// task: the worker's other tasks move to a fresh thread meanwhile.
    #[test]
    fn a_blocked_task_leaves_the_others_running() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let blocked = tokio::spawn(async move {
                // Waits until the other task has run: without `off_async` this would
                // deadlock the single worker.
                off_async(|| rx.recv_timeout(Duration::from_secs(10)))
            });
            let other = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                tx.send(()).unwrap();
            });
            let started = Instant::now();
            other.await.unwrap();
            assert!(blocked.await.unwrap().is_ok(), "the other task never ran");
            assert!(started.elapsed() < Duration::from_secs(10));
        });
    }
}
