//! Alerts by mail: the reason a product has SMTP settings at all is that it mails its own
//! alerts. Each alert is passed on to the sink beside it and mailed through the plugin's
//! `send-mail`, at most once an hour per kind and account; an alert about the alert
//! account itself goes to the log only, since mailing through a broken account cannot work.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::events::{Alert, AlertKind, Events};
use crate::app::App;
use crate::bindings::types::{Address, OutgoingMessage};

/// How often one kind of alert about one account may be mailed.
pub const PER_KIND_AND_ACCOUNT: Duration = Duration::from_secs(3600);

/// An [`Events`] sink that mails alerts, and passes everything on to `inner`.
pub struct AlertMail {
    inner: Arc<dyn Events>,
    app: Arc<App>,
    account: String,
    to: Vec<String>,
    sent: Mutex<HashMap<(AlertKind, String), Instant>>,
}

impl AlertMail {
    /// Mails alerts through `account` to `to`.
    pub fn new(inner: Arc<dyn Events>, app: Arc<App>, account: &str, to: &[String]) -> Self {
        Self {
            inner,
            app,
            account: account.to_owned(),
            to: to.to_vec(),
            sent: Mutex::new(HashMap::new()),
        }
    }

    /// Whether an alert of `kind` about `account` may be mailed now; counts it if so.
    fn due(&self, kind: AlertKind, account: &str) -> bool {
        let Ok(mut sent) = self.sent.lock() else {
            return false;
        };
        let key = (kind, account.to_owned());
        match sent.get(&key) {
            Some(at) if at.elapsed() < PER_KIND_AND_ACCOUNT => false,
            _ => {
                sent.insert(key, Instant::now());
                true
            }
        }
    }
}

impl Events for AlertMail {
    fn catch_up_started(&self, workflow: &str, total: u64) {
        self.inner.catch_up_started(workflow, total);
    }
    fn catch_up_advanced(&self, workflow: &str, scanned: u64) {
        self.inner.catch_up_advanced(workflow, scanned);
    }
    fn catch_up_finished(&self, workflow: &str) {
        self.inner.catch_up_finished(workflow);
    }
    fn line(&self, workflow: &str, line: &str) {
        self.inner.line(workflow, line);
    }

    fn alert(&self, alert: &Alert<'_>) {
        self.inner.alert(alert);
        if alert.account == self.account {
            tracing::warn!(
                "the alert about `{}` is not mailed: it is the alert account itself ({})",
                alert.account,
                alert.text
            );
            return;
        }
        if !self.due(alert.kind, alert.account) {
            tracing::info!(
                "the alert about `{}` ({}) is not mailed: one went within the hour",
                alert.account,
                alert.kind.title()
            );
            return;
        }
        let message = OutgoingMessage {
            sender: None,
            to: self
                .to
                .iter()
                .map(|email| Address {
                    name: None,
                    email: email.clone(),
                })
                .collect(),
            cc: vec![],
            bcc: vec![],
            reply_to: vec![],
            subject: format!("[flowmail] {}: {}", alert.kind.title(), alert.account),
            text: Some(format!(
                "flowmail raised an alert.\n\nKind: {}\nAccount: {}\nWorkflow: {}\n\n{}\n\nAt most one mail an hour goes out for each kind of alert and account; `flowmail status` and the status page show the rest.\n",
                alert.kind.title(),
                alert.account,
                alert.workflow,
                alert.text
            )),
            html: None,
            attachments: vec![],
            forward_attachments: vec![],
            extra_headers: vec![],
        };
        let app = self.app.clone();
        let account = self.account.clone();
        let what = format!("{} about `{}`", alert.kind.title(), alert.account);
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::error!("the alert ({what}) could not be mailed: no async runtime is running");
            return;
        };
        handle.spawn(async move {
            let sent = match app.runtime() {
                Ok(runtime) => runtime
                    .send_mail("alert", &account, &message)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(format!("{e:#}")),
            };
            match sent {
                Ok(receipt) => tracing::info!(
                    "mailed the alert ({what}) through `{account}`: <{}>",
                    receipt.message_id
                ),
                Err(e) => tracing::error!(
                    "the alert ({what}) could not be mailed through `{account}`: {e}"
                ),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::app::Plugin;

    #[derive(Default)]
    struct Seen(Mutex<Vec<String>>);

    impl Events for Seen {
        fn alert(&self, alert: &Alert<'_>) {
            self.0.lock().unwrap().push(alert.account.to_owned());
        }
    }

    fn app(dir: &std::path::Path) -> Arc<App> {
        std::fs::write(
            dir.join("flowmail.toml"),
            "[store]\npath = \"flowmail.db\"\n[accounts.ops]\nfrom = \"ops@example.com\"\n\
             [accounts.ops.transport]\nkind = \"outbox\"\ndir = \"outbox\"\n",
        )
        .unwrap();
        let config = crate::config::Config::load(&dir.join("flowmail.toml")).unwrap();
        Arc::new(App::open(&config, Plugin::Embedded).unwrap())
    }

    #[test]
    fn an_alert_about_the_alert_account_is_logged_not_mailed() {
        let dir = tempfile::tempdir().unwrap();
        let seen = Arc::new(Seen::default());
        let mail = AlertMail::new(
            seen.clone(),
            app(dir.path()),
            "ops",
            &["oncall@example.com".into()],
        );
        mail.alert(&Alert {
            kind: AlertKind::Credentials,
            account: "ops",
            workflow: "w",
            text: "the alert account's own credentials fail",
        });
        // Passed on to the sink beside it, and nothing counted as mailed.
        assert_eq!(*seen.0.lock().unwrap(), ["ops"]);
        assert!(mail.sent.lock().unwrap().is_empty());
        assert!(
            !dir.path().join("outbox").exists(),
            "nothing was written to the outbox"
        );
    }

    #[test]
    fn one_mail_an_hour_per_kind_and_account() {
        let dir = tempfile::tempdir().unwrap();
        let mail = AlertMail::new(
            Arc::new(crate::workflow::events::Silent),
            app(dir.path()),
            "ops",
            &[],
        );
        assert!(mail.due(AlertKind::Silent, "box"));
        assert!(
            !mail.due(AlertKind::Silent, "box"),
            "the same kind and account waits"
        );
        assert!(mail.due(AlertKind::DeadLetters, "box"), "another kind goes");
        assert!(mail.due(AlertKind::Silent, "other"), "another account goes");
    }
}
