//! The plugin's seed corpus of hostile and broken mail (`plugin/tests/corpus`), read
//! inside the sandbox: every seed, from a Maildir, through the shipped component (release
//! wasm32-wasip2). The plugin's property tests run the same parser natively; this shows
//! the component answers the same way, one message's defect never failing the read.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use flowmail::bindings::actions::Filter;
use flowmail::caps::Audit;
use flowmail_tests::{Workspace, repo};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_seed_of_the_corpus_is_read_or_skipped_with_its_reason_inside_the_sandbox() {
    let ws = Workspace::with_config(
        "[accounts.corpus]\nfrom = \"Flows <flows@demo.example>\"\n\
         [accounts.corpus.transport]\nkind = \"outbox\"\ndir = \"var/outbox\"\n\
         [accounts.corpus.mailbox]\nkind = \"maildir\"\npath = \"corpus\"\n",
    )
    .unwrap();
    let new = ws.path().join("corpus/new");
    std::fs::create_dir_all(&new).unwrap();
    for d in ["cur", "tmp"] {
        std::fs::create_dir_all(ws.path().join("corpus").join(d)).unwrap();
    }
    let mut seeds: Vec<String> = Vec::new();
    for (i, entry) in std::fs::read_dir(repo().join("plugin/tests/corpus"))
        .unwrap()
        .enumerate()
    {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // Maildir order is delivery order: the file's name starts with its position.
        std::fs::copy(&path, new.join(format!("{:04}.{name}", 1_700_000_000 + i))).unwrap();
        seeds.push(name);
    }
    assert!(seeds.len() >= 20);

    let (app, _) = ws.app(None, Audit::default()).unwrap();
    let all = Filter {
        sender_contains: None,
        subject_contains: None,
        has_attachment: None,
        since: None,
        unseen: None,
    };
    let page = app
        .runtime()
        .unwrap()
        .read_mailbox("read", "corpus", &all, None, 100, None)
        .await
        .unwrap();
    assert_eq!(
        page.messages.len() + page.skipped.len(),
        seeds.len(),
        "every seed is either read or skipped"
    );
    assert_eq!(page.scanned as usize, seeds.len());
    for s in &page.skipped {
        assert!(
            !s.reason.is_empty(),
            "{} was skipped without a reason",
            s.id
        );
    }
    let reasons: Vec<&str> = page.skipped.iter().map(|s| s.reason.as_str()).collect();
    for needle in [
        "nested 70 deep",
        "truncated",
        "reuses the boundary",
        "no From header",
        "not an RFC 5322 message",
        "base64",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(needle)),
            "no seed was skipped for `{needle}`: {reasons:?}"
        );
    }
    let subjects: Vec<&str> = page.messages.iter().map(|m| m.subject.as_str()).collect();
    for subject in ["Café", "disk full on db-1", "Grüße aus Köln", "generated"] {
        assert!(
            subjects.contains(&subject),
            "`{subject}` missing: {subjects:?}"
        );
    }
    let latin1 = page.messages.iter().find(|m| m.subject == "Café").unwrap();
    assert_eq!(latin1.attachments.len(), 1);
    assert_eq!(latin1.attachments[0].name, "données.csv");
    assert_eq!(latin1.attachments[0].size, 20);
}
