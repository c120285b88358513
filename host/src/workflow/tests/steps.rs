//! Steps: `for_each`, `if`, step outputs feeding later steps, a `read-mailbox` step,
//! unknown names, and failures that name the step and the field.

use super::*;

/// Runs a workflow named `w` with `steps` and returns its first failure.
async fn first_failure(actions: &FakeActions, steps: &str) -> RunError {
    let f = fixture();
    let mut report = run_yaml(&f, actions, &format!("name: w\nsteps:\n{steps}")).await;
    assert!(
        !report.failed.is_empty(),
        "the run should fail: {:?}",
        report.lines
    );
    report.failed.remove(0)
}

const READ_THEN_REPLY: &str = r#"
name: replies
steps:
  - id: read
    action: read-mailbox
    with: { account: inbox, limit: 10 }
  - id: reply
    action: send-mail
    if: "${{ steps.read.count > 0 }}"
    for_each: "${{ steps.read.messages }}"
    with:
      account: out
      message:
        to: "${{ item.from.email }}"
        subject: "Re: ${{ item.subject }}"
        text: "read {{ steps.read.count }}"
  - id: summary
    action: send-mail
    with:
      account: out
      message:
        to: ops@example.com
        subject: "read ${{ steps.read.count }}, first reply ${{ steps.reply[0].message_id if steps.reply is defined else 'none' }}"
"#;

#[tokio::test]
async fn for_each_over_a_read_step_feeds_later_steps() {
    let f = fixture();
    let actions = FakeActions {
        inbox: vec![
            received(1, "one", "a@example.com"),
            received(2, "two", "b@example.com"),
        ],
        ..FakeActions::default()
    };
    let report = run_yaml(&f, &actions, READ_THEN_REPLY).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.runs, 1);
    assert_eq!(
        *actions.reads.lock().unwrap(),
        [("read".to_owned(), "inbox".to_owned(), 10)]
    );
    let sent = actions.sent.lock().unwrap();
    let summary: Vec<(String, String, String)> = sent
        .iter()
        .map(|(step, account, m)| {
            (
                step.clone(),
                m.to.iter().map(|a| a.email.clone()).collect::<String>(),
                format!("{account}: {}", m.subject),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "reply".into(),
                "a@example.com".into(),
                "out: Re: one".into()
            ),
            (
                "reply".into(),
                "b@example.com".into(),
                "out: Re: two".into()
            ),
            (
                "summary".into(),
                "ops@example.com".into(),
                "out: read 2, first reply m1@fake".into()
            ),
        ]
    );
    assert_eq!(report.sent.len(), 3);
    assert!(
        report.lines.iter().any(|l| l.contains("read 2 message(s)")),
        "{:?}",
        report.lines
    );
}

#[tokio::test]
async fn a_false_if_skips_the_step() {
    let f = fixture();
    let actions = FakeActions::default();
    let report = run_yaml(&f, &actions, READ_THEN_REPLY).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let sent = actions.sent.lock().unwrap();
    assert_eq!(sent.len(), 1, "only the summary");
    assert_eq!(sent[0].2.subject, "read 0, first reply none");
    assert!(
        report
            .lines
            .iter()
            .any(|l| l == "step reply: skipped, its `if` is false"),
        "{:?}",
        report.lines
    );
}

#[tokio::test]
async fn an_unknown_name_fails_naming_the_step_and_field() {
    let actions = FakeActions::default();
    let e = &first_failure(
        &actions,
        "  - id: s\n    action: send-mail\n    with:\n      account: out\n      message: { to: a@example.com, subject: \"${{ steps.nope.subject }}\" }\n",
    )
    .await;
    assert_eq!(e.step, "s");
    assert_eq!(e.field.as_deref(), Some("with.message.subject"), "{e}");
    assert!(!e.retryable());
    assert!(actions.sent.lock().unwrap().is_empty());
}

#[tokio::test]
async fn for_each_must_be_a_list() {
    let actions = FakeActions::default();
    let e = &first_failure(
        &actions,
        "  - id: s\n    action: send-mail\n    for_each: \"${{ 3 }}\"\n    with: { account: out, message: { to: a@example.com } }\n",
    )
    .await;
    assert_eq!(
        (e.step.as_str(), e.field.as_deref()),
        ("s", Some("for_each"))
    );
    assert!(e.reason.contains("must be a list"), "{e}");
}

#[tokio::test]
async fn the_plugins_invalid_input_names_the_workflow_field() {
    let actions = FakeActions {
        fail_send: Some(MailError::InvalidInput(FieldError {
            field: "message.to[0].email".into(),
            reason: "`x` has no @".into(),
        })),
        ..FakeActions::default()
    };
    let e = &first_failure(
        &actions,
        "  - id: s\n    action: send-mail\n    with: { account: out, message: { to: x } }\n",
    )
    .await;
    assert_eq!(e.field.as_deref(), Some("with.message.to[0].email"), "{e}");
    assert!(!e.retryable());
    assert_eq!(
        e.to_string(),
        "step `s` failed at `with.message.to[0].email`: `x` has no @"
    );
}

#[tokio::test]
async fn only_transient_failures_are_retryable() {
    for (error, retryable) in [
        (MailError::Transient("421 busy".into()), true),
        (MailError::Permanent("550 no such user".into()), false),
        (MailError::AuthFailed("535 refused".into()), false),
        (MailError::NotFound("no account `out`".into()), false),
    ] {
        assert_eq!(
            error.recovery(),
            match &error {
                MailError::Transient(_) => crate::bindings::Recovery::Retry,
                MailError::AuthFailed(_) => crate::bindings::Recovery::Pause,
                _ => crate::bindings::Recovery::DeadLetter,
            }
        );
        let actions = FakeActions {
            fail_send: Some(error.clone()),
            ..FakeActions::default()
        };
        let e = &first_failure(
            &actions,
            "  - id: s\n    action: send-mail\n    with: { account: out, message: { to: a@example.com } }\n",
        )
        .await;
        assert_eq!(e.retryable(), retryable, "{error:?}: {e}");
        assert_eq!(error.is_retryable(), retryable);
        assert!(
            e.reason.contains(error.message()),
            "{e} should carry {error:?}"
        );
    }
}

#[tokio::test]
async fn a_bad_read_filter_is_refused_before_the_plugin_is_called() {
    let actions = FakeActions::default();
    let e = &first_failure(
        &actions,
        "  - id: r\n    action: read-mailbox\n    with: { account: inbox, filter: { since: \"\" } }\n",
    )
    .await;
    assert_eq!(e.step, "r");
    assert_eq!(e.field.as_deref(), Some("with.filter.since"), "{e}");
    assert!(actions.reads.lock().unwrap().is_empty());
}

#[test]
fn mail_errors_name_their_kind_and_describe_themselves() {
    let e = MailError::Transient("451 try later".into());
    assert_eq!(e.kind_name(), "transient");
    assert_eq!(
        e.describe().to_string(),
        "temporary failure, retrying later can help: 451 try later"
    );
    let e = MailError::InvalidInput(FieldError {
        field: "message.subject".into(),
        reason: "contains a line break".into(),
    });
    assert_eq!(e.kind_name(), "invalid-input");
    assert_eq!(e.field(), Some("message.subject"));
    assert_eq!(
        e.describe().to_string(),
        "field `message.subject`: contains a line break"
    );
}

#[test]
fn a_step_waits_at_most_ten_minutes() {
    let step = |wait: &str| Step {
        id: "send".into(),
        action: Action::SendMail,
        condition: None,
        for_each: None,
        with: serde_json::Value::Null,
        wait: Some(wait.into()),
    };
    assert_eq!(
        step("30s").wait_for().unwrap(),
        Some(std::time::Duration::from_secs(30))
    );
    let e = step("2h").wait_for().unwrap_err();
    assert!(e.contains("longer than the 10m a step may wait"), "{e}");
    assert!(step("soon").wait_for().is_err());
}
