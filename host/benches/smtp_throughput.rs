//! Messages per second to postfix's `smtp-sink`, then to a Rust sink that answers at once
//! (so that the server is not the bottleneck), on loopback, side by side in one run:
//! the plugin (sandboxed, a fresh instance per message), the same plugin logic compiled
//! natively over a lettre connection with TCP_NODELAY, Python's smtplib, and postfix's
//! `smtp-source`. Every client sends over one connection; every message is about 1 KB.
//! Then the plugin and its native twin send over 8 connections at once to the Rust sink
//! (8 senders, the account's `max_connections = 8`), against their own one-connection
//! rates.
//!
//! `cargo bench -p flowmail --bench smtp_throughput` (FLOWMAIL_BENCH_MESSAGES=N to change
//! the count from 10,000).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cell::RefCell;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flowmail::app::{App, Plugin};
use flowmail::bindings::types::{Address, OutgoingMessage};
use flowmail::config::Config;
use flowmail_plugin as native;
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::extension::ClientId;

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

struct Sink(std::process::Child);

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An SMTP server that answers every command at once and keeps no message: a sink that
/// is not the bottleneck, unlike `smtp-sink`, which tops out near 2,900 msg/s here.
fn start_rust_sink() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve_sink(stream));
        }
    });
    port
}

fn serve_sink(stream: std::net::TcpStream) {
    use std::io::{BufRead, Write};
    stream.set_nodelay(true).unwrap();
    let mut out = std::io::BufWriter::new(stream.try_clone().unwrap());
    let mut lines = std::io::BufReader::new(stream);
    let mut line = Vec::new();
    let reply = |out: &mut std::io::BufWriter<std::net::TcpStream>, text: &[u8]| {
        out.write_all(text).and_then(|()| out.flush()).is_ok()
    };
    if !reply(&mut out, b"220 sink ESMTP\r\n") {
        return;
    }
    loop {
        line.clear();
        if lines.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
            return;
        }
        let verb = line.get(..4).map(|v| v.to_ascii_uppercase());
        let answer: &[u8] = match verb.as_deref() {
            Some(b"EHLO") => b"250-sink\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
            Some(b"DATA") => {
                if !reply(&mut out, b"354 go ahead\r\n") {
                    return;
                }
                loop {
                    line.clear();
                    if lines.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if line == b".\r\n" {
                        break;
                    }
                }
                b"250 2.0.0 queued\r\n"
            }
            Some(b"QUIT") => {
                reply(&mut out, b"221 bye\r\n");
                return;
            }
            _ => b"250 ok\r\n",
        };
        if !reply(&mut out, answer) {
            return;
        }
    }
}

fn start_sink(port: u16) -> Sink {
    let child = Command::new("smtp-sink")
        .args(["-u", "nobody", &format!("127.0.0.1:{port}"), "256"])
        .stdout(Stdio::null())
        .spawn()
        .expect("smtp-sink is missing; install it with: apt-get install -y postfix");
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "smtp-sink did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    Sink(child)
}

/// The plugin's own logic, natively, sending over one lettre connection.
struct NativeHost {
    rt: tokio::runtime::Runtime,
    conn: RefCell<AsyncSmtpConnection>,
}

impl native::host::Host for NativeHost {
    fn policy(
        &self,
        _: &str,
    ) -> Result<native::transport::AccountPolicy, native::types::MailError> {
        Ok(native::transport::AccountPolicy {
            default_sender: Some(native::types::Address {
                name: None,
                email: "bench@example.com".into(),
            }),
            required_sender: None,
            max_message_bytes: 1 << 20,
            max_attachment_bytes: 1 << 20,
        })
    }
    fn credential(
        &self,
        _: &str,
    ) -> Result<native::host::CredentialInfo, native::types::MailError> {
        Ok(native::host::CredentialInfo {
            kind: native::tokens::AuthKind::None,
            username: None,
            state: native::tokens::CredentialState::Ready,
        })
    }
    fn send(
        &self,
        _: &str,
        envelope: &native::transport::Envelope,
        message: &[u8],
    ) -> Result<native::transport::Delivery, native::types::MailError> {
        let env = lettre::address::Envelope::new(
            Some(envelope.sender.parse().unwrap()),
            envelope
                .recipients
                .iter()
                .map(|r| r.parse().unwrap())
                .collect(),
        )
        .unwrap();
        self.rt
            .block_on(self.conn.borrow_mut().send(&env, message))
            .unwrap();
        Ok(native::transport::Delivery {
            transport: "smtp".into(),
            status: native::transport::DeliveryStatus::Queued,
            accepted: envelope.recipients.clone(),
            reference: None,
        })
    }
    fn fetch_after(
        &self,
        _: &str,
        _: Option<&str>,
        _: u32,
        _: &native::mailbox::Search,
        _: Option<native::mailbox::SizeCap>,
    ) -> Result<native::mailbox::Batch, native::types::MailError> {
        unreachable!()
    }
    fn fetch(
        &self,
        _: &str,
        _: &str,
    ) -> Result<native::mailbox::RawMessage, native::types::MailError> {
        unreachable!()
    }
    fn warn(&self, _: &str) {}
    fn now(&self) -> i64 {
        1_800_000_000
    }
    fn random(&self) -> u128 {
        7
    }
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
                            native::actions::send_mail(&*host, "sink", native_message).unwrap();
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

fn native_outgoing(body: &str) -> native::types::OutgoingMessage {
    native::types::OutgoingMessage {
        sender: None,
        to: vec![native::types::Address {
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

/// The native twin's host: one lettre connection to `port`, its own runtime.
fn native_host(port: u16) -> NativeHost {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let conn = rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        tcp.set_nodelay(true).unwrap();
        AsyncSmtpConnection::connect_with_transport(
            Box::new(tcp),
            &ClientId::Domain("localhost".into()),
        )
        .await
        .unwrap()
    });
    NativeHost {
        rt,
        conn: RefCell::new(conn),
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
        "plugin/native ratio (the sandbox's cost): {:.2}",
        plugin / native_rate
    );
}

/// Each client's rate to the SMTP server on `port`: the median of three rounds of `n`
/// messages for the plugin and its native twin, one round for the others.
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
    let rounds = (0..3)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                rt.block_on(runtime.send_mail("bench", "sink", &message))
                    .unwrap();
            }
            rate(n, t.elapsed())
        })
        .collect();
    rows.push((
        "flowmail plugin (sandboxed, fresh instance per message)",
        median(rounds),
    ));

    // The same logic natively, with lettre over a nodelay socket.
    let host = native_host(port);
    let native_message = native_outgoing(&body);
    let rounds = (0..3)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                native::actions::send_mail(&host, "sink", &native_message).unwrap();
            }
            rate(n, t.elapsed())
        })
        .collect();
    rows.push((
        "same logic natively, lettre with TCP_NODELAY",
        median(rounds),
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
