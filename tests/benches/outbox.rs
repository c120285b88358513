//! Outbox throughput in one run: messages per second from the first enqueue to the last
//! one delivered to postfix's `smtp-sink` on loopback, through the durable outbox on
//! SQLite and on PostgreSQL with 1 and 4 delivery workers, beside direct sending (the
//! step sends before it returns). The steps enqueue one after another while the workers
//! deliver, as a burst of workflow runs would; each message is about 1 KB. The figure is
//! the median of three rounds.
//!
//! `cargo bench -p flowmail-tests --bench outbox` (FLOWMAIL_BENCH_MESSAGES=N to change
//! the count per round from 2,000). It needs `smtp-sink` (postfix) and PostgreSQL, as the
//! tests.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use flowmail::app::App;
use flowmail::caps::Audit;
use flowmail::cluster::outbox::Workers;
use flowmail::store::Store;
use flowmail_tests::postgres::Postgres;
use flowmail_tests::sink::SmtpSink;
use flowmail_tests::{Workspace, text_message};

const BODY_LINE: &str = "The quick brown fox jumps over the lazy dog, and flowmail measures it.\n";

fn body() -> String {
    BODY_LINE.repeat(1024 / BODY_LINE.len() + 1)[..1024].to_owned()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A workspace whose account `sink` sends to the sink, `delivery` as given, on `store`.
fn workspace(port: u16, delivery: &str, store: &str) -> Workspace {
    let ws = Workspace::with_config("").unwrap();
    ws.write_config(format!(
        "{store}\n[runtime]\ncache_dir = \"{}\"\n[accounts.sink]\nfrom = \"bench@example.com\"\n\
             delivery = \"{delivery}\"\n[accounts.sink.transport]\nkind = \"smtp\"\n\
             host = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n",
        std::env::temp_dir().join("flowmail-bench-cache").display()
    ))
    .unwrap();
    ws
}

fn sent(store: &Store) -> u64 {
    store
        .outbox_counts()
        .unwrap()
        .iter()
        .filter(|c| c.status == "sent")
        .map(|c| c.count)
        .sum()
}

/// One round through the outbox: messages per second, enqueue to delivered.
async fn queued(app: &Arc<App>, store: &Store, workers: usize, n: usize) -> f64 {
    let (stop, rx) = tokio::sync::watch::channel(false);
    let running = {
        let app = app.clone();
        tokio::spawn(async move {
            Workers {
                app,
                node: "bench".into(),
                data_center: "default".into(),
                config: flowmail::config::OutboxConfig {
                    workers,
                    retry_base_secs: 1,
                    give_up_hours: 48,
                    ..Default::default()
                },
                events: &flowmail::workflow::events::SILENT,
            }
            .run(rx)
            .await;
        })
    };
    let already = sent(store);
    let message = text_message("sink@example.com", "outbox", &body());
    let rt = app.runtime().unwrap();
    let t = Instant::now();
    for _ in 0..n {
        rt.send_mail("bench", "sink", &message).await.unwrap();
    }
    while sent(store) < already + n as u64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = t.elapsed();
    let _ = stop.send(true);
    running.await.unwrap();
    n as f64 / took.as_secs_f64()
}

/// One round of direct sends: messages per second.
async fn direct(app: &Arc<App>, n: usize) -> f64 {
    let message = text_message("sink@example.com", "direct", &body());
    let rt = app.runtime().unwrap();
    let t = Instant::now();
    for _ in 0..n {
        rt.send_mail("bench", "sink", &message).await.unwrap();
    }
    n as f64 / t.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: usize = std::env::var("FLOWMAIL_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let sink = SmtpSink::start().unwrap();
    let pg = Postgres::start().unwrap();
    let mut rows: Vec<(String, f64)> = Vec::new();

    let ws = workspace(sink.port, "direct", "[store]\npath = \"var/flowmail.db\"");
    let (app, _) = ws.app(None, Audit::default()).unwrap();
    direct(&app, 50).await;
    let mut rounds = Vec::new();
    for _ in 0..3 {
        rounds.push(direct(&app, n).await);
    }
    rows.push(("direct (the step sends)".into(), median(rounds)));

    for (name, store) in [
        ("SQLite", "[store]\npath = \"var/flowmail.db\"".to_owned()),
        (
            "PostgreSQL",
            format!("[store]\nurl = \"{}\"", pg.database("bench").unwrap()),
        ),
    ] {
        let ws = workspace(sink.port, "queued", &store);
        let (app, store) = ws.app(None, Audit::default()).unwrap();
        queued(&app, &store, 1, 50).await;
        for workers in [1, 4] {
            let mut rounds = Vec::new();
            for _ in 0..3 {
                rounds.push(queued(&app, &store, workers, n).await);
            }
            rows.push((
                format!("outbox on {name}, {workers} worker(s)"),
                median(rounds),
            ));
        }
    }

    println!(
        "\n{n} messages of about 1 KB to smtp-sink on 127.0.0.1, median of 3 rounds, {} cores\n",
        std::thread::available_parallelism().map_or(0, |c| c.get())
    );
    let reference = rows[0].1;
    println!("| path | msg/s | / direct |\n|---|---|---|");
    for (name, rate) in &rows {
        println!("| {name} | {rate:.0} | {:.2} |", rate / reference);
    }
}
