//! The store on both of its databases: the embedded SQLite file and a shared PostgreSQL
//! server (a private instance on a free port). The same checks run on each: cursors,
//! Maildir UIDs, tokens written with compare-and-swap, the trigger records in insertion
//! order, dead letters, watchdog rows, the settings page's records, the run journal and
//! the workflow lock; then migrations by processes that open a new store at once, and
//! the demo job end to end on PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use flowmail::store::{
    HandledRow, Handling, NodeRow, PageAccountRow, RunRecord, Store, StoreError, TokenRow, WatchRow,
};
use flowmail_tests::Workspace;
use flowmail_tests::postgres::Postgres;

fn row(key: &str, status: Handling, first_seen: i64) -> HandledRow {
    HandledRow {
        key: key.into(),
        message: format!("1:{key}"),
        status,
        attempts: 1,
        first_seen,
        next_attempt: 10,
        last_error: Some("busy".into()),
        post_pending: false,
    }
}

/// Every record kind, written and read back.
fn exercise(s: &Store, what: &str) {
    // Cursors and Maildir UIDs.
    assert_eq!(s.cursor("wf", "a").unwrap(), None, "{what}");
    s.set_cursor("wf", "a", "9:3").unwrap();
    s.set_cursor("wf", "a", "9:4").unwrap();
    assert_eq!(
        s.cursor("wf", "a").unwrap().as_deref(),
        Some("9:4"),
        "{what}"
    );
    let keys = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let (validity, uids) = s.maildir_uids("/m", &keys(&["x", "y"])).unwrap();
    assert_eq!((uids["x"], uids["y"]), (1, 2), "{what}");
    let (again, uids) = s.maildir_uids("/m", &keys(&["z", "x"])).unwrap();
    assert_eq!((again, uids["z"], uids["x"]), (validity, 3, 1), "{what}");

    // Tokens: a new authorization, then a refresh that only lands on the version it read.
    assert!(!s.has_sealed_tokens().unwrap(), "{what}");
    let tokens = TokenRow {
        version: 1,
        access_token: vec![0, 159, 146, 150, 255],
        refresh_token: Some(vec![1, 2, 3]),
        expires_at: 100,
        scope: "mail".into(),
        username: "u@x".into(),
        needs_reauth: None,
        refreshed_at: 5,
    };
    let before = s.credentials_fingerprint().unwrap();
    assert!(s.put_tokens("acct", None, &tokens).unwrap(), "{what}");
    let refreshed = TokenRow {
        version: 2,
        refresh_token: None,
        ..tokens.clone()
    };
    assert!(s.put_tokens("acct", Some(1), &refreshed).unwrap(), "{what}");
    assert!(
        !s.put_tokens("acct", Some(1), &refreshed).unwrap(),
        "a stale version loses: {what}"
    );
    let read = s.tokens("acct").unwrap().unwrap();
    assert_eq!(
        (read.version, read.access_token, read.refresh_token),
        (2, tokens.access_token, None)
    );
    assert_ne!(s.credentials_fingerprint().unwrap(), before, "{what}");
    assert!(s.has_sealed_tokens().unwrap(), "{what}");

    // Trigger records, oldest first with insertion order breaking ties.
    for key in ["c", "a", "b"] {
        s.put_handled("wf", "a", &row(key, Handling::Pending, 1))
            .unwrap();
    }
    s.put_handled("wf", "a", &row("d", Handling::Dead, 0))
        .unwrap();
    let mut done = row("e", Handling::Done, 2);
    done.post_pending = true;
    s.put_handled("wf", "a", &done).unwrap();
    let pending = s
        .handled_in("wf", "a", Handling::Pending, Some(10))
        .unwrap();
    let order: Vec<&str> = pending.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(order, ["c", "a", "b"], "{what}");
    assert!(
        s.handled_in("wf", "a", Handling::Pending, Some(9))
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.handled("wf", "a", "e").unwrap(),
        Some(done.clone()),
        "{what}"
    );
    assert_eq!(
        s.post_actions_pending("wf", "a").unwrap(),
        vec![done],
        "{what}"
    );
    let counts = s.handled_counts("wf", "a").unwrap();
    assert_eq!(
        (counts.pending, counts.dead, counts.done),
        (3, 1, 1),
        "{what}"
    );
    assert_eq!(s.dead_letters(None).unwrap().len(), 1, "{what}");
    assert_eq!(s.dead_letters(Some("other")).unwrap().len(), 0, "{what}");
    assert_eq!(s.retry_dead_letters(Some("wf")).unwrap(), 1, "{what}");
    assert_eq!(
        s.retry_dead_letters(None).unwrap(),
        0,
        "each comes back once: {what}"
    );
    let retried = s.handled("wf", "a", "d").unwrap().unwrap();
    assert_eq!(retried.status, Handling::Pending, "{what}");
    assert!(
        retried
            .last_error
            .unwrap()
            .starts_with("retry requested after: busy")
    );
    let read = s.triggers_read().unwrap();
    assert_eq!(
        (read[0].0.as_str(), read[0].1.as_str()),
        ("wf", "a"),
        "{what}"
    );

    // Watchdog rows are replaced whole.
    let watch = WatchRow {
        workflow: "wf".into(),
        account: "a".into(),
        mode: "idle".into(),
        pid: 42,
        started_at: 1,
        last_ok: Some(2),
        alerts: 1,
        silence_after: 60,
        ..WatchRow::default()
    };
    s.put_watch(&watch).unwrap();
    s.put_watch(&WatchRow {
        mode: "poll".into(),
        paused: Some("why".into()),
        ..watch.clone()
    })
    .unwrap();
    let watches = s.watches().unwrap();
    assert_eq!(watches.len(), 1, "{what}");
    assert_eq!(
        (watches[0].mode.as_str(), watches[0].paused.as_deref()),
        ("poll", Some("why"))
    );

    // The settings page's records.
    assert!(
        s.add_user("ada@x", Some("ada@x"), Some("Ada"), "$argon2id$h")
            .unwrap()
    );
    assert!(
        !s.add_user("ada@x", None, None, "$argon2id$h").unwrap(),
        "a login is unique: {what}"
    );
    let user = s.user("ada@x").unwrap().unwrap();
    s.create_session("hash", user.id, "csrf", i64::MAX).unwrap();
    assert_eq!(
        s.session("hash").unwrap().unwrap().user.login,
        "ada@x",
        "{what}"
    );
    s.end_session("hash").unwrap();
    assert!(s.session("hash").unwrap().is_none(), "{what}");
    s.create_session("hash2", user.id, "csrf", i64::MAX)
        .unwrap();
    assert!(s.remove_user("ada@x").unwrap(), "{what}");
    assert!(
        s.session("hash2").unwrap().is_none(),
        "sessions go with their user: {what}"
    );
    assert!(s.users().unwrap().is_empty(), "{what}");
    let page = PageAccountRow {
        name: "mail".into(),
        settings: "{}".into(),
        secrets: Some(vec![9, 8, 7]),
        state: "active".into(),
        updated_by: "ada@x".into(),
        updated_at: 3,
    };
    s.put_page_account(&page).unwrap();
    s.put_page_account(&PageAccountRow {
        state: "pending".into(),
        ..page.clone()
    })
    .unwrap();
    let pages = s.page_accounts().unwrap();
    assert_eq!(
        (
            pages.len(),
            pages[0].state.as_str(),
            pages[0].secrets.clone()
        ),
        (1, "pending", Some(vec![9, 8, 7]))
    );

    // The run journal.
    s.record_run("wf", 1, "ok", "fine").unwrap();
    s.record_run("wf", 2, "failed", "step x").unwrap();
    assert_eq!(s.run_count("wf", "ok").unwrap(), 1, "{what}");
    assert_eq!(
        s.recent_runs(1).unwrap()[0].2,
        "failed",
        "newest first: {what}"
    );

    // Nodes: a live name is taken; a stopped one may be registered again.
    let node = NodeRow {
        name: "n1".into(),
        data_center: "a".into(),
        host: "h".into(),
        // A process that runs, so that the name is held by a live holder.
        pid: std::process::id(),
        started_at: 1,
        heartbeat_at: 1,
        heartbeat_secs: 5,
        triggers: 2,
        stopped_at: None,
    };
    let me = std::process::id();
    s.register_node(&node).unwrap();
    assert!(s.heartbeat("n1", "h", me).unwrap(), "{what}");
    let twin = NodeRow {
        pid: me + 1,
        ..node.clone()
    };
    assert!(
        matches!(s.register_node(&twin), Err(StoreError::NodeTaken { pid, .. }) if pid == me),
        "{what}"
    );
    assert!(!s.heartbeat("n1", "h", me + 1).unwrap(), "{what}");
    s.node_stopped("n1", "h", me).unwrap();
    let nodes = s.nodes().unwrap();
    assert!(
        nodes[0].stopped_at.is_some() && !nodes[0].alive(flowmail::unix_now()),
        "{what}"
    );
    s.register_node(&twin).unwrap();
    assert!(s.nodes().unwrap()[0].alive(flowmail::unix_now()), "{what}");

    // A probe for another data center: its sealed secrets go to the one node that
    // takes it, and leave the store as they do.
    let id = s
        .put_probe("b", "far", "bob@demo.example", Some(("{}", "c2VhbGVk")))
        .unwrap();
    assert_eq!(s.claim_probe("a", "a1", 60).unwrap(), None, "{what}");
    let job = s.claim_probe("b", "b1", 60).unwrap().unwrap();
    assert_eq!(
        (job.id, job.secrets.as_deref(), job.recipient.as_str()),
        (id, Some("c2VhbGVk"), "bob@demo.example"),
        "{what}"
    );
    assert_eq!(s.claim_probe("b", "b2", 60).unwrap(), None, "{what}");
    assert!(!s.cancel_probe(id).unwrap(), "{what}: taken, not withdrawn");
    s.finish_probe(id, "{\"ok\":true}").unwrap();
    assert_eq!(
        s.probe(id).unwrap(),
        Some(("done".into(), Some("{\"ok\":true}".into()))),
        "{what}"
    );
    let late = s.put_probe("b", "far", "bob@demo.example", None).unwrap();
    assert!(s.cancel_probe(late).unwrap(), "{what}");
    assert_eq!(s.claim_probe("b", "b1", 60).unwrap(), None, "{what}");

    // One process at a time runs a workflow's trigger.
    let lock = s.lock_workflow("wf").unwrap();
    assert!(
        matches!(s.lock_workflow("wf"), Err(StoreError::Busy { .. })),
        "{what}"
    );
    drop(lock);
    drop(s.lock_workflow("wf").unwrap());
}

#[test]
fn the_store_keeps_every_record_alike_on_sqlite_and_postgresql() {
    let dir = tempfile::tempdir().unwrap();
    exercise(&Store::open(&dir.path().join("s.db")).unwrap(), "sqlite");
    let pg = Postgres::start().unwrap();
    let url = pg.database("records").unwrap();
    let store = Store::open_url(&url).unwrap();
    assert!(store.is_shared());
    exercise(&store, "postgres");
    drop(store);
    // Reopened, everything is still there, and the schema is not migrated twice.
    let store = Store::open_url(&url).unwrap();
    assert_eq!(store.cursor("wf", "a").unwrap().as_deref(), Some("9:4"));
    assert_eq!(store.tokens("acct").unwrap().unwrap().version, 2);
}

#[test]
fn processes_opening_a_new_postgresql_store_at_once_migrate_it_once() {
    let pg = Postgres::start().unwrap();
    let url = pg.database("racing").unwrap();
    let openers: Vec<_> = (0..6)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || Store::open_url(&url).map(drop))
        })
        .collect();
    for o in openers {
        o.join().unwrap().unwrap();
    }
    let store = Store::open_url(&url).unwrap();
    store.set_cursor("wf", "a", "1:1").unwrap();
}

#[test]
fn a_workflow_lease_on_postgresql_is_renewed_while_held_and_free_once_given_up() {
    let pg = Postgres::start().unwrap();
    let url = pg.database("locks").unwrap();
    let first = Store::open_url(&url).unwrap();
    let second = Store::open_url(&url).unwrap();
    first.set_lease_secs(3);
    let held = first.lock_workflow("wf").unwrap();
    let refused = second.lock_workflow("wf").unwrap_err();
    assert!(
        refused.to_string().contains("another flowmail process"),
        "{refused}"
    );
    // Renewed, the lease outlives its three seconds.
    std::thread::sleep(std::time::Duration::from_secs(5));
    assert!(second.try_lock_workflow("wf").unwrap().is_none());
    let (owner, epoch) = second.lease_holder("wf").unwrap().unwrap();
    assert_eq!(Some(epoch), held.epoch());
    assert!(owner.contains(&std::process::id().to_string()), "{owner}");
    // Its holder's writes carry the epoch and go through.
    first.set_cursor("wf", "a", "1:1").unwrap();
    // Given up, it is free at once, under the next epoch; the old holder's writes of
    // that trigger no longer carry a lease of its own and are not fenced.
    drop(held);
    let taken = second.lock_workflow("wf").unwrap();
    assert_eq!(taken.epoch(), Some(epoch + 1));
    second.set_cursor("wf", "a", "1:2").unwrap();
    assert_eq!(first.cursor("wf", "a").unwrap().as_deref(), Some("1:2"));
}

/// The end of a trigger's run for `key`: its record, the message's and the cursor.
fn finish(s: &Store, key: &str, cursor: &str) -> Result<(), StoreError> {
    let run = RunRecord {
        started_at: 1,
        outcome: "ok".into(),
        detail: format!("ran for {key}"),
    };
    s.finish_unit(
        "wf",
        "a",
        &run,
        &[row(key, Handling::Done, 1)],
        Some(cursor),
    )
}

#[test]
fn the_end_of_a_run_is_written_whole_and_not_at_all_once_the_lease_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Store::open(&dir.path().join("s.db")).unwrap();
    let pg = Postgres::start().unwrap();
    let url = pg.database("finish").unwrap();
    let shared = Store::open_url(&url).unwrap();
    for (s, what) in [(&sqlite, "sqlite"), (&shared, "postgres")] {
        let _lock = s.lock_workflow("wf").unwrap();
        finish(s, "m1", "1:1").unwrap();
        assert_eq!(
            s.cursor("wf", "a").unwrap().as_deref(),
            Some("1:1"),
            "{what}"
        );
        let done = s.handled("wf", "a", "m1").unwrap().unwrap();
        assert_eq!(done.status, Handling::Done, "{what}");
        assert_eq!(s.run_count("wf", "ok").unwrap(), 1, "{what}");
    }
    // Another node took the trigger over (a new epoch) while this one was running:
    // none of the three may land, not even the run's record, which is not fenced alone.
    let lock = shared.lock_workflow("wf").unwrap();
    pg.psql(
        "finish",
        "UPDATE trigger_leases SET epoch = epoch + 1 WHERE workflow = 'wf'",
    )
    .unwrap();
    let err = finish(&shared, "m2", "1:2").unwrap_err();
    assert!(matches!(err, StoreError::Fenced { .. }), "{err:?}");
    assert_eq!(shared.cursor("wf", "a").unwrap().as_deref(), Some("1:1"));
    assert!(shared.handled("wf", "a", "m2").unwrap().is_none());
    assert_eq!(shared.run_count("wf", "ok").unwrap(), 1);
    drop(lock);
}

/// Runs `flowmail ARGS` in the workspace; it must succeed.
fn flowmail(ws: &Workspace, args: &[&str]) {
    let out = Command::new(flowmail_tests::flowmail_bin())
        .current_dir(ws.path())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_demo_job_runs_on_postgresql() {
    let pg = Postgres::start().unwrap();
    let url = pg.database("demo").unwrap();
    let ws = Workspace::with_config("").unwrap();
    let demo = std::fs::read_to_string(flowmail_tests::repo().join("flowmail.toml")).unwrap();
    ws.write_config(demo.replace("[store]\n", &format!("[store]\nurl = \"{url}\"\n")))
        .unwrap();
    flowmail(&ws, &["run", "workflows/alert-digest.yaml"]);
    let sent = ws.outbox().len();
    assert!(sent > 0, "the demo sent mail");
    assert!(
        !ws.path().join("var/flowmail.db").exists(),
        "nothing went to SQLite"
    );
    // Run again: every message was recorded in PostgreSQL, so nothing runs twice.
    flowmail(&ws, &["run", "workflows/alert-digest.yaml"]);
    assert_eq!(ws.outbox().len(), sent, "nothing ran twice");
    flowmail(&ws, &["status"]);
    assert!(!ws.path().join("var/flowmail.db").exists());
}

#[test]
fn the_suite_runs_on_the_store_it_was_asked_for() {
    let ws = Workspace::new("").unwrap();
    let (app, store) = ws.app(None, flowmail::caps::Audit::default()).unwrap();
    let on_postgres = flowmail_tests::postgres::suite_on_postgres();
    assert_eq!(store.is_shared(), on_postgres, "{}", store.location());
    // A process started in the workspace uses the same store.
    flowmail(&ws, &["status"]);
    assert_eq!(
        ws.path().join("var/flowmail.db").exists(),
        !on_postgres,
        "{}",
        store.location()
    );
    drop(app);
}
