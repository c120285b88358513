//! The stand-in's mailbox, from Microsoft's documented contract for mail folders and
//! messages: `GET .../mailFolders` (with `$filter=displayName eq '...'`), a folder with
//! `totalItemCount`, the folder's delta query (`changeType=created`, pages of
//! `Prefer: odata.maxpagesize` with `@odata.nextLink`, then an `@odata.deltaLink`; an
//! expired link answers 410 `SyncStateNotFound`), a message's properties, its MIME at
//! `$value`, `PATCH` of `isRead` and `flag`, `POST .../move` (the moved message gets a new
//! id, as in Exchange) and `DELETE`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{Inner, RequestId, error};

/// A folder: its id, display name and well-known name.
#[derive(Debug, Clone)]
pub(super) struct Folder {
    id: String,
    name: String,
    well_known: Option<String>,
}

/// A message in a folder.
#[derive(Debug, Clone)]
pub struct Stored {
    pub id: String,
    pub folder: String,
    /// When it was created in its folder, on the mailbox's change counter.
    seq: u64,
    pub mime: Vec<u8>,
    pub is_read: bool,
    pub flagged: bool,
}

/// Everything the stand-in's mailboxes hold (one mailbox per stand-in: the tests use one
/// user).
#[derive(Debug)]
pub(super) struct MailboxState {
    folders: Vec<Folder>,
    messages: Vec<Stored>,
    seq: u64,
    /// Delta links of an older epoch have expired.
    epoch: u64,
    next_id: u64,
}

impl Default for MailboxState {
    fn default() -> Self {
        let folder = |id: &str, name: &str, wk: &str| Folder {
            id: id.into(),
            name: name.into(),
            well_known: Some(wk.into()),
        };
        Self {
            folders: vec![
                folder("AAFolderInbox", "Inbox", "inbox"),
                folder("AAFolderArchive", "Archive", "archive"),
                folder("AAFolderDeleted", "Deleted Items", "deleteditems"),
            ],
            messages: Vec::new(),
            seq: 0,
            epoch: 1,
            next_id: 0,
        }
    }
}

impl MailboxState {
    /// The folder named by id or well-known name.
    fn folder(&self, key: &str) -> Option<&Folder> {
        self.folders.iter().find(|f| {
            f.id == key
                || f.well_known
                    .as_deref()
                    .is_some_and(|w| w.eq_ignore_ascii_case(key))
        })
    }

    /// The folder named by id, well-known name or display name, for the test's side.
    pub(super) fn folder_by_any(&self, key: &str) -> Option<String> {
        self.folder(key)
            .or_else(|| {
                self.folders
                    .iter()
                    .find(|f| f.name.eq_ignore_ascii_case(key))
            })
            .map(|f| f.id.clone())
    }

    pub(super) fn add_folder(&mut self, name: &str) -> String {
        let id = format!("AAFolder{}", name.replace(' ', ""));
        self.folders.push(Folder {
            id: id.clone(),
            name: name.into(),
            well_known: None,
        });
        id
    }

    fn new_id(&mut self) -> String {
        self.next_id += 1;
        // Exchange ids are long base64 strings, with `-` and `_` and a trailing `=`.
        format!("AAMkAGI2TG93_msg-{:06}=", self.next_id)
    }

    pub(super) fn deliver(&mut self, folder: &str, mime: &[u8]) -> String {
        let id = self.new_id();
        self.seq += 1;
        self.messages.push(Stored {
            id: id.clone(),
            folder: folder.into(),
            seq: self.seq,
            mime: mime.to_vec(),
            is_read: false,
            flagged: false,
        });
        id
    }

    pub(super) fn in_folder(&self, folder: &str) -> Vec<Stored> {
        self.messages
            .iter()
            .filter(|m| m.folder == folder)
            .cloned()
            .collect()
    }

    pub(super) fn expire(&mut self) {
        self.epoch += 1;
    }
}

fn json_answer(status: StatusCode, body: Value, id: &str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (header::HeaderName::from_static("request-id"), id.to_owned()),
        ],
        body.to_string(),
    )
        .into_response()
}

/// The query parameters of `uri`, percent-decoded.
fn query(uri: &Uri) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                    match u8::from_str_radix(hex, 16) {
                        Ok(b) => {
                            out.push(b);
                            i += 3;
                        }
                        Err(_) => {
                            out.push(b'%');
                            i += 1;
                        }
                    }
                }
                b'+' => {
                    out.push(b' ');
                    i += 1;
                }
                b => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn param<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn item_json(m: &Stored) -> Value {
    let secs = m.seq;
    json!({
        "id": m.id,
        "receivedDateTime": format!("2026-11-29T{:02}:{:02}:{:02}Z", (secs / 3600) % 24, (secs / 60) % 60, secs % 60),
        "isRead": m.is_read,
        "isDraft": false,
        "flag": { "flagStatus": if m.flagged { "flagged" } else { "notFlagged" } },
    })
}

pub(super) async fn folders(
    State(inner): State<Arc<Inner>>,
    Extension(RequestId(id)): Extension<RequestId>,
    uri: Uri,
) -> Response {
    let q = query(&uri);
    let wanted = param(&q, "$filter").and_then(|f| {
        f.strip_prefix("displayName eq '")
            .and_then(|r| r.strip_suffix('\''))
            .map(|n| n.replace("''", "'"))
    });
    let Ok(state) = inner.mailbox.lock() else {
        return error(500, "InternalServerError", "poisoned", &id);
    };
    let value: Vec<Value> = state
        .folders
        .iter()
        .filter(|f| wanted.as_deref().is_none_or(|w| f.name == w))
        .map(|f| json!({ "id": f.id, "displayName": f.name }))
        .collect();
    json_answer(StatusCode::OK, json!({ "value": value }), &id)
}

pub(super) async fn folder(
    State(inner): State<Arc<Inner>>,
    Extension(RequestId(id)): Extension<RequestId>,
    Path((_user, folder)): Path<(String, String)>,
) -> Response {
    let Ok(state) = inner.mailbox.lock() else {
        return error(500, "InternalServerError", "poisoned", &id);
    };
    match state.folder(&folder) {
        Some(f) => {
            let count = state.messages.iter().filter(|m| m.folder == f.id).count();
            json_answer(
                StatusCode::OK,
                json!({ "id": f.id, "displayName": f.name, "totalItemCount": count }),
                &id,
            )
        }
        None => error(
            404,
            "ErrorFolderNotFound",
            "The specified folder could not be found in the store.",
            &id,
        ),
    }
}

/// `GET .../mailFolders/{folder}/messages/delta`: the messages created in the folder after
/// the link's point, oldest first, a page at a time.
pub(super) async fn delta(
    State(inner): State<Arc<Inner>>,
    Extension(RequestId(id)): Extension<RequestId>,
    Path((user, folder)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let q = query(&uri);
    let page_size = headers
        .get("prefer")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split("odata.maxpagesize=").nth(1))
        .and_then(|v| v.split([',', ';', ' ']).next())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(10);
    let Ok(state) = inner.mailbox.lock() else {
        return error(500, "InternalServerError", "poisoned", &id);
    };
    let Some(f) = state.folder(&folder).cloned() else {
        return error(
            404,
            "ErrorFolderNotFound",
            "The folder does not exist.",
            &id,
        );
    };
    // Tokens: `{epoch}.{from}.{to}.{after}` (skip) and `{epoch}.{from}` (delta); the change
    // type is kept in every link, as Graph keeps the initial request's options.
    let token = param(&q, "$skiptoken").or(param(&q, "$deltatoken"));
    let (from, to, after) = match token {
        None => (0, state.seq, 0),
        Some(t) => {
            let parts: Vec<u64> = t.split('.').filter_map(|p| p.parse().ok()).collect();
            if parts.first() != Some(&state.epoch) {
                return error(
                    410,
                    "SyncStateNotFound",
                    "The sync state generation is not found. Restart the sync from the beginning.",
                    &id,
                );
            }
            match parts.as_slice() {
                [_, from, to, after] => (*from, *to, *after),
                [_, from] => (*from, state.seq, 0),
                _ => return error(400, "ErrorInvalidUrlQuery", "The token is malformed.", &id),
            }
        }
    };
    match param(&q, "changeType") {
        Some("created") => {}
        _ => {
            return error(
                400,
                "ErrorInvalidRequest",
                "This stand-in serves changeType=created only.",
                &id,
            );
        }
    }
    let mut found: Vec<&Stored> = state
        .messages
        .iter()
        .filter(|m| m.folder == f.id && m.seq > from.max(after) && m.seq <= to)
        .collect();
    found.sort_by_key(|m| m.seq);
    let more = found.len() > page_size;
    found.truncate(page_size);
    let base = format!(
        "http://127.0.0.1:{}/v1.0/users/{user}/mailFolders/{}/messages/delta?changeType=created&$select=id",
        inner.port, f.id
    );
    let mut body = json!({ "value": found.iter().map(|m| item_json(m)).collect::<Vec<_>>() });
    if more {
        let last = found.last().map(|m| m.seq).unwrap_or(after);
        body["@odata.nextLink"] = json!(format!(
            "{base}&$skiptoken={}.{from}.{to}.{last}",
            state.epoch
        ));
    } else {
        body["@odata.deltaLink"] = json!(format!("{base}&$deltatoken={}.{to}", state.epoch));
    }
    json_answer(StatusCode::OK, body, &id)
}

fn not_found(id: &str) -> Response {
    error(
        404,
        "ErrorItemNotFound",
        "The specified object was not found in the store.",
        id,
    )
}

pub(super) async fn message(
    State(inner): State<Arc<Inner>>,
    Extension(RequestId(id)): Extension<RequestId>,
    Path((_user, message)): Path<(String, String)>,
) -> Response {
    let Ok(state) = inner.mailbox.lock() else {
        return error(500, "InternalServerError", "poisoned", &id);
    };
    match state.messages.iter().find(|m| m.id == message) {
        Some(m) => json_answer(StatusCode::OK, item_json(m), &id),
        None => not_found(&id),
    }
}

pub(super) async fn value(
    State(inner): State<Arc<Inner>>,
    Extension(RequestId(id)): Extension<RequestId>,
    Path((_user, message)): Path<(String, String)>,
) -> Response {
    let Ok(state) = inner.mailbox.lock() else {
        return error(500, "InternalServerError", "poisoned", &id);
    };
    match state.messages.iter().find(|m| m.id == message) {
        Some(m) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "text/plain".to_owned()),
                (header::HeaderName::from_static("request-id"), id.clone()),
            ],
            m.mime.clone(),
        )
            .into_response(),
        None => not_found(&id),
    }
}

pub(super) async fn patch(
    State(inner): State<Arc<Inner>>,
    Extension(RequestId(id)): Extension<RequestId>,
    Path((_user, message)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let Ok(change) = serde_json::from_slice::<Value>(&body) else {
        return error(400, "RequestBodyRead", "The body is not JSON.", &id);
    };
    let Ok(mut state) = inner.mailbox.lock() else {
        return error(500, "InternalServerError", "poisoned", &id);
    };
    let Some(m) = state.messages.iter_mut().find(|m| m.id == message) else {
        return not_found(&id);
    };
    if let Some(read) = change["isRead"].as_bool() {
        m.is_read = read;
    }
    if let Some(status) = change["flag"]["flagStatus"].as_str() {
        m.flagged = status == "flagged";
    }
    json_answer(StatusCode::OK, item_json(m), &id)
}

pub(super) async fn move_message(
    State(inner): State<Arc<Inner>>,
    Extension(RequestId(id)): Extension<RequestId>,
    Path((_user, message)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let destination = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["destinationId"].as_str().map(str::to_owned));
    let Ok(mut state) = inner.mailbox.lock() else {
        return error(500, "InternalServerError", "poisoned", &id);
    };
    let Some(folder) = destination.and_then(|d| state.folder(&d).map(|f| f.id.clone())) else {
        return error(
            404,
            "ErrorFolderNotFound",
            "The destination does not exist.",
            &id,
        );
    };
    let Some(at) = state.messages.iter().position(|m| m.id == message) else {
        return not_found(&id);
    };
    let mut moved = state.messages.remove(at);
    moved.id = state.new_id();
    state.seq += 1;
    moved.seq = state.seq;
    moved.folder = folder;
    let answer = item_json(&moved);
    state.messages.push(moved);
    json_answer(StatusCode::CREATED, answer, &id)
}

/// `DELETE .../messages/{id}`: a draft or a mailbox message.
pub(super) async fn delete(
    State(inner): State<Arc<Inner>>,
    Extension(RequestId(id)): Extension<RequestId>,
    Path((_user, message)): Path<(String, String)>,
) -> Response {
    let draft = inner
        .drafts
        .lock()
        .ok()
        .and_then(|mut d| d.remove(&message));
    let stored = inner.mailbox.lock().ok().and_then(|mut s| {
        let at = s.messages.iter().position(|m| m.id == message)?;
        Some(s.messages.remove(at))
    });
    match (draft, stored) {
        (None, None) => not_found(&id),
        _ => StatusCode::NO_CONTENT.into_response(),
    }
}
