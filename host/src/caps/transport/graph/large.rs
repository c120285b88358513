//! Messages whose request would pass 4 MB: a draft (`POST /users/{user}/messages`) made
//! from the composed message, each attachment added whole when small or through an upload
//! session (`createUploadSession`, then `PUT` chunks with `Content-Range` and no
//! Authorization header) when 3 MB or more, then `POST .../send`. A draft left by a failure
//! is deleted again.

use base64::Engine as _;
use mail_parser::{Address as MpAddress, MessageParser, MimeHeaders, PartType};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use super::Graph;
use crate::bindings::MailError;
use crate::bindings::transport::Envelope;
use crate::net::graph::{Call, Token, path_segment};

/// Attachments from this size on go through an upload session, as Graph requires.
const SESSION_FROM: usize = 3 * 1024 * 1024;
/// Upload chunks: a multiple of 320 KiB, under Graph's 4 MB per request.
const CHUNK: usize = 12 * 320 * 1024;

struct Part {
    name: String,
    content_type: String,
    data: Vec<u8>,
    content_id: Option<String>,
}

fn recipients(list: Option<&MpAddress<'_>>) -> Vec<Value> {
    list.map(|l| {
        l.iter()
            .filter_map(|a| {
                a.address().map(|email| {
                    json!({ "emailAddress": { "address": email, "name": a.name().unwrap_or_default() } })
                })
            })
            .collect()
    })
    .unwrap_or_default()
}

/// Sends the composed `mime` (Bcc already in its header) as a draft with attachments.
pub(super) async fn send(
    g: &Graph,
    mime: &[u8],
    _envelope: &Envelope,
    token: &mut Token,
) -> Result<HeaderMap, MailError> {
    let m = MessageParser::default().parse(mime).ok_or_else(|| {
        MailError::Permanent("the composed message could not be read back for Graph".into())
    })?;
    let has_html = m.html_body.iter().any(|i| {
        matches!(
            m.parts.get(*i as usize).map(|p| &p.body),
            Some(PartType::Html(_))
        )
    });
    let body = match (has_html, m.body_html(0), m.body_text(0)) {
        (true, Some(html), _) => json!({ "contentType": "HTML", "content": html }),
        (_, _, Some(text)) => json!({ "contentType": "Text", "content": text }),
        _ => json!({ "contentType": "Text", "content": "" }),
    };
    let headers: Vec<Value> = m
        .headers()
        .iter()
        .filter(|h| h.name().to_ascii_lowercase().starts_with("x-"))
        .filter_map(|h| {
            m.header_raw(h.name())
                .map(|v| json!({ "name": h.name(), "value": v.trim() }))
        })
        .collect();
    let mut draft = json!({
        "subject": m.subject().unwrap_or_default(),
        "body": body,
        "toRecipients": recipients(m.to()),
        "ccRecipients": recipients(m.cc()),
        "bccRecipients": recipients(m.bcc()),
        "replyTo": recipients(m.reply_to()),
    });
    if let Some(id) = m.message_id() {
        draft["internetMessageId"] = json!(format!("<{id}>"));
    }
    if !headers.is_empty() {
        draft["internetMessageHeaders"] = json!(headers);
    }
    let parts: Vec<Part> = m
        .attachments()
        .enumerate()
        .map(|(i, p)| Part {
            name: p
                .attachment_name()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("attachment-{i}")),
            content_type: p
                .content_type()
                .map(|ct| match ct.subtype() {
                    Some(sub) => format!("{}/{sub}", ct.ctype()),
                    None => ct.ctype().to_owned(),
                })
                .unwrap_or_else(|| "application/octet-stream".into()),
            data: p.contents().to_vec(),
            content_id: p.content_id().map(str::to_owned),
        })
        .collect();

    let messages = g.api.url("/messages");
    let created = g
        .call(
            Call::new(
                "creating a draft",
                Method::POST,
                messages.clone(),
                "application/json",
                draft.to_string().into_bytes(),
            ),
            token,
        )
        .await?;
    let id = serde_json::from_slice::<Value>(&created.body)
        .ok()
        .and_then(|v| v["id"].as_str().map(str::to_owned))
        .ok_or_else(|| MailError::Permanent("Graph made a draft but named no id".into()))?;
    let draft_url = format!("{messages}/{}", path_segment(&id));
    let result = fill_and_send(g, &draft_url, &parts, token).await;
    if result.is_err() {
        // Best effort: a failed send leaves no draft behind.
        let delete = Call::new(
            "deleting the draft",
            Method::DELETE,
            draft_url,
            "application/json",
            Vec::new(),
        );
        if let Err(e) = g.call(delete, token).await {
            tracing::warn!(
                "the draft of a failed Graph send could not be deleted: {}",
                e.describe()
            );
        }
    }
    result
}

async fn fill_and_send(
    g: &Graph,
    draft_url: &str,
    parts: &[Part],
    token: &mut Token,
) -> Result<HeaderMap, MailError> {
    for part in parts {
        if part.data.len() < SESSION_FROM {
            let attachment = json!({
                "@odata.type": "#microsoft.graph.fileAttachment",
                "name": part.name,
                "contentType": part.content_type,
                "contentBytes": base64::engine::general_purpose::STANDARD.encode(&part.data),
                "isInline": part.content_id.is_some(),
                "contentId": part.content_id,
            });
            let call = Call::new(
                "adding an attachment",
                Method::POST,
                format!("{draft_url}/attachments"),
                "application/json",
                attachment.to_string().into_bytes(),
            );
            g.call(call, token).await?;
            continue;
        }
        let item = json!({ "AttachmentItem": {
            "attachmentType": "file",
            "name": part.name,
            "size": part.data.len(),
            "contentType": part.content_type,
            "isInline": part.content_id.is_some(),
            "contentId": part.content_id,
        }});
        let call = Call::new(
            "createUploadSession",
            Method::POST,
            format!("{draft_url}/attachments/createUploadSession"),
            "application/json",
            item.to_string().into_bytes(),
        );
        let session = g.call(call, token).await?;
        let upload_url = serde_json::from_slice::<Value>(&session.body)
            .ok()
            .and_then(|v| v["uploadUrl"].as_str().map(str::to_owned))
            .ok_or_else(|| {
                MailError::Permanent("Graph opened an upload session without an uploadUrl".into())
            })?;
        let total = part.data.len();
        for (n, chunk) in part.data.chunks(CHUNK).enumerate() {
            let start = n * CHUNK;
            let end = start + chunk.len() - 1;
            let mut call = Call::new(
                "uploading an attachment",
                Method::PUT,
                upload_url.clone(),
                "application/octet-stream",
                chunk.to_vec(),
            );
            // The upload URL authorizes itself; a bearer token there is refused.
            call.authorized = false;
            call.headers
                .push(("content-range", format!("bytes {start}-{end}/{total}")));
            g.call(call, token).await?;
        }
    }
    let send = Call::new(
        "send",
        Method::POST,
        format!("{draft_url}/send"),
        "application/json",
        Vec::new(),
    );
    Ok(g.call(send, token).await?.headers)
}
