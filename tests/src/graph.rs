//! A stand-in for Microsoft Graph, written from Microsoft's documented contract:
//! `POST /v1.0/users/{id}/sendMail` with MIME content (a bearer token the test OAuth2
//! server calls active, `Content-Type: text/plain`, the MIME in base64, `202 Accepted` with
//! an empty body and a `request-id`), and for large messages a draft
//! (`POST .../messages`), attachments (`.../attachments`, `.../createUploadSession` with
//! `PUT` chunks that carry `Content-Range` and no Authorization header) and `.../send`.
//! It checks the token's `roles` claim for Mail.Send, stores what was sent, and answers
//! with the errors a test queues (429 with `Retry-After`, 401, 403, 5xx) before the real
//! answer.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;

/// One message Graph accepted: its MIME, or for a draft its JSON and attachments.
#[derive(Debug, Clone)]
pub struct Sent {
    pub user: String,
    pub mime: Vec<u8>,
    pub draft: Option<serde_json::Value>,
    /// Each attachment's name and bytes, for a draft.
    pub attachments: Vec<(String, Vec<u8>)>,
    pub at: Instant,
}

struct Draft {
    user: String,
    json: serde_json::Value,
    attachments: Vec<(String, Vec<u8>)>,
}

struct Upload {
    draft: String,
    name: String,
    size: usize,
    received: Vec<u8>,
}

/// An answer to give instead of the real one.
#[derive(Debug, Clone)]
pub struct Injected {
    pub status: u16,
    pub retry_after: Option<u64>,
    pub code: &'static str,
}

#[derive(Default)]
struct Inner {
    oauth_port: u16,
    port: u16,
    drafts: Mutex<std::collections::HashMap<String, Draft>>,
    uploads: Mutex<std::collections::HashMap<String, Upload>>,
    sent: Mutex<Vec<Sent>>,
    queued: Mutex<VecDeque<Injected>>,
    requests: Mutex<Vec<(Instant, u16)>>,
    next_id: Mutex<u64>,
}

/// The stand-in, serving on a free port until dropped.
pub struct GraphStandIn {
    /// The API's base, as `graph_url` takes it (`http://127.0.0.1:PORT/v1.0`).
    pub url: String,
    inner: Arc<Inner>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl GraphStandIn {
    /// Starts the stand-in; tokens are checked with the OAuth2 server on `oauth_port`.
    pub fn start(oauth_port: u16) -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", crate::stack::free_port()?))?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let inner = Arc::new(Inner {
            oauth_port,
            port,
            ..Inner::default()
        });
        let app = Router::new()
            .route("/v1.0/users/{user}/sendMail", post(send_mail))
            .route("/v1.0/users/{user}/messages", post(create_draft))
            .route(
                "/v1.0/users/{user}/messages/{id}",
                axum::routing::delete(delete_draft),
            )
            .route(
                "/v1.0/users/{user}/messages/{id}/attachments",
                post(add_attachment),
            )
            .route(
                "/v1.0/users/{user}/messages/{id}/attachments/createUploadSession",
                post(create_upload),
            )
            .route("/v1.0/users/{user}/messages/{id}/send", post(send_draft))
            .route("/upload/{session}", axum::routing::put(upload))
            // Graph takes requests up to 4 MB; this stand-in checks that itself.
            .layer(axum::extract::DefaultBodyLimit::max(8 * 1024 * 1024))
            .with_state(inner.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        Ok(Self {
            url: format!("http://127.0.0.1:{port}/v1.0"),
            inner,
            stop: Some(stop),
        })
    }

    /// Answers the next requests with these, in order, before answering for real.
    pub fn inject(&self, answers: &[Injected]) {
        if let Ok(mut q) = self.inner.queued.lock() {
            q.extend(answers.iter().cloned());
        }
    }

    /// What was sent, in order.
    pub fn sent(&self) -> Vec<Sent> {
        self.inner
            .sent
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// When each request came, with the status it got.
    pub fn requests(&self) -> Vec<(Instant, u16)> {
        self.inner
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }
}

impl Drop for GraphStandIn {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn error(status: u16, code: &str, message: &str, request_id: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::HeaderName::from_static("request-id"), request_id),
        ],
        serde_json::json!({ "error": { "code": code, "message": message,
            "innerError": { "request-id": request_id } } })
        .to_string(),
    )
        .into_response()
}

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

/// The bearer token's check and the queued answers, as every authorized call has them.
async fn gate(inner: &Inner, headers: &HeaderMap, id: &str) -> Option<Response> {
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
    let active = tokio::task::spawn_blocking(move || crate::oauth::active_on(port, &token))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(false);
    if !active {
        return Some(error(
            401,
            "InvalidAuthenticationToken",
            "Access token has expired or is not yet valid.",
            id,
        ));
    }
    // Application permissions: a token without the Mail.Send role is refused, as Graph
    // refuses it.
    let roles = claims_of(headers);
    if !roles.iter().any(|r| r == "Mail.Send") {
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

async fn send_mail(
    State(inner): State<Arc<Inner>>,
    Path(user): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let id = next_id(&inner);
    let response = match gate(&inner, &headers, &id).await {
        Some(r) => r,
        None => answer(&inner, &user, &headers, &body, &id),
    };
    record(&inner, response)
}

fn created(json: serde_json::Value, id: &str) -> Response {
    (
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (header::HeaderName::from_static("request-id"), id.to_owned()),
        ],
        json.to_string(),
    )
        .into_response()
}

async fn create_draft(
    State(inner): State<Arc<Inner>>,
    Path(user): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let id = next_id(&inner);
    if let Some(r) = gate(&inner, &headers, &id).await {
        return record(&inner, r);
    }
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return record(
            &inner,
            error(400, "RequestBodyRead", "The body is not JSON.", &id),
        );
    };
    let draft_id = format!("draft-{id}");
    if let Ok(mut d) = inner.drafts.lock() {
        d.insert(
            draft_id.clone(),
            Draft {
                user,
                json,
                attachments: Vec::new(),
            },
        );
    }
    record(&inner, created(serde_json::json!({ "id": draft_id }), &id))
}

async fn delete_draft(
    State(inner): State<Arc<Inner>>,
    Path((_user, draft)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let id = next_id(&inner);
    if let Some(r) = gate(&inner, &headers, &id).await {
        return record(&inner, r);
    }
    let removed = inner.drafts.lock().ok().and_then(|mut d| d.remove(&draft));
    record(
        &inner,
        match removed {
            Some(_) => StatusCode::NO_CONTENT.into_response(),
            None => error(404, "ErrorItemNotFound", "The draft does not exist.", &id),
        },
    )
}

async fn add_attachment(
    State(inner): State<Arc<Inner>>,
    Path((_user, draft)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let id = next_id(&inner);
    if let Some(r) = gate(&inner, &headers, &id).await {
        return record(&inner, r);
    }
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let bytes = json["contentBytes"]
        .as_str()
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok());
    let (Some(bytes), Some(name)) = (bytes, json["name"].as_str()) else {
        return record(
            &inner,
            error(
                400,
                "ErrorInvalidRequest",
                "A fileAttachment needs name and contentBytes.",
                &id,
            ),
        );
    };
    if bytes.len() >= 3 * 1024 * 1024 {
        return record(
            &inner,
            error(
                413,
                "ErrorAttachmentSizeLimitExceeded",
                "Attachments of 3 MB or more need an upload session.",
                &id,
            ),
        );
    }
    let added = inner.drafts.lock().ok().is_some_and(|mut d| {
        d.get_mut(&draft)
            .map(|d| d.attachments.push((name.to_owned(), bytes)))
            .is_some()
    });
    record(
        &inner,
        if added {
            created(serde_json::json!({ "name": name }), &id)
        } else {
            error(404, "ErrorItemNotFound", "The draft does not exist.", &id)
        },
    )
}

async fn create_upload(
    State(inner): State<Arc<Inner>>,
    Path((_user, draft)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let id = next_id(&inner);
    if let Some(r) = gate(&inner, &headers, &id).await {
        return record(&inner, r);
    }
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let item = &json["AttachmentItem"];
    let (Some(name), Some(size)) = (item["name"].as_str(), item["size"].as_u64()) else {
        return record(
            &inner,
            error(
                400,
                "ErrorInvalidRequest",
                "AttachmentItem needs name and size.",
                &id,
            ),
        );
    };
    let session = format!("s-{id}");
    if let Ok(mut u) = inner.uploads.lock() {
        u.insert(
            session.clone(),
            Upload {
                draft,
                name: name.to_owned(),
                size: size as usize,
                received: Vec::new(),
            },
        );
    }
    record(
        &inner,
        created(
            serde_json::json!({
                "uploadUrl": format!("http://127.0.0.1:{}/upload/{session}", inner.port),
                "nextExpectedRanges": ["0-"],
            }),
            &id,
        ),
    )
}

async fn upload(
    State(inner): State<Arc<Inner>>,
    Path(session): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let id = next_id(&inner);
    // The upload URL is pre-authorized: a request with Authorization is refused.
    if headers.contains_key(header::AUTHORIZATION) {
        return record(
            &inner,
            error(
                401,
                "InvalidAuthenticationToken",
                "Do not send an Authorization header to the upload URL.",
                &id,
            ),
        );
    }
    let range = headers
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes "))
        .and_then(|v| {
            let (span, total) = v.split_once('/')?;
            let (a, b) = span.split_once('-')?;
            Some((
                a.parse::<usize>().ok()?,
                b.parse::<usize>().ok()?,
                total.parse::<usize>().ok()?,
            ))
        });
    let mut uploads = match inner.uploads.lock() {
        Ok(u) => u,
        Err(_) => return record(&inner, error(500, "Poisoned", "", &id)),
    };
    let Some(up) = uploads.get_mut(&session) else {
        return record(
            &inner,
            error(404, "ErrorItemNotFound", "No such upload session.", &id),
        );
    };
    let Some((start, end, total)) = range else {
        return record(
            &inner,
            error(400, "InvalidRange", "Content-Range is required.", &id),
        );
    };
    let last = end + 1 == total;
    if start != up.received.len()
        || total != up.size
        || end + 1 - start != body.len()
        || body.len() > 4 * 1024 * 1024
        || (!last && !body.len().is_multiple_of(320 * 1024))
    {
        return record(
            &inner,
            error(
                416,
                "InvalidRange",
                "The range does not continue the upload.",
                &id,
            ),
        );
    }
    up.received.extend_from_slice(&body);
    if !last {
        let next = up.received.len();
        return record(
            &inner,
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                serde_json::json!({ "nextExpectedRanges": [format!("{next}-")] }).to_string(),
            )
                .into_response(),
        );
    }
    let Some(done) = uploads.remove(&session) else {
        return record(&inner, error(500, "Lost", "", &id));
    };
    drop(uploads);
    if let Ok(mut d) = inner.drafts.lock()
        && let Some(draft) = d.get_mut(&done.draft)
    {
        draft.attachments.push((done.name, done.received));
    }
    record(&inner, StatusCode::CREATED.into_response())
}

async fn send_draft(
    State(inner): State<Arc<Inner>>,
    Path((_user, draft)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let id = next_id(&inner);
    if let Some(r) = gate(&inner, &headers, &id).await {
        return record(&inner, r);
    }
    let Some(d) = inner.drafts.lock().ok().and_then(|mut d| d.remove(&draft)) else {
        return record(
            &inner,
            error(404, "ErrorItemNotFound", "The draft does not exist.", &id),
        );
    };
    if let Ok(mut sent) = inner.sent.lock() {
        sent.push(Sent {
            user: d.user,
            mime: Vec::new(),
            draft: Some(d.json),
            attachments: d.attachments,
            at: Instant::now(),
        });
    }
    record(
        &inner,
        (
            StatusCode::ACCEPTED,
            [(header::HeaderName::from_static("request-id"), id)],
        )
            .into_response(),
    )
}

/// Drafts not sent (a failed send must leave none).
impl GraphStandIn {
    pub fn drafts(&self) -> usize {
        self.inner
            .drafts
            .lock()
            .map(|d| d.len())
            .unwrap_or_default()
    }
}

fn answer(inner: &Inner, user: &str, headers: &HeaderMap, body: &[u8], id: &str) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("text/plain") {
        return error(
            400,
            "ErrorMimeContentInvalid",
            "MIME content must be sent as text/plain in base64.",
            id,
        );
    }
    let text: String = String::from_utf8_lossy(body).split_whitespace().collect();
    let Ok(mime) = base64::engine::general_purpose::STANDARD.decode(text.as_bytes()) else {
        return error(
            400,
            "ErrorMimeContentInvalidBase64String",
            "Invalid base64 string for MIME content.",
            id,
        );
    };
    if body.len() > 4 * 1024 * 1024 {
        return error(413, "RequestBodyTooLarge", "The request is over 4 MB.", id);
    }
    if let Ok(mut sent) = inner.sent.lock() {
        sent.push(Sent {
            user: user.to_owned(),
            mime,
            draft: None,
            attachments: Vec::new(),
            at: Instant::now(),
        });
    }
    (
        StatusCode::ACCEPTED,
        [(header::HeaderName::from_static("request-id"), id.to_owned())],
    )
        .into_response()
}
