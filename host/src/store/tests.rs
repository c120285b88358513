use super::*;

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
fn uid_cursors_and_records_of_an_older_store_keep_their_meaning() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    {
        // A store as the UID-only contract left it: schema version 3.
        let conn = Connection::open(&path).unwrap();
        for sql in &MIGRATIONS[..3] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 3).unwrap();
        conn.execute_batch(
            "INSERT INTO cursors VALUES ('wf', 'a', 7, 42, 1);
             INSERT INTO handled VALUES ('wf', 'a', 'id:m@x', 7, 40, 'pending', 2, 5, 6, 'busy', 1);",
        )
        .unwrap();
    }
    let s = Store::open(&path).unwrap();
    assert_eq!(s.cursor("wf", "a").unwrap().as_deref(), Some("7:42"));
    let row = s.handled("wf", "a", "id:m@x").unwrap().unwrap();
    assert_eq!(
        (row.message.as_str(), row.status, row.attempts),
        ("7:40", crate::store::Handling::Pending, 2)
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
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    assert!(matches!(
        Store::open(&path),
        Err(StoreError::TooNew { found: 99, .. })
    ));
}
