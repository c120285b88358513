//! The sandbox's own cost per step: `send-mail`'s logic (validate, compose, one send)
//! called natively, as a Rust library, and through the component (a fresh instance from
//! `InstancePre`, the call, three host imports, the return), with host I/O stubbed out on
//! both sides: the send returns at once. The difference is what the sandbox costs. The
//! component runs on engines with on-demand instance allocation, with and without
//! copy-on-write memory images, and with the pooling allocator.
//!
//! `cargo bench -p flowmail --bench sandbox`; with `FLOWMAIL_BENCH_PERFMAP=1` the engine
//! flowmail runs writes a perf map, so that a profile names the plugin's functions.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use flowmail::BoxFuture;
use flowmail::bindings::MailError;
use flowmail::bindings::tokens::{AuthKind, CredentialState};
use flowmail::bindings::transport::{AccountPolicy, Delivery, DeliveryStatus, Envelope};
use flowmail::bindings::types::{Address, OutgoingMessage};
use flowmail::caps::tokens::CredentialInfo;
use flowmail::caps::transport::{Transport, TransportAccount};
use flowmail::caps::{Capabilities, Live};
use flowmail::runtime::{Limits, Runtime, engine_for, engine_from, load_component};
use wasmtime::{Config, InstanceAllocationStrategy};

/// A transport that takes every message at once.
struct Null;

impl Transport for Null {
    fn send<'a>(
        &'a self,
        envelope: &'a Envelope,
        _message: &'a [u8],
    ) -> BoxFuture<'a, Result<Delivery, MailError>> {
        Box::pin(async move {
            Ok(Delivery {
                transport: "null".into(),
                status: DeliveryStatus::Queued,
                accepted: envelope.recipients.clone(),
                reference: None,
            })
        })
    }

    fn kind(&self) -> &'static str {
        "null"
    }
}

fn policy() -> AccountPolicy {
    AccountPolicy {
        default_sender: Some(Address {
            name: Some("Bench".into()),
            email: "bench@example.com".into(),
        }),
        required_sender: None,
        max_message_bytes: 1 << 20,
        max_attachment_bytes: 1 << 20,
    }
}

fn caps() -> Arc<Live> {
    let mut caps = Capabilities::default();
    let null: Arc<dyn Transport> = Arc::new(Null);
    caps.transport.accounts.insert(
        "b".into(),
        TransportAccount {
            policy: policy(),
            transport: null.clone(),
            direct: null,
        },
    );
    caps.tokens.accounts.insert(
        "b".into(),
        CredentialInfo {
            kind: AuthKind::None,
            username: None,
            state: CredentialState::Ready,
        },
    );
    Arc::new(Live::new(caps))
}

fn message() -> OutgoingMessage {
    OutgoingMessage {
        sender: None,
        to: vec![Address {
            name: Some("Ops".into()),
            email: "ops@example.com".into(),
        }],
        cc: vec![],
        bcc: vec![],
        reply_to: vec![],
        subject: "disk full on db-1".into(),
        text: Some("The disk of db-1 is full.\nFree some space.\n".into()),
        html: None,
        attachments: vec![],
        forward_attachments: vec![],
        extra_headers: vec![],
    }
}

/// The plugin's logic as a native library, against a host that answers at once.
mod native {
    use flowmail_plugin::host::{CredentialInfo, Host};
    use flowmail_plugin::mailbox::{Batch, RawMessage, Search, SizeCap};
    use flowmail_plugin::tokens::{AuthKind, CredentialState};
    use flowmail_plugin::transport::{AccountPolicy, Delivery, DeliveryStatus, Envelope};
    use flowmail_plugin::types::{Address, MailError, OutgoingMessage};

    pub struct Stub;

    impl Host for Stub {
        fn policy(&self, _: &str) -> Result<AccountPolicy, MailError> {
            Ok(AccountPolicy {
                default_sender: Some(Address {
                    name: Some("Bench".into()),
                    email: "bench@example.com".into(),
                }),
                required_sender: None,
                max_message_bytes: 1 << 20,
                max_attachment_bytes: 1 << 20,
            })
        }
        fn credential(&self, _: &str) -> Result<CredentialInfo, MailError> {
            Ok(CredentialInfo {
                kind: AuthKind::None,
                username: None,
                state: CredentialState::Ready,
            })
        }
        fn send(&self, _: &str, envelope: &Envelope, _: &[u8]) -> Result<Delivery, MailError> {
            Ok(Delivery {
                transport: "null".into(),
                status: DeliveryStatus::Queued,
                accepted: envelope.recipients.clone(),
                reference: None,
            })
        }
        fn fetch_after(
            &self,
            _: &str,
            _: Option<&str>,
            _: u32,
            _: &Search,
            _: Option<SizeCap>,
        ) -> Result<Batch, MailError> {
            Err(MailError::NotFound("no mailbox".into()))
        }
        fn fetch(&self, _: &str, _: &str) -> Result<RawMessage, MailError> {
            Err(MailError::NotFound("no mailbox".into()))
        }
        fn warn(&self, _: &str) {}
        fn now(&self) -> i64 {
            1_790_000_000
        }
        fn random(&self) -> u128 {
            7
        }
    }

    pub fn message() -> OutgoingMessage {
        OutgoingMessage {
            sender: None,
            to: vec![Address {
                name: Some("Ops".into()),
                email: "ops@example.com".into(),
            }],
            cc: vec![],
            bcc: vec![],
            reply_to: vec![],
            subject: "disk full on db-1".into(),
            text: Some("The disk of db-1 is full.\nFree some space.\n".into()),
            html: None,
            attachments: vec![],
            forward_attachments: vec![],
            extra_headers: vec![],
        }
    }
}

fn sandbox(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("sandbox");

    let native_message = native::message();
    group.bench_function("send-mail logic, native", |b| {
        b.iter(|| flowmail_plugin::actions::send_mail(&native::Stub, "b", &native_message).unwrap())
    });

    let limits = Limits::default();
    // The pool flowmail runs, with its reset changed: `keep` bytes of each memory and
    // table kept resident, and whether PAGEMAP_SCAN (Linux 6.7+) says which pages a step
    // dirtied, so that only those are set back.
    let pool = |keep: usize, scan: wasmtime::Enabled| {
        let mut pool = flowmail::runtime::pooling(&limits);
        pool.linear_memory_keep_resident(keep)
            .table_keep_resident(keep)
            .pagemap_scan(scan);
        pool
    };
    let pooled = |keep: usize, scan: wasmtime::Enabled| {
        let mut c = Config::new();
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool(keep, scan)));
        engine_from(c).unwrap()
    };
    let engines: Vec<(&str, wasmtime::Engine)> = vec![
        (
            "on demand, copy-on-write images",
            engine_from(Config::new()).unwrap(),
        ),
        ("on demand, no copy-on-write", {
            let mut c = Config::new();
            c.memory_init_cow(false);
            engine_from(c).unwrap()
        }),
        (
            "pooling allocator, slots reset with madvise, no PAGEMAP_SCAN",
            pooled(0, wasmtime::Enabled::No),
        ),
        (
            "pooling allocator, 1 MB kept resident and zeroed, no PAGEMAP_SCAN",
            pooled(1 << 20, wasmtime::Enabled::No),
        ),
        (
            "pooling allocator, PAGEMAP_SCAN, 16 MB kept resident",
            pooled(16 << 20, wasmtime::Enabled::Yes),
        ),
        (
            "pooling allocator as flowmail runs it",
            if std::env::var_os("FLOWMAIL_BENCH_PERFMAP").is_some() {
                // The same engine, writing /tmp/perf-PID.map so that `perf report`
                // names the plugin's compiled functions instead of `[JIT]`.
                let mut c = Config::new();
                c.allocation_strategy(InstanceAllocationStrategy::Pooling(
                    flowmail::runtime::pooling(&limits),
                ));
                c.profiler(wasmtime::ProfilingStrategy::PerfMap);
                engine_from(c).unwrap()
            } else {
                engine_for(&limits).unwrap()
            },
        ),
    ];
    let message = message();
    for (name, engine) in engines {
        let component = load_component(&engine, flowmail::DEFAULT_PLUGIN, None).unwrap();
        let runtime = Runtime::new(&engine, &component, caps(), limits).unwrap();
        group.bench_function(format!("send-mail through the component, {name}"), |b| {
            b.iter(|| {
                rt.block_on(runtime.send_mail("bench", "b", &message))
                    .unwrap()
            })
        });
    }
    group.finish();
}

/// A transport that holds every send until `open` is notified, counting who waits.
struct Gate {
    waiting: std::sync::atomic::AtomicUsize,
    open: tokio::sync::Notify,
}

impl Transport for Gate {
    fn send<'a>(
        &'a self,
        envelope: &'a Envelope,
        _message: &'a [u8],
    ) -> BoxFuture<'a, Result<Delivery, MailError>> {
        Box::pin(async move {
            let opened = self.open.notified();
            self.waiting
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            opened.await;
            Ok(Delivery {
                transport: "gate".into(),
                status: DeliveryStatus::Queued,
                accepted: envelope.recipients.clone(),
                reference: None,
            })
        })
    }

    fn kind(&self) -> &'static str {
        "gate"
    }
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Memory per live instance: `N` send-mail steps held inside their send, each with its
/// instance live and its message composed, against the process before they started.
fn memory_per_instance(_: &mut Criterion) {
    const N: usize = 100;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let gate = Arc::new(Gate {
        waiting: 0.into(),
        open: tokio::sync::Notify::new(),
    });
    let live = caps();
    let mut caps_now = (*live.current()).clone();
    let held: Arc<dyn Transport> = gate.clone();
    caps_now.transport.accounts.insert(
        "b".into(),
        TransportAccount {
            policy: policy(),
            transport: held.clone(),
            direct: held,
        },
    );
    live.replace(caps_now);
    let limits = Limits::default();
    let engine = engine_for(&limits).unwrap();
    let component = load_component(&engine, flowmail::DEFAULT_PLUGIN, None).unwrap();
    let runtime = Runtime::new(&engine, &component, live, limits).unwrap();
    let message = message();
    // One step first, so that what a process holds once (the pool's first slot, the
    // allocator's arenas) is not counted.
    hold(&rt, &runtime, &gate, &message, 1);
    let before = resident_bytes();
    let during = hold(&rt, &runtime, &gate, &message, N);
    println!(
        "memory per live instance: {:.0} KB resident ({N} send-mail steps held in their send: {:.1} MB before, {:.1} MB during)",
        (during.saturating_sub(before)) as f64 / N as f64 / 1024.0,
        before as f64 / 1048576.0,
        during as f64 / 1048576.0
    );
}

/// Runs `n` send-mail steps at once, holds them inside their send, and returns the
/// resident memory while all `n` are held; then lets them finish.
fn hold(
    rt: &tokio::runtime::Runtime,
    runtime: &Runtime,
    gate: &Gate,
    message: &OutgoingMessage,
    n: usize,
) -> u64 {
    gate.waiting.store(0, std::sync::atomic::Ordering::SeqCst);
    rt.block_on(async {
        let steps =
            futures_util::future::join_all((0..n).map(|_| runtime.send_mail("held", "b", message)));
        tokio::pin!(steps);
        let mut measured = None;
        loop {
            tokio::select! {
                done = &mut steps => {
                    for r in done { r.unwrap(); }
                    break;
                }
                () = tokio::time::sleep(std::time::Duration::from_millis(5)) => {
                    if measured.is_none()
                        && gate.waiting.load(std::sync::atomic::Ordering::SeqCst) == n
                    {
                        measured = Some(resident_bytes());
                    }
                    if measured.is_some() {
                        gate.open.notify_waiters();
                    }
                }
            }
        }
        measured.unwrap()
    })
}

criterion_group!(benches, sandbox, memory_per_instance);
criterion_main!(benches);
