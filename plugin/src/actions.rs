//! The two workflow actions, written against the [`Host`] trait.

use crate::compose::{self, Context};
use crate::filter::Compiled;
use crate::host::{Host, invalid};
use crate::mailbox::{Content, Search, SizeCap};
use crate::parse;
use crate::tokens::CredentialState;
use crate::types::{Attachment, MailError, OutgoingMessage};
use crate::wit_actions::{Filter, MailboxPage, Receipt, SkippedMessage};

/// The largest batch one `read-mailbox` call may ask for.
pub const MAX_BATCH: u32 = 1000;

/// Validates, composes and sends `message` through `account`.
pub fn send_mail(
    host: &impl Host,
    account: &str,
    message: &OutgoingMessage,
) -> Result<Receipt, MailError> {
    let policy = host.policy(account)?;
    let credential = host.credential(account)?;
    if let CredentialState::NeedsAuthorization(why) = credential.state {
        return Err(MailError::AuthFailed(format!(
            "account `{account}` needs authorization: {why}"
        )));
    }
    let sender = compose::sender_of(message, &policy)?;
    compose::validate(message, &sender, &policy)?;
    // Forwarded attachments come from received mail, not from the workflow: one that
    // cannot be sent (over the account's attachment limit) is left out with a warning, so
    // one bad message does not fail a digest of many.
    let forwarded = forwarded_attachments(host, message)?
        .into_iter()
        .filter(
            |(field, a)| match compose::check_attachment(field, a, &policy) {
                Ok(()) => true,
                Err(e) => {
                    host.warn(&format!(
                        "left out the forwarded attachment `{}` ({field}): {}",
                        a.name,
                        match &e {
                            MailError::InvalidInput(f) => f.reason.clone(),
                            other => format!("{other:?}"),
                        }
                    ));
                    false
                }
            },
        )
        .collect();
    let composed = compose::compose(
        message,
        &sender,
        Context {
            policy: &policy,
            forwarded,
            now: host.now(),
            random: host.random(),
        },
    )?;
    let delivery = host.send(account, &composed.envelope, &composed.bytes)?;
    Ok(Receipt {
        message_id: composed.message_id,
        accepted: delivery.accepted,
        transport: delivery.transport,
        status: delivery.status,
        reference: delivery.reference,
        size: composed.bytes.len() as u64,
    })
}

/// Fetches the attachments that `message.forward-attachments` refers to.
fn forwarded_attachments(
    host: &impl Host,
    message: &OutgoingMessage,
) -> Result<Vec<(String, Attachment)>, MailError> {
    let mut out = Vec::new();
    for (i, r) in message.forward_attachments.iter().enumerate() {
        let field = format!("message.forward_attachments[{i}]");
        let raw = host.fetch(&r.account, &r.message).map_err(|e| match e {
            MailError::NotFound(why) => invalid(
                &field,
                format!(
                    "message {} of `{}` was not found: {why}",
                    r.message, r.account
                ),
            ),
            other => other,
        })?;
        let all = parse::attachments(&raw).map_err(|why| {
            invalid(
                &field,
                format!("message {} cannot be read: it {why}", r.message),
            )
        })?;
        match r.index {
            None => out.extend(
                all.into_iter()
                    .enumerate()
                    .map(|(j, a)| (format!("{field}[{j}]"), a)),
            ),
            Some(index) => {
                let count = all.len();
                let a = all.into_iter().nth(index as usize).ok_or_else(|| {
                    invalid(
                        format!("{field}.index"),
                        format!(
                            "message {} has {count} attachments; index {index} does not exist",
                            r.message
                        ),
                    )
                })?;
                out.push((field, a));
            }
        }
    }
    Ok(out)
}

/// Reads, parses and filters the messages of `account` after `after`.
pub fn read_mailbox(
    host: &impl Host,
    account: &str,
    filter: &Filter,
    after: Option<&str>,
    limit: u32,
    cap: Option<SizeCap>,
) -> Result<MailboxPage, MailError> {
    if limit == 0 || limit > MAX_BATCH {
        return Err(invalid(
            "limit",
            format!("must be between 1 and {MAX_BATCH}, not {limit}"),
        ));
    }
    if cap.is_some_and(|c| c.max_size == 0) {
        return Err(invalid("cap.max_size", "must be more than 0 bytes"));
    }
    let compiled = Compiled::new(filter)?;
    let search = Search {
        sender_contains: filter.sender_contains.clone(),
        subject_contains: filter.subject_contains.clone(),
        unseen: filter.unseen.unwrap_or(false),
        sent_since: compiled.sent_since(),
    };
    let batch = host.fetch_after(account, after, limit, &search, cap)?;
    let mut page = MailboxPage {
        messages: Vec::new(),
        skipped: Vec::new(),
        next_cursor: batch.next,
        scanned: 0,
        more: batch.more,
        restarted: batch.restarted,
    };
    for raw in &batch.messages {
        page.scanned += 1;
        let parsed = if raw.content == Content::Omitted {
            Err(format!(
                "is {} bytes, over the size cap of {} bytes, and the cap says to skip it",
                raw.size,
                cap.map(|c| c.max_size).unwrap_or_default()
            ))
        } else {
            parse::parse(raw)
        };
        match parsed {
            Ok(m) if compiled.matches(&m) => page.messages.push(m),
            Ok(_) => {}
            Err(reason) => {
                host.warn(&format!(
                    "message {} of `{account}` is skipped: it {reason}",
                    raw.id
                ));
                page.skipped.push(SkippedMessage {
                    id: raw.id.clone(),
                    reason,
                });
            }
        }
    }
    Ok(page)
}

#[cfg(test)]
mod tests;
