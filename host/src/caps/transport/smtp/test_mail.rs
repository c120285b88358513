//! Test Mail: one real message through an account's server, reported stage by stage
//! with times, stopping at the first failure with the reason and the fix.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::classify::classify;
use super::relay::Relay;
use super::session::{self, Stage};
use crate::bindings::MailError;
use crate::bindings::transport::Envelope;

/// One stage's outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageReport {
    pub stage: Stage,
    pub title: Cow<'static, str>,
    pub ok: bool,
    pub millis: f64,
    pub detail: String,
}

/// The whole report. It travels through the store when a node of the account's data
/// center runs the test for another.
#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    pub account: String,
    pub server: String,
    pub ok: bool,
    pub stages: Vec<StageReport>,
    /// The `mail-error` case of the failure, if any.
    pub error_kind: Option<Cow<'static, str>>,
    pub queue_id: Option<String>,
    /// The node that ran the test, and its data center.
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default)]
    pub data_center: Option<String>,
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Sends a test message from `from` to `to` through `relay`'s server, in a session of its own.
pub async fn run(account: &str, relay: &Relay, from: &str, to: &str) -> Report {
    // A resumed session would show the certificate as it was checked the first time, so
    // Test Mail always shakes hands in full.
    let settings = &crate::net::Settings {
        tls: crate::net::full_handshakes(&relay.settings().tls),
        ..relay.settings().clone()
    };
    let server = format!("{}:{}", settings.host, settings.port);
    let stages = Arc::new(Mutex::new(Vec::<StageReport>::new()));
    let mut report = Report {
        account: account.into(),
        server: server.clone(),
        ok: false,
        stages: Vec::new(),
        error_kind: None,
        queue_id: None,
        node: None,
        data_center: None,
    };
    let sink = stages.clone();
    let mut observe = move |stage: Stage, took: Duration, detail: String| {
        if let Ok(mut s) = sink.lock() {
            s.push(StageReport {
                stage,
                title: stage.title().into(),
                ok: true,
                millis: millis(took),
                detail,
            });
        }
    };
    let started = Instant::now();
    let fail = |report: &mut Report, stage: Stage, e: MailError, took: Duration| {
        report.error_kind = Some(e.kind_name().into());
        let text = match e.field() {
            Some(field) => format!("{field}: {}", e.message()),
            None => e.message().to_owned(),
        };
        report.stages.push(StageReport {
            stage,
            title: stage.title().into(),
            ok: false,
            millis: millis(took),
            detail: text,
        });
    };
    let obtained = crate::unix_now();
    let mut opened = session::open(settings, relay.auth(), &mut observe).await;
    // Test Mail behaves as a send does: a refused OAuth2 token is refreshed once.
    let mut refreshed = false;
    if let Err(f) = &opened {
        let error = classify(f, &server, relay.auth());
        if let Some(token) = super::relay::refused_token(f, &error, relay.auth()) {
            match token.refresh_after_rejection(obtained).await {
                Ok(_) => {
                    if let Ok(mut s) = stages.lock() {
                        s.clear();
                    }
                    refreshed = true;
                    opened = session::open(settings, relay.auth(), &mut observe).await;
                }
                Err(refresh) => {
                    report.stages = stages.lock().map(|s| s.clone()).unwrap_or_default();
                    let both = MailError::AuthFailed(format!(
                        "{}; {}",
                        error.message(),
                        refresh.message()
                    ));
                    fail(&mut report, f.stage, both, Duration::ZERO);
                    return report;
                }
            }
        }
    }
    report.stages = stages.lock().map(|s| s.clone()).unwrap_or_default();
    if refreshed && let Some(auth) = report.stages.iter_mut().find(|s| s.stage == Stage::Auth) {
        auth.detail = format!(
            "{} (the server refused the stored token; it was refreshed once)",
            auth.detail
        );
    }
    let mut conn = match opened {
        Ok(conn) => conn,
        Err(f) => {
            let took = started.elapsed()
                - report
                    .stages
                    .iter()
                    .map(|s| Duration::from_secs_f64(s.millis / 1e3))
                    .sum::<Duration>();
            fail(
                &mut report,
                f.stage,
                classify(&f, &server, relay.auth()),
                took,
            );
            return report;
        }
    };
    let message = match test_message(from, to) {
        Ok(m) => m,
        Err(e) => {
            fail(&mut report, Stage::Transaction, e, Duration::ZERO);
            return report;
        }
    };
    let envelope = Envelope {
        sender: from.into(),
        recipients: vec![to.into()],
    };
    let t = Instant::now();
    match conn
        .transaction(&envelope, &message, settings.timeout)
        .await
    {
        Ok(reply) => {
            report.stages.push(StageReport {
                stage: Stage::Transaction,
                title: Stage::Transaction.title().into(),
                ok: true,
                millis: millis(t.elapsed()),
                detail: format!("{} accepted, {}", to, session::reply_text(&reply)),
            });
            report.queue_id = super::transaction::queue_id(&reply);
            report.stages.push(StageReport {
                stage: Stage::Queue,
                title: Stage::Queue.title().into(),
                ok: true,
                millis: 0.0,
                detail: report
                    .queue_id
                    .clone()
                    .unwrap_or_else(|| "the server named no queue id".into()),
            });
            report.ok = true;
            conn.quit().await;
        }
        Err(f) => {
            fail(
                &mut report,
                f.stage,
                classify(&f, &server, relay.auth()),
                t.elapsed(),
            );
            conn.abort().await;
        }
    }
    report
}

/// The test message: plain text, dated, with a Message-ID of the sender's domain.
pub(crate) fn test_message(from: &str, to: &str) -> Result<Vec<u8>, MailError> {
    let invalid = |field: &str, e: String| {
        MailError::InvalidInput(crate::bindings::types::FieldError {
            field: field.into(),
            reason: e,
        })
    };
    let message = lettre::Message::builder()
        .from(from.parse().map_err(|e| invalid("from", format!("{e}")))?)
        .to(to.parse().map_err(|e| invalid("to", format!("{e}")))?)
        .subject("flowmail Test Mail")
        .date_now()
        .message_id(Some(format!(
            "<test-mail.{:016x}@{}>",
            fastrand::u64(..),
            from.rsplit_once('@').map_or("flowmail.invalid", |(_, d)| d)
        )))
        .body(String::from(
            "This is a test message sent by flowmail's Test Mail.\r\n",
        ))
        .map_err(|e| invalid("message", e.to_string()))?;
    Ok(message.formatted())
}

impl Report {
    /// The report for people.
    pub fn render(&self) -> String {
        let mut out = format!(
            "Test Mail for account `{}` via {}\n",
            self.account, self.server
        );
        if let (Some(node), Some(dc)) = (&self.node, &self.data_center) {
            out.push_str(&format!("sent from node `{node}` of data center `{dc}`\n"));
        }
        for (i, s) in self.stages.iter().enumerate() {
            out.push_str(&format!(
                "{}. {:<17} {:>9.3} ms  {}  {}\n",
                i + 1,
                s.title,
                s.millis,
                if s.ok { "ok    " } else { "FAILED" },
                s.detail
            ));
        }
        out.push_str(if self.ok {
            "Test Mail sent.\n"
        } else {
            "Test Mail failed; the failing stage says why and what to do.\n"
        });
        out
    }
}
