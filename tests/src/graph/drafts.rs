//! The stand-in's drafts: `POST .../messages`, attachments whole or through upload
//! sessions (`PUT` chunks with `Content-Range`, a multiple of 320 KiB but the last, and no
//! Authorization header) and `.../send`; a draft is deleted as any message is.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

use super::{Inner, RequestId, Sent, error};

pub(super) struct Draft {
    pub(super) user: String,
    pub(super) json: serde_json::Value,
    pub(super) attachments: Vec<(String, Vec<u8>)>,
}

pub(super) struct Upload {
    pub(super) draft: String,
    pub(super) name: String,
    pub(super) size: usize,
    pub(super) received: Vec<u8>,
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

pub(super) async fn create(
    State(inner): State<Arc<Inner>>,
    Extension(RequestId(id)): Extension<RequestId>,
    Path(user): Path<String>,
    body: Bytes,
) -> Response {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return error(400, "RequestBodyRead", "The body is not JSON.", &id);
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
    created(serde_json::json!({ "id": draft_id }), &id)
}

pub(super) async fn add_attachment(
    State(inner): State<Arc<Inner>>,
    Extension(RequestId(id)): Extension<RequestId>,
    Path((_user, draft)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let bytes = json["contentBytes"]
        .as_str()
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok());
    let (Some(bytes), Some(name)) = (bytes, json["name"].as_str()) else {
        return error(
            400,
            "ErrorInvalidRequest",
            "A fileAttachment needs name and contentBytes.",
            &id,
        );
    };
    if bytes.len() >= 3 * 1024 * 1024 {
        return error(
            413,
            "ErrorAttachmentSizeLimitExceeded",
            "Attachments of 3 MB or more need an upload session.",
            &id,
        );
    }
    let added = inner.drafts.lock().ok().is_some_and(|mut d| {
        d.get_mut(&draft)
            .map(|d| d.attachments.push((name.to_owned(), bytes)))
            .is_some()
    });
    if added {
        created(serde_json::json!({ "name": name }), &id)
    } else {
        error(404, "ErrorItemNotFound", "The draft does not exist.", &id)
    }
}

pub(super) async fn create_upload(
    State(inner): State<Arc<Inner>>,
    Extension(RequestId(id)): Extension<RequestId>,
    Path((_user, draft)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let item = &json["AttachmentItem"];
    let (Some(name), Some(size)) = (item["name"].as_str(), item["size"].as_u64()) else {
        return error(
            400,
            "ErrorInvalidRequest",
            "AttachmentItem needs name and size.",
            &id,
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
    created(
        serde_json::json!({
            "uploadUrl": format!("http://127.0.0.1:{}/upload/{session}", inner.port),
            "nextExpectedRanges": ["0-"],
        }),
        &id,
    )
}

pub(super) async fn upload(
    State(inner): State<Arc<Inner>>,
    Extension(RequestId(id)): Extension<RequestId>,
    Path(session): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // The upload URL is pre-authorized: a request with Authorization is refused.
    if headers.contains_key(header::AUTHORIZATION) {
        return error(
            401,
            "InvalidAuthenticationToken",
            "Do not send an Authorization header to the upload URL.",
            &id,
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
        Err(_) => return error(500, "Poisoned", "", &id),
    };
    let Some(up) = uploads.get_mut(&session) else {
        return error(404, "ErrorItemNotFound", "No such upload session.", &id);
    };
    let Some((start, end, total)) = range else {
        return error(400, "InvalidRange", "Content-Range is required.", &id);
    };
    let last = end + 1 == total;
    if start != up.received.len()
        || total != up.size
        || end + 1 - start != body.len()
        || body.len() > 4 * 1024 * 1024
        || (!last && !body.len().is_multiple_of(320 * 1024))
    {
        return error(
            416,
            "InvalidRange",
            "The range does not continue the upload.",
            &id,
        );
    }
    up.received.extend_from_slice(&body);
    if !last {
        let next = up.received.len();
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({ "nextExpectedRanges": [format!("{next}-")] }).to_string(),
        )
            .into_response();
    }
    let Some(done) = uploads.remove(&session) else {
        return error(500, "Lost", "", &id);
    };
    drop(uploads);
    if let Ok(mut d) = inner.drafts.lock()
        && let Some(draft) = d.get_mut(&done.draft)
    {
        draft.attachments.push((done.name, done.received));
    }
    StatusCode::CREATED.into_response()
}

pub(super) async fn send(
    State(inner): State<Arc<Inner>>,
    Extension(RequestId(id)): Extension<RequestId>,
    Path((_user, draft)): Path<(String, String)>,
) -> Response {
    let Some(d) = inner.drafts.lock().ok().and_then(|mut d| d.remove(&draft)) else {
        return error(404, "ErrorItemNotFound", "The draft does not exist.", &id);
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
    (
        StatusCode::ACCEPTED,
        [(header::HeaderName::from_static("request-id"), id)],
    )
        .into_response()
}
