//! Property tests of the workflow language: generated workflows load and check, and
//! mutated workflow files and arbitrary `${{ }}` expressions are refused with a message,
//! never a panic. `PROPTEST_CASES` sets the cases (256 by default).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use crate::config::Config;
use crate::workflow::Workflow;
use crate::workflow::expr::{self, Scope};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn demo_config() -> Config {
    Config::load(&repo().join("flowmail.toml")).unwrap()
}

/// Pieces of the expression language and of what breaks it.
fn expression() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("steps.inbox.messages".to_owned()),
        Just("steps.nope.x".to_owned()),
        Just("trigger.message.subject".to_owned()),
        Just("item".to_owned()),
        Just("workflow.name".to_owned()),
        Just(" | length".to_owned()),
        Just(" | e".to_owned()),
        Just(" | nofilter".to_owned()),
        Just(" or ".to_owned()),
        Just(" and ".to_owned()),
        Just(" not ".to_owned()),
        Just("(".to_owned()),
        Just(")".to_owned()),
        Just("[0]".to_owned()),
        Just("[".to_owned()),
        Just(".".to_owned()),
        Just("\"str\"".to_owned()),
        Just("'".to_owned()),
        Just("${{".to_owned()),
        Just("}}".to_owned()),
        Just("{%".to_owned()),
        Just("%}".to_owned()),
        Just("{% for m in steps.inbox.messages %}".to_owned()),
        Just("{% endfor %}".to_owned()),
        Just("{#".to_owned()),
        Just("1e308 * 1e308".to_owned()),
        Just("range(100000000)".to_owned()),
        "[a-z0-9 _.]{0,8}",
        "\\PC{0,4}",
    ];
    proptest::collection::vec(piece, 0..10).prop_map(|p| p.concat())
}

/// A workflow file's text: one read step, then send steps that use the steps before.
fn workflow_text() -> impl Strategy<Value = (String, Vec<String>)> {
    (
        "[a-z][a-z0-9-]{0,12}",
        proptest::collection::vec("[a-z][a-z0-9_]{0,8}", 1..5),
        proptest::collection::vec(any::<bool>(), 1..5),
    )
        .prop_map(|(name, ids, for_each)| {
            let mut ids: Vec<String> = ids
                .into_iter()
                .enumerate()
                .map(|(i, id)| format!("{id}{i}"))
                .collect();
            ids.insert(0, "inbox".into());
            let mut text = format!("name: {name}\nsteps:\n");
            text.push_str(
                "  - id: inbox\n    action: read-mailbox\n    with:\n      account: demo\n",
            );
            for (i, id) in ids.iter().enumerate().skip(1) {
                let earlier = &ids[i - 1];
                text.push_str(&format!(
                    "  - id: {id}\n    action: send-mail\n"
                ));
                if for_each[i % for_each.len()] {
                    text.push_str("    for_each: ${{ steps.inbox.messages }}\n");
                }
                text.push_str(&format!(
                    "    if: ${{{{ steps.{earlier} is defined }}}}\n    with:\n      account: demo\n      message:\n        to: ops@demo.example\n        subject: \"from {earlier}: ${{{{ steps.inbox.messages | length }}}}\"\n        text: hello\n"
                ));
            }
            (text, ids)
        })
}

const YAML_TOKENS: &[&str] = &[
    ":",
    "- ",
    "  ",
    "\n",
    "\t",
    "${{",
    "}}",
    "{%",
    "&a ",
    "*a",
    "!!binary ",
    "? ",
    "|",
    ">",
    "\"",
    "'",
    "#",
    "[",
    "]",
    "{",
    "}",
    "~",
    "null",
    "steps:",
    "id: x\n",
    "action: bogus\n",
];

proptest! {
    #[test]
    fn arbitrary_expressions_are_checked_or_refused(text in expression()) {
        let steps: HashSet<&str> = ["inbox"].into();
        let scope = Scope { steps: &steps, trigger: true, item: false };
        if let Err(e) = expr::check_expression(&text, &scope) {
            prop_assert!(!e.is_empty());
        }
        if let Err((field, e)) = expr::check_value(&serde_json::json!({ "t": text }), "with", &scope) {
            prop_assert_eq!(field, "with.t");
            prop_assert!(!e.is_empty());
        }
        let ctx = minijinja::Value::from(minijinja::value::Serde(serde_json::json!({
            "steps": { "inbox": { "messages": [{ "subject": "a" }] } },
            "trigger": { "message": { "subject": "s" } },
            "workflow": { "name": "w" },
        })));
        if let Err(e) = expr::eval(&text, &ctx) {
            prop_assert!(!e.is_empty());
        }
        if let Err((_, e)) = expr::render(&serde_json::json!([text]), &ctx, "with") {
            prop_assert!(!e.is_empty());
        }
    }

    #[test]
    fn generated_workflows_load_and_check((text, ids) in workflow_text()) {
        let wf: Workflow = serde_norway::from_str(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        let got: Vec<&str> = wf.steps.iter().map(|s| s.id.as_str()).collect();
        prop_assert_eq!(got, ids.iter().map(String::as_str).collect::<Vec<_>>());
        wf.check(&demo_config()).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
    }

    #[test]
    fn a_step_that_names_a_later_step_is_refused_naming_both((text, ids) in workflow_text()) {
        prop_assume!(ids.len() >= 2);
        let last = ids.last().unwrap();
        let text = text.replacen("steps.inbox.messages | length", &format!("steps.{last}.x"), 1);
        let wf: Workflow = serde_norway::from_str(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let e = wf.check(&demo_config()).err().ok_or_else(|| TestCaseError::fail(format!("accepted:\n{text}")))?;
        let shown = e.to_string();
        prop_assert!(shown.contains(&format!("unknown step `{last}`")), "{shown}");
        prop_assert!(shown.contains(&ids[1]), "{shown}");
    }

    #[test]
    fn mutated_workflow_files_load_or_are_refused(
        cuts in proptest::collection::vec((any::<prop::sample::Index>(), 0usize..40, proptest::option::of(0..YAML_TOKENS.len())), 1..6),
    ) {
        let mut text = std::fs::read_to_string(repo().join("workflows/alert-digest.yaml")).unwrap();
        for (at, len, token) in cuts {
            let mut i = at.index(text.len() + 1);
            while !text.is_char_boundary(i) { i -= 1; }
            let mut end = (i + len).min(text.len());
            while !text.is_char_boundary(end) { end -= 1; }
            text.replace_range(i..end, token.map_or("", |t| YAML_TOKENS[t]));
        }
        match serde_norway::from_str::<Workflow>(&text) {
            Err(e) => prop_assert!(!e.to_string().is_empty()),
            Ok(wf) => {
                if let Err(e) = wf.check(&demo_config()) {
                    prop_assert!(!e.to_string().is_empty());
                }
            }
        }
    }
}
