use super::*;

fn maildir() -> (tempfile::TempDir, Maildir) {
    let dir = tempfile::tempdir().unwrap();
    for sub in [
        "new",
        "cur",
        "tmp",
        ".Archive/cur",
        ".Archive/new",
        ".Archive/tmp",
    ] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    std::fs::write(
        dir.path().join("new/1000.a.host"),
        "From: a@example.com\r\n\r\none",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("cur/1001.b.host:2,F"),
        "From: b@example.com\r\n\r\ntwo",
    )
    .unwrap();
    std::fs::write(dir.path().join("new/.hidden"), "x").unwrap();
    let store = Arc::new(Store::open(&dir.path().join("store.db")).unwrap());
    let m = Maildir::new(dir.path(), store);
    (dir, m)
}

#[test]
fn reads_in_uid_order_and_pages() {
    let (_dir, m) = maildir();
    let b = m.fetch_after_sync(None, 1, None).unwrap();
    assert_eq!(b.messages.len(), 1);
    assert!(b.more);
    assert_eq!(b.messages[0].uid, 1);
    let c = UidCursor {
        uid_validity: b.uid_validity,
        last_uid: 1,
    };
    let b = m.fetch_after_sync(Some(c), 10, None).unwrap();
    assert_eq!(b.messages.iter().map(|m| m.uid).collect::<Vec<_>>(), [2]);
    assert_eq!(b.messages[0].flags, ["\\Flagged"]);
    assert!(!b.more);
}

#[test]
fn caps_sizes_and_deletes() {
    let (dir, m) = maildir();
    let cap = SizeCap {
        max_size: 30,
        oversize: Oversize::Skip,
    };
    std::fs::write(
        dir.path().join("new/1002.c.host"),
        "From: c@example.com\r\nSubject: a longer one\r\n\r\nthree",
    )
    .unwrap();
    let b = m.fetch_after_sync(None, 10, Some(cap)).unwrap();
    let big = &b.messages[2];
    assert_eq!((big.content, big.data.len()), (Content::Omitted, 0));
    assert_eq!(big.size, 51);
    assert_eq!(b.messages[0].content, Content::Complete);
    assert_eq!(b.scanned_to, 3);
    m.delete_sync(&[3]).unwrap();
    assert!(!dir.path().join("new/1002.c.host").exists());
    assert!(matches!(m.delete_sync(&[3]), Err(MailError::NotFound(_))));
}

#[test]
fn sets_flags_and_moves_by_maildir_rules() {
    let (dir, m) = maildir();
    m.set_flags_sync(&[1, 2], &[Flag::Seen], &[Flag::Flagged])
        .unwrap();
    assert!(dir.path().join("cur/1000.a.host:2,S").is_file());
    assert!(dir.path().join("cur/1001.b.host:2,S").is_file());
    assert_eq!(
        m.fetch_sync(1).unwrap().flags,
        ["\\Seen"],
        "UIDs survive flag changes"
    );
    m.move_sync(&[2], "Archive").unwrap();
    assert!(dir.path().join(".Archive/cur/1001.b.host:2,S").is_file());
    assert!(matches!(
        m.move_sync(&[1], "Nope"),
        Err(MailError::NotFound(_))
    ));
    assert!(matches!(
        m.set_flags_sync(&[77], &[Flag::Seen], &[]),
        Err(MailError::NotFound(_))
    ));
}
