//! The gate every request passes: an id, Outlook's limit of four requests in flight to
//! one mailbox, the bearer token's check against the test OAuth2 server and its `roles`
//! claim, and the answers a test queued; then a record of the answer.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;

use super::{Inner, error};

/// The `roles` claim of the request's bearer token.
fn claims_of(headers: &HeaderMap) -> Vec<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|t| t.split('.').nth(1))
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p.trim_end_matches('='))
                .ok()
        })
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|c| {
            c["roles"].as_array().map(|r| {
                r.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
        })
        .unwrap_or_default()
}

fn next_id(inner: &Inner) -> String {
    let n = inner
        .next_id
        .lock()
        .map(|mut n| {
            *n += 1;
            *n
        })
        .unwrap_or_default();
    format!("req-{n:08}")
}

fn record(inner: &Inner, response: Response) -> Response {
    if let Ok(mut r) = inner.requests.lock() {
        r.push((Instant::now(), response.status().as_u16()));
    }
    response
}

/// The id of a request, given to its handler by [`tracked`].
#[derive(Clone)]
pub(crate) struct RequestId(pub(crate) String);

/// Every request: an id, the token check and queued answers for the API's routes (the
/// upload URL authorizes itself), and a record of the answer.
pub(super) async fn tracked(
    State(inner): State<Arc<Inner>>,
    mut request: Request,
    next: Next,
) -> Response {
    let id = next_id(&inner);
    request.extensions_mut().insert(RequestId(id.clone()));
    let path = request.uri().path().to_owned();
    let user = path
        .strip_prefix("/v1.0/users/")
        .and_then(|p| p.split('/').next())
        .map(str::to_ascii_lowercase);
    // Outlook serves at most four requests to one mailbox at a time. The count drops
    // when the request ends, also when its client went away (then the handler is
    // dropped, not finished).
    let slot = user.as_ref().map(|u| InFlight::enter(&inner, u));
    let crowded = slot.as_ref().is_some_and(|s| s.count > 4);
    let gated = if crowded {
        let mut r = error(
            429,
            "ApplicationThrottled",
            "Application is over its MailboxConcurrency limit.",
            &id,
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        Some(r)
    } else if path.starts_with("/v1.0/") {
        let role = role_for(request.method(), &path);
        gate(&inner, request.headers(), &id, role).await
    } else {
        None
    };
    let response = match gated {
        Some(refused) => refused,
        None => next.run(request).await,
    };
    drop(slot);
    record(&inner, response)
}

/// One request in flight to a mailbox, counted until dropped.
struct InFlight {
    inner: Arc<Inner>,
    user: String,
    /// How many were in flight with this one.
    count: usize,
}

impl InFlight {
    fn enter(inner: &Arc<Inner>, user: &str) -> Self {
        let count = inner
            .in_flight
            .lock()
            .map(|mut f| {
                let n = f.0.entry(user.to_owned()).or_default();
                *n += 1;
                let now = *n;
                f.1 = f.1.max(now);
                now
            })
            .unwrap_or_default();
        Self {
            inner: inner.clone(),
            user: user.to_owned(),
            count,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut f) = self.inner.in_flight.lock()
            && let Some(n) = f.0.get_mut(&self.user)
        {
            *n = n.saturating_sub(1);
        }
    }
}

/// The application permissions a request needs: Mail.Send to send, Mail.Read (or
/// Mail.ReadWrite) to read, Mail.ReadWrite to change messages or make drafts.
fn role_for(method: &axum::http::Method, path: &str) -> &'static [&'static str] {
    if path.ends_with("/sendMail") || path.ends_with("/send") {
        &["Mail.Send"]
    } else if method == axum::http::Method::GET {
        &["Mail.Read", "Mail.ReadWrite"]
    } else {
        &["Mail.ReadWrite"]
    }
}

/// The bearer token's check and the queued answers, as every authorized call has them.
async fn gate(inner: &Inner, headers: &HeaderMap, id: &str, role: &[&str]) -> Option<Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let Some(token) = token else {
        return Some(error(
            401,
            "InvalidAuthenticationToken",
            "Access token is empty.",
            id,
        ));
    };
    let port = inner.oauth_port;
    let known = inner
        .remembered
        .lock()
        .ok()
        .and_then(|r| r.as_ref().map(|r| r.contains(&token)));
    let active = match known {
        Some(true) => true,
        remembering => {
            let checked = token.clone();
            let active =
                tokio::task::spawn_blocking(move || crate::oauth::active_on(port, &checked))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or(false);
            if active
                && remembering.is_some()
                && let Ok(mut r) = inner.remembered.lock()
                && let Some(r) = r.as_mut()
            {
                r.insert(token);
            }
            active
        }
    };
    if !active {
        return Some(error(
            401,
            "InvalidAuthenticationToken",
            "Access token has expired or is not yet valid.",
            id,
        ));
    }
    // Application permissions: a token without the role is refused, as Graph refuses it.
    let roles = claims_of(headers);
    if !roles.iter().any(|r| role.contains(&r.as_str())) {
        return Some(error(
            403,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
            id,
        ));
    }
    let queued = inner.queued.lock().ok().and_then(|mut q| q.pop_front());
    queued.map(|q| {
        let mut r = error(q.status, q.code, "injected by the test", id);
        if let Some(secs) = q.retry_after
            && let Ok(v) = secs.to_string().parse()
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        r
    })
}
