//! What one step costs: instantiating from `InstancePre`, calling an action that makes a
//! host import, and starting cold with and without the compiled-component cache.
//!
//! `cargo bench -p flowmail --bench step`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{Criterion, criterion_group, criterion_main};
use flowmail::app::{App, Plugin};
use flowmail::bindings::actions::Filter;
use flowmail::bindings::types::{Address, OutgoingMessage};
use flowmail::config::Config;
use flowmail::runtime::{engine, load_component};

fn setup(dir: &std::path::Path) -> App {
    for sub in ["mail/new", "mail/cur", "mail/tmp"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::write(
        dir.join("flowmail.toml"),
        "[accounts.b]\nfrom = \"bench@example.com\"\n[accounts.b.transport]\nkind = \"outbox\"\ndir = \"out\"\n\
         [accounts.b.mailbox]\nkind = \"maildir\"\npath = \"mail\"\n",
    )
    .unwrap();
    let mut config = Config::load(&dir.join("flowmail.toml")).unwrap();
    // Each run compiles the component afresh, as a first start does.
    config.runtime.cache_dir = "".into();
    App::open(&config, Plugin::Embedded).unwrap()
}

fn step(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let app = setup(dir.path());
    let runtime = app.runtime().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let filter = Filter {
        sender_contains: None,
        subject_contains: None,
        has_attachment: None,
        since: None,
        unseen: None,
    };
    c.bench_function("step/read-mailbox (instantiate + call + 1 import)", |b| {
        b.iter(|| {
            rt.block_on(runtime.read_mailbox("bench", "b", &filter, None, 10, None))
                .unwrap()
        })
    });
    let message = OutgoingMessage {
        sender: None,
        to: vec![Address {
            name: None,
            email: "to@example.com".into(),
        }],
        cc: vec![],
        bcc: vec![],
        reply_to: vec![],
        subject: "bench".into(),
        text: Some("one small message".into()),
        html: None,
        attachments: vec![],
        forward_attachments: vec![],
        extra_headers: vec![],
    };
    c.bench_function(
        "step/send-mail to the outbox (validate + compose + 3 imports + file write)",
        |b| {
            b.iter(|| {
                rt.block_on(runtime.send_mail("bench", "b", &message))
                    .unwrap()
            })
        },
    );
}

fn cold_start(c: &mut Criterion) {
    let cache = tempfile::tempdir().unwrap();
    let engine = engine().unwrap();
    let mut group = c.benchmark_group("cold-start");
    group.sample_size(10);
    group.bench_function("compile (no cache)", |b| {
        b.iter(|| load_component(&engine, flowmail::DEFAULT_PLUGIN, None).unwrap())
    });
    load_component(&engine, flowmail::DEFAULT_PLUGIN, Some(cache.path())).unwrap();
    group.bench_function("load from the compiled cache", |b| {
        b.iter(|| load_component(&engine, flowmail::DEFAULT_PLUGIN, Some(cache.path())).unwrap())
    });
    group.finish();
}

/// A message of multiparts nested `depth` deep, as hostile mail builds it.
fn nested(depth: usize) -> String {
    let mut m =
        String::from("From: a@example.com\r\nSubject: deep\r\nMessage-ID: <deep@example.com>\r\n");
    for level in 0..depth {
        m.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"b{level}\"\r\n\r\n--b{level}\r\n"
        ));
    }
    m.push_str("Content-Type: text/plain\r\n\r\nleaf\r\n");
    for level in (0..depth).rev() {
        m.push_str(&format!("--b{level}--\r\n"));
    }
    m
}

/// Reading one hostile message: the checks are linear, so a 20,000-deep multipart (1.3 MB)
/// costs about as much as reading its bytes, and is skipped with its depth named.
fn hostile(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let filter = Filter {
        sender_contains: None,
        subject_contains: None,
        has_attachment: None,
        since: None,
        unseen: None,
    };
    let mut group = c.benchmark_group("hostile");
    group.sample_size(10);
    for (depth, skipped) in [(60, 0), (20_000, 1)] {
        let dir = tempfile::tempdir().unwrap();
        let app = setup(dir.path());
        std::fs::write(dir.path().join("mail/new/1.deep.host"), nested(depth)).unwrap();
        let runtime = app.runtime().unwrap();
        group.bench_function(
            format!("read-mailbox of a multipart nested {depth} deep"),
            |b| {
                b.iter(|| {
                    let page = rt
                        .block_on(runtime.read_mailbox("bench", "b", &filter, None, 10, None))
                        .unwrap();
                    assert_eq!(page.skipped.len(), skipped);
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, step, cold_start, hostile);
criterion_main!(benches);
