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
pub struct AlertMail<'a> {
    inner: &'a dyn Events,
    app: Arc<App>,
    account: String,
    to: Vec<String>,
    sent: Mutex<HashMap<(AlertKind, String), Instant>>,
}

impl<'a> AlertMail<'a> {
    /// Mails alerts through `account` to `to`.
    pub fn new(inner: &'a dyn Events, app: Arc<App>, account: &str, to: &[String]) -> Self {
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

impl Events for AlertMail<'_> {
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
