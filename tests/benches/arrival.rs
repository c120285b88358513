//! Arrival to run with IDLE on dovecot, and what many mailboxes cost one `flowmail serve`.
//!
//! Two rounds, each a real `flowmail serve` (the release binary: `cargo build --release
//! -p flowmail` first) against a private dovecot on 127.0.0.1, with the soft open-file limit
//! at the usual default of 1,024 (serve raises it to the hard limit):
//!
//! 1. one mailbox: 200 messages delivered by LMTP one at a time, each after the run of the
//!    one before;
//! 2. 1,000 mailboxes (1,000 dovecot users, one trigger each): the time until every
//!    trigger waits, resident memory after that, CPU while idle, then 200 messages to 200
//!    different users delivered as fast as LMTP takes them, and last a restart of serve
//!    on the same store and mailboxes, measured as the first start.
//!
//! For each message: the delivery (LMTP's 250 after the data), the trigger's wake with news
//! (the server's share ends there) and the start of the run (flowmail's share), both read
//! from serve's debug log. Run with `cargo bench -p flowmail-tests --bench arrival`;
//! `FLOWMAIL_BENCH_MAILBOXES` changes the 1,000 and
//! `FLOWMAIL_BENCH_MESSAGES` the 200, and `FLOWMAIL_BENCH_LOGS=DIR` keeps serve's logs;
//! `FLOWMAIL_BENCH_RUST_LOG` sets serve's log filter (it must keep
//! `flowmail::workflow=debug`, which the figures are read from; add `sqlx::query=debug`
//! to see each query).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flowmail_tests::stack::{MailStack, PASSWORD};

fn main() {
    let many: usize = std::env::var("FLOWMAIL_BENCH_MAILBOXES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let messages: usize = std::env::var("FLOWMAIL_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    assert!(
        messages <= many,
        "{messages} messages need as many mailboxes, one each"
    );
    let limit = many + 200;
    let stack = MailStack::start_with(
        None,
        &format!(
            "service imap {{\n  process_limit = {limit}\n}}\n\
             service imap-login {{\n  process_limit = {limit}\n  service_count = 0\n  process_min_avail = 2\n  client_limit = {limit}\n}}\n\
             default_client_limit = {clients}\n",
            // imap-login in dovecot's high-performance mode (`service_count = 0`): a few
            // login processes each take many connections, instead of a process forked per
            // login, whose cost on a 2-core machine shared with serve made dovecot, not
            // flowmail, the limit of the start-up (14.7 s against 8.5 s for 1,000).
            // Every login process and every imap process holds a connection to the auth
            // and anvil services, whose limit is default_client_limit (1,000): past 500
            // mailboxes, logins stalled for 10 s at a time.
            clients = limit * 3,
        ),
    )
    .unwrap();
    println!(
        "cores: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    // dovecot tells an IDLE client of new mail through inotify, one instance per imap
    // process; all of the test's run as one user, and past the kernel's limit per user
    // (128 by default) dovecot falls back to looking every 30 s, which is the server's
    // share, not flowmail's.
    let inotify: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_instances")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    if inotify < many + 100 {
        println!(
            "note: fs.inotify.max_user_instances is {inotify}: dovecot's IDLE beyond that many \
             mailboxes waits for its 30 s check; raise it with \
             `sysctl -w fs.inotify.max_user_instances={}` to measure arrival on all {many}",
            many + 200
        );
    }

    let one = Serve::start(&stack, 1);
    let mut lat = Vec::new();
    for n in 0..messages {
        let delivered = deliver(&stack, 1, 0, n);
        lat.push(one.wait_run(0, delivered));
        // Let the run end and the trigger go back to IDLE before the next message.
        std::thread::sleep(Duration::from_millis(150));
    }
    report("1 mailbox, one message at a time", &lat);
    one.stop();

    let serve = Serve::start(&stack, many);
    serve.report_start(
        &stack,
        "first start (new store, dovecot creates each mailbox)",
    );
    let cpu = serve.cpu_share(Duration::from_secs(30));
    println!(
        "{many} mailboxes: idle CPU {:.2} % of one core over 30 s",
        cpu * 100.0
    );
    // 200 different users, spread over all of them.
    let users: Vec<usize> = (0..messages).map(|i| i * many / messages).collect();
    let mut delivered = Vec::new();
    for (n, user) in users.iter().enumerate() {
        delivered.push((*user, deliver(&stack, many, *user, n)));
    }
    let lat: Vec<Latency> = delivered
        .iter()
        .map(|(user, at)| serve.wait_run(*user, *at))
        .collect();
    report(
        &format!("{many} mailboxes, {messages} messages to {messages} users at once"),
        &lat,
    );
    println!("{many} mailboxes: peak RSS {:.1} MB", serve.rss_mb("VmHWM"));
    // What every later start meets: the store, its cursors and the mailboxes exist.
    let serve = serve.restart();
    serve.report_start(&stack, "restart (same store and mailboxes)");
    serve.stop();
}

/// The dovecot user of mailbox `n` of a serve of `count` mailboxes: each round has users
/// of its own, so that no round finds the mail of another.
fn user(count: usize, n: usize) -> String {
    format!("user{n}-of-{count}@demo.example")
}

/// Delivers message `n` to user `u`; the time LMTP accepted it.
fn deliver(stack: &MailStack, count: usize, u: usize, n: usize) -> SystemTime {
    let to = user(count, u);
    let message = format!(
        "From: Grafana <alerts@grafana.demo.example>\r\nTo: {to}\r\nSubject: alert {n}\r\n\
         Date: Mon, 23 Nov 2026 08:00:00 +0000\r\nMessage-ID: <arrival-{n}-{u}@demo.example>\r\n\r\nDisk usage at 91%.\r\n"
    );
    stack.deliver(&to, message.as_bytes()).unwrap();
    SystemTime::now()
}

struct Latency {
    /// Delivery to the wake with news, when the wake came after the delivery.
    server: Option<Duration>,
    /// The wake to the start of the run.
    flowmail: Option<Duration>,
    total: Duration,
}

fn report(what: &str, lat: &[Latency]) {
    let pick = |f: &dyn Fn(&Latency) -> Option<Duration>| {
        let mut v: Vec<Duration> = lat.iter().filter_map(f).collect();
        v.sort();
        v
    };
    let at = |v: &[Duration], p: f64| {
        v.get(((v.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    let total = pick(&|l| Some(l.total));
    let server = pick(&|l| l.server);
    let flowmail = pick(&|l| l.flowmail);
    println!("{what}: {} messages", lat.len());
    for (name, v) in [
        ("end to end", &total),
        ("server (delivery to IDLE news)", &server),
        ("flowmail (news to run start)", &flowmail),
    ] {
        println!(
            "  {name}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} measured)",
            at(v, 0.5),
            at(v, 0.99),
            at(v, 1.0),
            v.len()
        );
    }
}

/// The busy CPU time of the whole machine so far, in seconds: every CPU's time from
/// `/proc/stat` but idle and I/O wait.
fn machine_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let cpu: Vec<u64> = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is within user).
    let busy: u64 = cpu.iter().take(8).sum::<u64>() - cpu[3] - cpu[4];
    busy as f64 / 100.0
}

/// A `flowmail serve` of `count` mailboxes in a workspace of its own.
struct Serve {
    child: Child,
    log: std::path::PathBuf,
    ready: Duration,
    /// serve's CPU time until every trigger waited.
    ready_cpu: f64,
    /// The whole machine's busy CPU time meanwhile (serve's, dovecot's, everyone's).
    ready_machine_cpu: f64,
    count: usize,
    /// The workspace; taken by `stop`, for a restart.
    dir: Option<tempfile::TempDir>,
}

impl Serve {
    fn start(stack: &MailStack, count: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::write_workspace(dir.path(), stack, count);
        Self::launch(dir, count)
    }

    /// Stops this serve and starts another in the same workspace: the same store (with
    /// every trigger's cursor), lock files and dovecot mailboxes, as a restart or a
    /// deployment of serve meets them.
    fn restart(self) -> Self {
        let count = self.count;
        let dir = self.stop();
        Self::launch(dir, count)
    }

    /// The workflows and `flowmail.toml` of `count` mailboxes in `root`.
    fn write_workspace(root: &std::path::Path, stack: &MailStack, count: usize) {
        std::fs::create_dir_all(root.join("workflows")).unwrap();
        let password = root.join("imap-password");
        std::fs::write(&password, PASSWORD).unwrap();
        let mut config = format!(
            "[store]\npath = \"var/flowmail.db\"\n[web]\nlisten = \"127.0.0.1:{}\"\n",
            flowmail_tests::stack::free_port().unwrap()
        );
        for n in 0..count {
            let u = user(count, n);
            config.push_str(&format!(
                "[accounts.b{n}]\nfrom = \"{u}\"\n[accounts.b{n}.transport]\nkind = \"outbox\"\ndir = \"var/outbox\"\n\
                 [accounts.b{n}.mailbox]\nkind = \"imap\"\nhost = \"localhost\"\nport = {port}\nfolder = \"INBOX\"\n\
                 ca_file = \"{ca}\"\n[accounts.b{n}.auth]\nkind = \"basic\"\nusername = \"{u}\"\n\
                 password = {{ file = \"{pw}\" }}\n",
                port = stack.ports.imap,
                ca = stack.certs.ca.display(),
                pw = password.display(),
            ));
            std::fs::write(
                root.join(format!("workflows/w{n}.yaml")),
                format!(
                    "name: w{n}\ntrigger:\n  mailbox:\n    account: b{n}\nsteps:\n  - id: forward\n    action: send-mail\n\
                     \x20   with:\n      account: b{n}\n      message:\n        to: ops@demo.example\n\
                     \x20       subject: \"handled: ${{{{ trigger.message.subject }}}}\"\n        text: \"${{{{ trigger.message.text }}}}\"\n"
                ),
            )
            .unwrap();
        }
        std::fs::write(root.join("flowmail.toml"), config).unwrap();
    }

    /// Starts serve in the workspace `dir` and waits until every trigger waits.
    fn launch(dir: tempfile::TempDir, count: usize) -> Self {
        let root = dir.path();
        let log = root.join("serve.log");
        let started = Instant::now();
        let machine_before = machine_cpu_secs();
        let child = Command::new("prlimit")
            .arg("--nofile=1024:")
            .arg(flowmail_tests::flowmail_bin())
            .args(["serve", "workflows"])
            .current_dir(root)
            .env(
                "RUST_LOG",
                std::env::var("FLOWMAIL_BENCH_RUST_LOG")
                    .unwrap_or_else(|_| "flowmail::workflow=debug,flowmail=info".into()),
            )
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut serve = Self {
            child,
            log,
            ready: Duration::ZERO,
            ready_cpu: 0.0,
            ready_machine_cpu: 0.0,
            count,
            dir: Some(dir),
        };
        // Every trigger's first wait ends as soon as it knows it waits in IDLE.
        loop {
            let text = std::fs::read_to_string(&serve.log).unwrap_or_default();
            let waiting = text
                .lines()
                .filter(|l| l.contains("` woke ("))
                .filter_map(|l| l.split("workflow `").nth(1)?.split('`').next())
                .collect::<std::collections::HashSet<_>>()
                .len();
            if waiting >= count {
                break;
            }
            if let Some(status) = serve.child.try_wait().unwrap() {
                panic!("serve ended ({status}):\n{text}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "{waiting} of {count} triggers waiting after 300 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        serve.ready = started.elapsed();
        serve.ready_cpu = serve.cpu_secs();
        serve.ready_machine_cpu = machine_cpu_secs() - machine_before;
        // Let the first looks after the first waits end.
        std::thread::sleep(Duration::from_secs(2));
        serve
    }

    /// Prints how long the start took until every trigger waited, and what it cost.
    fn report_start(&self, stack: &MailStack, what: &str) {
        let many = self.count;
        println!(
            "{many} mailboxes, {what}: every trigger waiting {:.1} s after start, serve's CPU meanwhile {:.1} s; RSS {:.1} MB; {} IMAP connections",
            self.ready.as_secs_f64(),
            self.ready_cpu,
            self.rss_mb("VmRSS"),
            flowmail_tests::connections_to(stack.ports.imap),
        );
        // The rest of the machine's CPU went mostly to dovecot: its logins, one imap
        // process forked per mailbox, and its TLS.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        println!(
            "{many} mailboxes, {what}: the machine's busy CPU meanwhile {:.1} s of {:.1} s on {cores} cores: serve {:.1} s, the rest (dovecot mostly) {:.1} s",
            self.ready_machine_cpu,
            self.ready.as_secs_f64() * cores,
            self.ready_cpu,
            self.ready_machine_cpu - self.ready_cpu,
        );
    }

    /// Waits for the run of `user`'s workflow that starts after `delivered`.
    fn wait_run(&self, user: usize, delivered: SystemTime) -> Latency {
        let started = Instant::now();
        let woke = format!(
            "workflow `w{user}`: `b{user}` woke (Wake {{ mode: \"idle\", changed: true }})"
        );
        let run = format!("workflow `w{user}`: run starts for ");
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let after = |needle: &str| {
                text.lines()
                    .filter(|l| l.contains(needle))
                    .filter_map(timestamp)
                    .find(|t| *t >= delivered)
            };
            if let Some(ran) = after(&run) {
                let wake = after(&woke).filter(|w| *w <= ran);
                let since = |a: SystemTime, b: SystemTime| b.duration_since(a).unwrap_or_default();
                return Latency {
                    server: wake.map(|w| since(delivered, w)),
                    flowmail: wake.map(|w| since(w, ran)),
                    total: since(delivered, ran),
                };
            }
            if started.elapsed() > Duration::from_secs(60) {
                let tail: Vec<&str> = text.lines().rev().take(20).collect();
                panic!(
                    "no run for w{user} within 60 s of its delivery; the log ends:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A line of `/proc/PID/status` in MB.
    fn rss_mb(&self, field: &str) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: f64 = status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap();
        kb / 1024.0
    }

    /// The CPU time serve has used so far, in seconds.
    fn cpu_secs(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // After the command's name in parentheses: utime and stime are fields 14, 15.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        // Linux counts these in USER_HZ, 100 per second.
        (f[11] + f[12]) as f64 / 100.0
    }

    /// The share of one core serve used over `span`.
    fn cpu_share(&self, span: Duration) -> f64 {
        let before = self.cpu_secs();
        std::thread::sleep(span);
        (self.cpu_secs() - before) / span.as_secs_f64()
    }

    /// Stops serve and waits for it to end; the workspace, for a restart.
    fn stop(mut self) -> tempfile::TempDir {
        // FLOWMAIL_BENCH_LOGS=DIR keeps serve's log of each round there, for a closer look.
        if let Some(keep) = std::env::var_os("FLOWMAIL_BENCH_LOGS") {
            let keep = std::path::Path::new(&keep);
            let mut n = 1;
            let to = loop {
                let to = keep.join(format!("serve-{}-{n}.log", self.count));
                if !to.exists() {
                    break to;
                }
                n += 1;
            };
            let _ = std::fs::copy(&self.log, to);
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let started = Instant::now();
        while matches!(self.child.try_wait(), Ok(None)) {
            if started.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.dir.take().unwrap()
    }
}

impl Drop for Serve {
    /// A serve left behind by a failed round would hold its ports and connections.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(500));
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The time at the start of a log line (`2026-12-04T21:50:01.123456Z ...`).
fn timestamp(line: &str) -> Option<SystemTime> {
    let stamp = line.split_whitespace().next()?;
    let (date, time) = stamp.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.split('-').map(|v| v.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|v| v.parse::<u64>().ok());
    let (h, min, s) = (t.next()??, t.next()??, t.next()??);
    let nanos: u64 = format!("{frac:0<9}").get(..9)?.parse().ok()?;
    // Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    Some(
        UNIX_EPOCH
            + Duration::from_secs(days * 86_400 + h * 3600 + min * 60 + s)
            + Duration::from_nanos(nanos),
    )
}
