//! read-mailbox: filters, skipped messages, the cursor, searches and size caps.

use super::*;

#[test]
fn reads_filters_skips_malformed_and_advances_the_cursor() {
    let mut host = Fake::new();
    host.mailbox.push(raw(1, WITH_ATTACHMENT));
    host.mailbox.push(raw(
        2,
        "From: a@example.com\r\nSubject: weekly report\r\n\r\nhi\r\n",
    ));
    host.mailbox.push(raw(3, "garbage without headers"));
    host.mailbox.push(raw(
        4,
        "From: b@example.com\r\nSubject: [ALERT] y\r\n\r\nhi\r\n",
    ));
    let filter = Filter {
        sender_contains: None,
        subject_contains: Some("[alert]".into()),
        has_attachment: None,
        since: None,
        unseen: None,
    };
    let page = read_mailbox(&host, "demo", &filter, None, 3, None).unwrap();
    assert_eq!(
        page.messages
            .iter()
            .map(|m| m.id.as_str())
            .collect::<Vec<_>>(),
        ["1"]
    );
    assert_eq!(page.skipped.len(), 1);
    assert_eq!(page.skipped[0].id, "3");
    assert_eq!(host.warnings.borrow().len(), 1);
    assert_eq!(
        page.next_cursor, "3",
        "the backend's cursor, passed on unchanged"
    );
    assert!(page.more && !page.restarted);
    let page = read_mailbox(&host, "demo", &filter, Some(&page.next_cursor), 3, None).unwrap();
    assert_eq!(
        page.messages
            .iter()
            .map(|m| m.id.as_str())
            .collect::<Vec<_>>(),
        ["4"]
    );
    assert!(!page.more);
    let page = read_mailbox(&host, "demo", &filter, Some(&page.next_cursor), 3, None).unwrap();
    assert!(page.messages.is_empty());
    assert_eq!(page.next_cursor, "4", "an empty read keeps the cursor");
    assert!(matches!(
        read_mailbox(&host, "demo", &filter, None, 0, None),
        Err(MailError::InvalidInput(_))
    ));
}

#[test]
fn passes_the_searchable_conditions_to_the_host() {
    let host = Fake::new();
    let filter = Filter {
        sender_contains: Some("grafana".into()),
        subject_contains: Some("[ALERT]".into()),
        has_attachment: Some(true),
        since: Some("2026-11-03T09:00:00Z".into()),
        unseen: Some(true),
    };
    read_mailbox(&host, "demo", &filter, None, 3, None).unwrap();
    let searches = host.searches.borrow();
    assert_eq!(searches[0].sender_contains.as_deref(), Some("grafana"));
    assert_eq!(searches[0].subject_contains.as_deref(), Some("[ALERT]"));
    assert!(searches[0].unseen);
    assert_eq!(searches[0].sent_since.as_deref(), Some("2026-11-02"));
}

#[test]
fn oversized_messages_are_reported_with_their_size_or_read_without_attachments() {
    let mut host = Fake::new();
    host.mailbox.push(raw(1, WITH_ATTACHMENT));
    host.mailbox.push(raw(
        2,
        "From: a@example.com\r\nSubject: small\r\n\r\nhi\r\n",
    ));
    let filter = Filter {
        sender_contains: None,
        subject_contains: None,
        has_attachment: None,
        since: None,
        unseen: None,
    };
    let size = WITH_ATTACHMENT.len() as u64;
    let cap = |oversize| {
        Some(SizeCap {
            max_size: 100,
            oversize,
        })
    };
    let page = read_mailbox(&host, "demo", &filter, None, 10, cap(Oversize::Skip)).unwrap();
    assert_eq!(
        page.messages
            .iter()
            .map(|m| m.id.as_str())
            .collect::<Vec<_>>(),
        ["2"]
    );
    assert_eq!(page.skipped[0].id, "1");
    assert!(
        page.skipped[0].reason.contains(&format!("is {size} bytes")),
        "{}",
        page.skipped[0].reason
    );
    assert_eq!(page.next_cursor, "2");

    let page = read_mailbox(
        &host,
        "demo",
        &filter,
        None,
        10,
        cap(Oversize::WithoutAttachments),
    )
    .unwrap();
    assert!(page.skipped.is_empty());
    let first = &page.messages[0];
    assert!(first.attachments_omitted);
    assert!(first.attachments.is_empty());
    assert_eq!(first.size, size);
    assert!(!page.messages[1].attachments_omitted);
    assert!(matches!(
        read_mailbox(&host, "demo", &filter, None, 10, Some(SizeCap { max_size: 0, oversize: Oversize::Skip })),
        Err(MailError::InvalidInput(e)) if e.field == "cap.max_size"
    ));
}
