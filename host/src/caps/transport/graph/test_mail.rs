//! Test Mail for a Graph account, stage by stage as for SMTP: the token (tenant, app and
//! the roles it grants), then sendMail, with times, Graph's answer and the fix.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;

use super::Graph;
use crate::auth::TokenSource;
use crate::bindings::MailError;
use crate::bindings::transport::Envelope;
use crate::caps::transport::Transport;
use crate::caps::transport::smtp::session::Stage;
use crate::caps::transport::smtp::test_mail::{Report, StageReport, test_message};

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// What a JWT access token says of itself: the app and its roles, when it is a JWT.
fn claims(token: &str) -> Option<serde_json::Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Sends a test message from `from` to `to` through `graph`, reporting each stage.
pub async fn run(
    account: &str,
    tenant: &str,
    graph: &Graph,
    token: Arc<dyn TokenSource>,
    from: &str,
    to: &str,
) -> Report {
    let mut report = Report {
        account: account.into(),
        server: graph.api.base.clone(),
        ok: false,
        stages: Vec::new(),
        error_kind: None,
        queue_id: None,
        node: None,
        data_center: None,
    };
    let fail =
        |report: &mut Report, stage: Stage, title: &'static str, e: MailError, took: Duration| {
            report.error_kind = Some(e.kind_name().into());
            report.stages.push(StageReport {
                stage,
                title: title.into(),
                ok: false,
                millis: millis(took),
                detail: e.message().to_owned(),
            });
        };
    let t = Instant::now();
    match token.access_token().await {
        Ok(secret) => {
            let c = claims(secret.expose()).unwrap_or_default();
            let roles = c["roles"]
                .as_array()
                .map(|r| {
                    r.iter()
                        .filter_map(|v| v.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| "none named in the token".into());
            let app = c["appid"]
                .as_str()
                .or_else(|| c["azp"].as_str())
                .or_else(|| c["client_id"].as_str())
                .unwrap_or("not named in the token");
            report.stages.push(StageReport {
                stage: Stage::Auth,
                title: "token".into(),
                ok: true,
                millis: millis(t.elapsed()),
                detail: format!("tenant {tenant}, app {app}, roles: {roles}"),
            });
        }
        Err(e) => {
            fail(&mut report, Stage::Auth, "token", e, t.elapsed());
            return report;
        }
    }
    let message = match test_message(from, to) {
        Ok(m) => m,
        Err(e) => {
            fail(
                &mut report,
                Stage::Transaction,
                "sendMail",
                e,
                Duration::ZERO,
            );
            return report;
        }
    };
    let envelope = Envelope {
        sender: from.into(),
        recipients: vec![to.into()],
    };
    let t = Instant::now();
    match graph.send(&envelope, &message).await {
        Ok(delivery) => {
            report.queue_id = delivery.reference.clone();
            report.stages.push(StageReport {
                stage: Stage::Transaction,
                title: "sendMail".into(),
                ok: true,
                millis: millis(t.elapsed()),
                detail: format!(
                    "202 Accepted: queued for {to}{}",
                    delivery
                        .reference
                        .map(|r| format!(", request id {r}"))
                        .unwrap_or_default()
                ),
            });
            report.ok = true;
        }
        Err(e) => fail(&mut report, Stage::Transaction, "sendMail", e, t.elapsed()),
    }
    report
}
