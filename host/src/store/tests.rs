use super::*;

/// Runs `sql` (several statements) straight on the SQLite file at `path`.
fn raw(path: &Path, sql: &str) {
    use sqlx::Connection as _;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let sql = sql.to_owned();
    rt.block_on(async move {
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    });
}

#[test]
fn cursors_and_uids_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let keys = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let (validity, uids) = {
        let s = Store::open(&path).unwrap();
        assert_eq!(s.cursor("wf", "a").unwrap(), None);
        s.set_cursor("wf", "a", "9:3").unwrap();
        s.maildir_uids("/m", &keys(&["x", "y"])).unwrap()
    };
    assert_eq!((uids["x"], uids["y"]), (1, 2));
    let s = Store::open(&path).unwrap();
    assert_eq!(s.cursor("wf", "a").unwrap().as_deref(), Some("9:3"));
    let (v2, uids) = s.maildir_uids("/m", &keys(&["z", "y"])).unwrap();
    assert_eq!(v2, validity);
    assert_eq!((uids["z"], uids["y"]), (3, 2));
}

#[test]
fn an_older_store_upgrades_in_place_keeping_cursors_records_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    {
        // A store as the UID-only contract left it: schema version 3.
        let mut sql = migrations::SQLITE[..3].join("\n");
        sql.push_str(
            "PRAGMA user_version = 3;
             INSERT INTO cursors VALUES ('wf', 'a', 7, 42, 1);
             INSERT INTO handled VALUES ('wf', 'a', 'id:m@x', 7, 40, 'pending', 2, 5, 6, 'busy', 1);
             INSERT INTO oauth_tokens VALUES ('acct', 4, x'00ff10', x'0102', 99, 'mail', 'u@x', NULL, 7);",
        );
        raw(&path, &sql);
    }
    let s = Store::open(&path).unwrap();
    assert_eq!(s.cursor("wf", "a").unwrap().as_deref(), Some("7:42"));
    let row = s.handled("wf", "a", "id:m@x").unwrap().unwrap();
    assert_eq!(
        (row.message.as_str(), row.status, row.attempts),
        ("7:40", crate::store::Handling::Pending, 2)
    );
    let tokens = s.tokens("acct").unwrap().unwrap();
    assert_eq!(
        (tokens.version, tokens.access_token, tokens.refresh_token),
        (4, vec![0, 0xff, 0x10], Some(vec![1, 2]))
    );
}

#[test]
fn processes_opening_a_new_store_at_once_migrate_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let openers: Vec<_> = (0..8)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || Store::open(&path).map(drop))
        })
        .collect();
    for o in openers {
        o.join().unwrap().unwrap();
    }
    let s = Store::open(&path).unwrap();
    s.set_cursor("wf", "a", "1:1").unwrap();
}

#[test]
fn refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    drop(Store::open(&path).unwrap());
    raw(&path, "PRAGMA user_version = 99");
    assert!(matches!(
        Store::open(&path),
        Err(StoreError::TooNew { found: 99, .. })
    ));
}

/// A store call made inside `Runtime::block_on` must not take the wake-up meant for the
/// task around it: a timer that fires during a slow query still wakes that task. With
/// tokio's own `block_on` for the query, both waits shared one parker, and this hung.
#[test]
fn a_query_inside_block_on_leaves_the_outer_tasks_wake_up_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("s.db")).unwrap());
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let outcome = rt.block_on(async {
            let timer = tokio::time::sleep(std::time::Duration::from_millis(5));
            tokio::pin!(timer);
            let mut queried = false;
            std::future::poll_fn(|cx| {
                if timer.as_mut().poll(cx).is_ready() {
                    return std::task::Poll::Ready(queried);
                }
                if !queried {
                    queried = true;
                    // Longer than the timer: it fires while the query runs.
                    let slow = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c \
                                WHERE x < 3000000) SELECT count(*) FROM c";
                    let n = store
                        .conn
                        .rows(slow, values::args![], |r| values::get::<i64>(r, 0));
                    assert_eq!(n.unwrap(), vec![3_000_000]);
                }
                std::task::Poll::Pending
            })
            .await
        });
        let _ = done_tx.send(outcome);
    });
    let outcome = done_rx.recv_timeout(std::time::Duration::from_secs(20));
    assert_eq!(
        outcome,
        Ok(true),
        "the task around the query was never woken for its timer"
    );
}

#[test]
fn waiting_names_the_oldest_unhandled_message_and_the_next_retry() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("s.db")).unwrap();
    assert_eq!(s.waiting("wf", "a").unwrap(), Waiting::default());
    let row = |key: &str, status, first_seen, next_attempt| HandledRow {
        key: key.into(),
        message: key.into(),
        status,
        attempts: 1,
        first_seen,
        next_attempt,
        last_error: None,
        post_pending: false,
    };
    s.put_handled("wf", "a", &row("done", Handling::Done, 10, 0))
        .unwrap();
    s.put_handled("wf", "a", &row("dead", Handling::Dead, 11, 0))
        .unwrap();
    // Another trigger's messages are not this one's.
    s.put_handled("wf", "b", &row("other", Handling::Pending, 5, 50))
        .unwrap();
    assert_eq!(s.waiting("wf", "a").unwrap(), Waiting::default());
    s.put_handled("wf", "a", &row("late", Handling::Pending, 30, 300))
        .unwrap();
    s.put_handled("wf", "a", &row("soon", Handling::Pending, 40, 200))
        .unwrap();
    s.put_handled("wf", "a", &row("now", Handling::Running, 20, 999))
        .unwrap();
    assert_eq!(
        s.waiting("wf", "a").unwrap(),
        Waiting {
            oldest: Some(20),
            next_retry: Some(200),
        }
    );
}

#[test]
fn writers_that_meet_share_a_commit_and_each_write_lands() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(Store::open(&dir.path().join("s.db")).unwrap());
    let writers = 40;
    let start = Arc::new(std::sync::Barrier::new(writers));
    let threads: Vec<_> = (0..writers)
        .map(|i| {
            let (s, start) = (s.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                s.set_cursor(&format!("wf{i}"), "a", &format!("1:{i}"))
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap().unwrap();
    }
    for i in 0..writers {
        let want = format!("1:{i}");
        assert_eq!(s.cursor(&format!("wf{i}"), "a").unwrap(), Some(want));
    }
    let (batches, writes) = s.conn.group.counts();
    assert_eq!(writes, writers as u64);
    // Forty writers released at once, against commits that each flush to disk: they
    // queue behind the first commit and share the next ones.
    assert!(batches < writes, "{batches} commits for {writes} writes");
}

#[test]
fn a_write_that_fails_in_a_shared_commit_loses_only_its_own_statements() {
    use batch::{Write, Written};
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("s.db")).unwrap();
    let db = s.conn.db.clone();
    let write = |sql: &str, args: Vec<values::Arg>, required: bool| Write {
        sql: db.sql(sql),
        args,
        required,
    };
    let jobs = vec![
        vec![write(
            CURSOR_WRITE,
            cursor_args("before", "a", "1:1"),
            false,
        )],
        vec![write("INSERT INTO nowhere VALUES (1)", Vec::new(), false)],
        // Its first statement is undone with it when the second, required, changes nothing.
        vec![
            write(CURSOR_WRITE, cursor_args("undone", "a", "1:2"), false),
            write(
                "DELETE FROM cursors WHERE workflow = $1",
                values::args!["nobody"],
                true,
            ),
        ],
        vec![write(CURSOR_WRITE, cursor_args("after", "a", "1:3"), false)],
    ];
    let err = s.conn.sql_err();
    let results = s
        .conn
        .run(move |db| async move { Ok(batch::run_batch(db, jobs, true, err).await) })
        .unwrap();
    assert!(matches!(results[0], Ok(Written::Rows(ref r)) if r == &[1]));
    assert!(
        matches!(&results[1], Err(StoreError::Sql { source, .. }) if source.to_string().contains("nowhere")),
        "{:?}",
        results[1]
    );
    assert!(matches!(results[2], Ok(Written::Unchanged(1))));
    assert!(matches!(results[3], Ok(Written::Rows(ref r)) if r == &[1]));
    assert_eq!(s.cursor("before", "a").unwrap().as_deref(), Some("1:1"));
    assert_eq!(s.cursor("undone", "a").unwrap(), None);
    assert_eq!(s.cursor("after", "a").unwrap().as_deref(), Some("1:3"));
}

#[test]
fn a_deferred_write_lands_and_every_durable_write_after_it_is_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    // The writer connection's mode, read without taking the writer as a write would.
    let synchronous = |s: &Store| -> i64 {
        s.conn
            .run(|db| async move {
                let row = sqlx::query("PRAGMA synchronous")
                    .fetch_one(db.writer_pool())
                    .await
                    .map_err(|e| StoreError::Sql {
                        path: String::new(),
                        source: e,
                    })?;
                Ok(values::get::<i64>(&row, 0).unwrap())
            })
            .unwrap()
    };
    let watch = |mode: &str| WatchRow {
        workflow: "wf".into(),
        account: "a".into(),
        mode: mode.into(),
        ..WatchRow::default()
    };
    // FULL is 2: every commit waits for the disk; NORMAL is 1.
    const FULL: i64 = 2;
    const NORMAL: i64 = 1;
    {
        let s = Store::open(&path).unwrap();
        assert_eq!(synchronous(&s), FULL);
        s.put_watch(&watch("starting")).unwrap();
        assert_eq!(
            synchronous(&s),
            NORMAL,
            "a deferred write leaves the mode for the next deferred one"
        );
        s.put_watch(&watch("idle")).unwrap();
        assert_eq!(synchronous(&s), NORMAL);
        // Each way of writing durably sets FULL again before it writes: a group-committed
        // write, a statement that returns rows, a transaction.
        s.set_cursor("wf", "a", "1:1").unwrap();
        assert_eq!(synchronous(&s), FULL, "a durable write runs with FULL");
        s.put_watch(&watch("idle")).unwrap();
        assert_eq!(synchronous(&s), NORMAL);
        let id = s
            .enqueue("a", "default", "s@x.test", &["r@x.test".into()], b"m", None)
            .unwrap();
        assert!(id > 0);
        assert_eq!(synchronous(&s), FULL, "an enqueue runs with FULL");
        s.put_watch(&watch("idle")).unwrap();
        assert_eq!(synchronous(&s), NORMAL);
        s.conn
            .transaction(|_, mut tx| async move {
                sqlx::query("INSERT INTO cursors (workflow, account, cursor, updated_at) VALUES ('t', 'a', '1:2', 0)")
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| StoreError::Sql {
                        path: String::new(),
                        source: e,
                    })?;
                Ok(((), tx))
            })
            .unwrap();
        assert_eq!(synchronous(&s), FULL, "a transaction runs with FULL");
        s.put_watch(&watch("last")).unwrap();
    }
    let s = Store::open(&path).unwrap();
    let watches = s.watches().unwrap();
    assert_eq!(watches.len(), 1);
    assert_eq!(watches[0].mode, "last");
    assert_eq!(s.cursor("wf", "a").unwrap().as_deref(), Some("1:1"));
    assert_eq!(s.cursor("t", "a").unwrap().as_deref(), Some("1:2"));
}

#[test]
fn owed_names_the_runs_cut_short_and_the_post_actions_not_taken_in_one_read() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("s.db")).unwrap();
    let row = |key: &str, status: Handling, post_pending: bool, first_seen: i64| HandledRow {
        key: key.into(),
        message: format!("7:{first_seen}"),
        post_pending,
        status,
        attempts: 1,
        first_seen,
        next_attempt: first_seen,
        last_error: None,
    };
    for r in [
        row("id:running", Handling::Running, false, 3),
        row("id:done-owed", Handling::Done, true, 2),
        row("id:dead-owed", Handling::Dead, true, 1),
        row("id:done", Handling::Done, false, 4),
        row("id:pending", Handling::Pending, false, 5),
    ] {
        s.put_handled("wf", "a", &r).unwrap();
    }
    s.put_handled(
        "other",
        "a",
        &row("id:elsewhere", Handling::Running, false, 1),
    )
    .unwrap();
    let keys = |rows: &[HandledRow]| rows.iter().map(|r| r.key.clone()).collect::<Vec<_>>();
    // The catch-up's first visit to the store: what it owes, with the cursor and the
    // credentials' fingerprint beside it.
    let outset = s.outset("wf", "a").unwrap();
    assert_eq!(outset.cursor, None);
    assert_eq!(outset.credentials, s.credentials_fingerprint().unwrap());
    assert_eq!(keys(&outset.owed.interrupted), ["id:running"]);
    assert_eq!(
        keys(&outset.owed.post_actions),
        ["id:dead-owed", "id:done-owed"]
    );
    s.set_cursor("wf", "a", "7:5").unwrap();
    s.set_cursor("other", "a", "7:9").unwrap();
    assert_eq!(s.outset("wf", "a").unwrap().cursor.as_deref(), Some("7:5"));

    // Its last visit: the retries due, and what waits, as the two reads of their own.
    s.put_handled("wf", "a", &row("id:later", Handling::Pending, false, 50))
        .unwrap();
    let (due, waiting) = s.due_and_waiting("wf", "a", Some(10)).unwrap();
    assert_eq!(keys(&due), ["id:pending"]);
    assert_eq!(
        due,
        s.handled_in("wf", "a", Handling::Pending, Some(10))
            .unwrap()
    );
    assert_eq!(waiting, s.waiting("wf", "a").unwrap());
    assert_eq!(
        waiting,
        Waiting {
            oldest: Some(3),
            next_retry: Some(5)
        }
    );
    let (all, _) = s.due_and_waiting("wf", "a", None).unwrap();
    assert_eq!(keys(&all), ["id:pending", "id:later"]);
    let (none, nothing) = s.due_and_waiting("empty", "a", None).unwrap();
    assert!(none.is_empty());
    assert_eq!(nothing, Waiting::default());
}
