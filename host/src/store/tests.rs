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
