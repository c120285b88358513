//! Messages per second to postfix's `smtp-sink`, then to a Rust sink that answers at once
//! (so that the server is not the bottleneck), on loopback, side by side in one run:
//! the plugin (sandboxed, a fresh instance per message), the same plugin logic compiled
//! natively over a lettre connection with TCP_NODELAY (the reference), the same logic
//! natively over flowmail's own SMTP transport (so that plugin against it is the sandbox's
//! cost alone), Python's smtplib, and postfix's `smtp-source`. Every client sends over one connection; every message is about 1 KB.
//! Then the plugin and its native twin send over 8 connections at once to the Rust sink
//! (8 senders, the account's `max_connections = 8`), against their own one-connection
//! rates.
//!
//! `cargo bench -p flowmail --bench smtp_throughput` (FLOWMAIL_BENCH_MESSAGES=N to change
//! the count from 10,000).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod native;
mod sinks;

use std::process::Command;
use std::time::{Duration, Instant};

use flowmail::app::{App, Plugin};
use flowmail::bindings::types::{Address, OutgoingMessage};
use flowmail::config::Config;
use flowmail_plugin as twin;

use self::native::{NativeHost, native_host, over_flowmail};
use self::sinks::{start_rust_sink, start_sink};

const BODY_LINE: &str = "The quick brown fox jumps over the lazy dog, and flowmail measures it.\n";

fn body() -> String {
    BODY_LINE.repeat(1024 / BODY_LINE.len() + 1)[..1024].to_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rate(n: usize, took: Duration) -> f64 {
    n as f64 / took.as_secs_f64()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: usize = std::env::var("FLOWMAIL_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let port = free_port();
    let _sink = start_sink(port);
    println!(
        "\n{n} messages of about 1 KB to postfix's smtp-sink on 127.0.0.1, one connection each client, median of 3 rounds"
    );
    table(&clients(port, n));
    let port = start_rust_sink();
    println!(
        "\n{n} messages of about 1 KB to a Rust sink that answers at once, on 127.0.0.1 ({} cores), one connection each client, median of 3 rounds",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let one = clients(port, n);
    table(&one);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "\n{n} messages of about 1 KB to the Rust sink over 8 connections at once ({cores} cores), median of 3 rounds"
    );
    let eight = concurrent(port, n, 8);
    println!("| client | msg/s, 8 connections | vs native | vs its 1 connection |");
    println!("|---|---:|---:|---:|");
    for (i, (name, r)) in eight.iter().enumerate() {
        println!(
            "| {name} | {r:.0} | {:.2} | {:.2} |",
            r / eight[1].1,
            r / one[i].1
        );
    }
}

/// The plugin and its native twin sending `n` messages over `conns` connections at once:
/// `conns` senders, each with `n / conns` messages; the median of three rounds each.
fn concurrent(port: u16, n: usize, conns: usize) -> Vec<(&'static str, f64)> {
    let per = n / conns;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("flowmail.toml"),
        format!(
            "[runtime]\ncache_dir = \"\"\n[accounts.sink]\nfrom = \"bench@example.com\"\n[accounts.sink.transport]\n\
             kind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\nmax_connections = {conns}\n"
        ),
    )
    .unwrap();
    let config = Config::load(&dir.path().join("flowmail.toml")).unwrap();
    let app = std::sync::Arc::new(App::open(&config, Plugin::Embedded).unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let message = std::sync::Arc::new(outgoing(&body()));
    rt.block_on(app.runtime().unwrap().send_mail("warm", "sink", &message))
        .unwrap();
    let plugin = (0..3)
        .map(|_| {
            let t = Instant::now();
            rt.block_on(async {
                let senders: Vec<_> = (0..conns)
                    .map(|_| {
                        let (app, message) = (app.clone(), message.clone());
                        tokio::spawn(async move {
                            for _ in 0..per {
                                app.runtime()
                                    .unwrap()
                                    .send_mail("bench", "sink", &message)
                                    .await
                                    .unwrap();
                            }
                        })
                    })
                    .collect();
                for s in senders {
                    s.await.unwrap();
                }
            });
            rate(per * conns, t.elapsed())
        })
        .collect();

    let native_message = native_outgoing(&body());
    let mut hosts: Vec<NativeHost> = (0..conns).map(|_| native_host(port)).collect();
    let native = (0..3)
        .map(|_| {
            let t = Instant::now();
            std::thread::scope(|scope| {
                for host in &mut hosts {
                    let native_message = &native_message;
                    scope.spawn(move || {
                        for _ in 0..per {
                            twin::actions::send_mail(&*host, "sink", native_message).unwrap();
                        }
                    });
                }
            });
            rate(per * conns, t.elapsed())
        })
        .collect();
    vec![
        (
            "flowmail plugin (sandboxed, fresh instance per message)",
            median(plugin),
        ),
        (
            "same logic natively, lettre with TCP_NODELAY",
            median(native),
        ),
    ]
}

fn outgoing(body: &str) -> OutgoingMessage {
    OutgoingMessage {
        sender: None,
        to: vec![Address {
            name: None,
            email: "sink@example.com".into(),
        }],
        cc: vec![],
        bcc: vec![],
        reply_to: vec![],
        subject: "throughput".into(),
        text: Some(body.to_owned()),
        html: None,
        attachments: vec![],
        forward_attachments: vec![],
        extra_headers: vec![],
    }
}

fn native_outgoing(body: &str) -> twin::types::OutgoingMessage {
    twin::types::OutgoingMessage {
        sender: None,
        to: vec![twin::types::Address {
            name: None,
            email: "sink@example.com".into(),
        }],
        cc: vec![],
        bcc: vec![],
        reply_to: vec![],
        subject: "throughput".into(),
        text: Some(body.to_owned()),
        html: None,
        attachments: vec![],
        forward_attachments: vec![],
        extra_headers: vec![],
    }
}

fn median(mut rounds: Vec<f64>) -> f64 {
    rounds.sort_by(f64::total_cmp);
    rounds[rounds.len() / 2]
}

fn table(rows: &[(&str, f64)]) {
    let plugin = rows[0].1;
    let native_rate = rows[1].1;
    println!("| client | msg/s | vs native |");
    println!("|---|---:|---:|");
    for (name, r) in rows {
        println!("| {name} | {r:.0} | {:.2} |", r / native_rate);
    }
    println!(
        "plugin/native (lettre) ratio: {:.2}; plugin against the same logic natively over flowmail's transport (the sandbox's cost alone): {:.2}",
        plugin / native_rate,
        plugin / rows[2].1
    );
}

/// Each client's rate to the SMTP server on `port`: the median of three interleaved rounds
/// of `n` messages for the plugin and its native twins, one round for the others.
fn clients(port: u16, n: usize) -> Vec<(&'static str, f64)> {
    let body = body();
    let mut rows: Vec<(&'static str, f64)> = Vec::new();

    // The plugin, through the host's SMTP transport.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("flowmail.toml"),
        format!(
            "[runtime]\ncache_dir = \"\"\n[accounts.sink]\nfrom = \"bench@example.com\"\n[accounts.sink.transport]\n\
             kind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n"
        ),
    )
    .unwrap();
    let config = Config::load(&dir.path().join("flowmail.toml")).unwrap();
    let app = App::open(&config, Plugin::Embedded).unwrap();
    let runtime = app.runtime().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let message = outgoing(&body);
    rt.block_on(runtime.send_mail("warm", "sink", &message))
        .unwrap();
    // The same logic natively, with lettre over a nodelay socket, and over flowmail's
    // transport.
    let lettre = native_host(port);
    let own = over_flowmail(app.relay(&config, "sink").unwrap());
    let native_message = native_outgoing(&body);
    let twin = |host: &NativeHost| {
        let t = Instant::now();
        for _ in 0..n {
            twin::actions::send_mail(host, "sink", &native_message).unwrap();
        }
        rate(n, t.elapsed())
    };
    // The rounds interleave, so that a change in the machine's speed meets all three.
    let (mut plugin, mut native, mut flowmail) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        let t = Instant::now();
        for _ in 0..n {
            rt.block_on(runtime.send_mail("bench", "sink", &message))
                .unwrap();
        }
        plugin.push(rate(n, t.elapsed()));
        native.push(twin(&lettre));
        flowmail.push(twin(&own));
    }
    rows.push((
        "flowmail plugin (sandboxed, fresh instance per message)",
        median(plugin),
    ));
    rows.push((
        "same logic natively, lettre with TCP_NODELAY",
        median(native),
    ));
    rows.push((
        "same logic natively, over flowmail's SMTP transport",
        median(flowmail),
    ));

    // Python's smtplib.
    let script = format!(
        "import smtplib,time\nmsg=('Subject: throughput\\r\\n\\r\\n'+{body:?}).encode()\ns=smtplib.SMTP('127.0.0.1',{port})\n\
         t=time.perf_counter()\nfor _ in range({n}): s.sendmail('bench@example.com',['sink@example.com'],msg)\n\
         print(time.perf_counter()-t)\ns.quit()\n"
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .expect("python3");
    let secs: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(f64::NAN);
    rows.push(("Python smtplib", n as f64 / secs));

    // postfix's C load generator.
    let t = Instant::now();
    let status = Command::new("smtp-source")
        .args([
            "-d",
            "-s",
            "1",
            "-m",
            &n.to_string(),
            "-l",
            "1024",
            &format!("127.0.0.1:{port}"),
        ])
        .status()
        .expect("smtp-source is missing; install it with: apt-get install -y postfix");
    assert!(status.success());
    rows.push(("postfix smtp-source", rate(n, t.elapsed())));

    rows
}
