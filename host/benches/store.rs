//! What a mailbox trigger's visits to the store cost, on SQLite, with the calls made as
//! `serve` makes them: from tasks on a multi-threaded runtime of two workers, eight
//! triggers at once. One turn of a trigger reads, before its look at the mailbox, the
//! credentials' fingerprint, what it owes (runs cut short, post-actions) and its cursor,
//! and after it the retries due and what waits. Read one query at a time that is five
//! visits; `Store::outset` and `Store::due_and_waiting` make it two. Each visit is a
//! hand-over of the calling worker and a round trip to sqlx's SQLite thread.
//!
//! `cargo bench -p flowmail --bench store`: three interleaved rounds of each, the median
//! printed, with the process's CPU time per turn (all threads).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use flowmail::store::{HandledRow, Handling, Store};

const TRIGGERS: usize = 8;
const TURNS: usize = 500;

/// The process's CPU time so far (user and system, all threads).
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    // utime and stime, the 14th and 15th fields, in clock ticks of 10 ms.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

fn turn(store: &Store, workflow: &str, one_visit: bool) {
    if one_visit {
        let outset = store.outset(workflow, "a").unwrap();
        assert!(outset.cursor.is_some());
        let (due, _waiting) = store.due_and_waiting(workflow, "a", Some(10)).unwrap();
        assert_eq!(due.len(), 1);
    } else {
        store.credentials_fingerprint().unwrap();
        // The same query as the owed part of `outset`.
        store.post_actions_pending(workflow, "a").unwrap();
        assert!(store.cursor(workflow, "a").unwrap().is_some());
        let due = store
            .handled_in(workflow, "a", Handling::Pending, Some(10))
            .unwrap();
        assert_eq!(due.len(), 1);
        store.waiting(workflow, "a").unwrap();
    }
}

/// Wall time and CPU time per turn, `TRIGGERS` triggers turning `TURNS` times each.
fn round(rt: &tokio::runtime::Runtime, store: &Arc<Store>, one_visit: bool) -> (f64, f64) {
    let (started, cpu_before) = (Instant::now(), cpu());
    rt.block_on(async {
        let tasks: Vec<_> = (0..TRIGGERS)
            .map(|t| {
                let store = store.clone();
                tokio::spawn(async move {
                    let workflow = format!("w{t}");
                    for _ in 0..TURNS {
                        turn(&store, &workflow, one_visit);
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    let turns = (TRIGGERS * TURNS) as f64;
    (
        started.elapsed().as_secs_f64() * 1e6 / turns,
        (cpu() - cpu_before).as_secs_f64() * 1e6 / turns,
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("bench.db")).unwrap());
    for t in 0..TRIGGERS {
        let workflow = format!("w{t}");
        store.set_cursor(&workflow, "a", "7:40").unwrap();
        for (key, status, next) in [
            ("id:done", Handling::Done, 1),
            ("id:due", Handling::Pending, 5),
            ("id:later", Handling::Pending, 50),
        ] {
            let row = HandledRow {
                key: key.into(),
                message: "7:1".into(),
                status,
                attempts: 1,
                first_seen: 1,
                next_attempt: next,
                last_error: None,
                post_pending: false,
            };
            store.put_handled(&workflow, "a", &row).unwrap();
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(32)
        .enable_all()
        .build()
        .unwrap();
    // Warm the connections and the statement caches.
    round(&rt, &store, false);
    round(&rt, &store, true);
    let (mut apart, mut together) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        apart.push(round(&rt, &store, false));
        together.push(round(&rt, &store, true));
    }
    println!(
        "cores: {}; {TRIGGERS} triggers at once, {TURNS} turns each",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for (what, rounds) in [
        ("five reads, one visit each", apart),
        ("the same in two visits", together),
    ] {
        let wall = median(rounds.iter().map(|r| r.0).collect());
        let cpu = median(rounds.iter().map(|r| r.1).collect());
        println!("{what}: {wall:.0} µs per turn, CPU {cpu:.0} µs per turn");
    }
}
