//! Queued delivery: the step's send stores the composed message in the durable outbox
//! and returns at once with a `queued` receipt naming the outbox id; a delivery worker of
//! the account's data center sends it through the account's own transport.

use std::sync::Arc;

use super::Transport;
use crate::BoxFuture;
use crate::bindings::MailError;
use crate::bindings::transport::{Delivery, DeliveryStatus, Envelope};
use crate::store::Store;

/// The outbox id of a queued receipt's reference (`outbox:ID`), if it is one.
pub fn outbox_id(reference: Option<&str>) -> Option<i64> {
    reference?.strip_prefix("outbox:")?.parse().ok()
}

/// An account's transport behind the outbox.
pub struct Queued {
    store: Arc<Store>,
    account: String,
    data_center: String,
    /// The transport the workers deliver through.
    pub direct: Arc<dyn Transport>,
}

impl Queued {
    pub fn new(
        store: Arc<Store>,
        account: &str,
        data_center: &str,
        direct: Arc<dyn Transport>,
    ) -> Self {
        Self {
            store,
            account: account.to_owned(),
            data_center: data_center.to_owned(),
            direct,
        }
    }

    fn enqueue(&self, envelope: &Envelope, message: &[u8]) -> Result<Delivery, MailError> {
        let message_id = mail_parser::MessageParser::default()
            .parse_headers(message)
            .and_then(|m| m.message_id().map(str::to_owned));
        let id = self
            .store
            .enqueue(
                &self.account,
                &self.data_center,
                &envelope.sender,
                &envelope.recipients,
                message,
                message_id.as_deref(),
            )
            .map_err(|e| {
                MailError::Transient(format!(
                    "the outbox could not store the message for `{}`: {e}; nothing was queued, try again",
                    self.account
                ))
            })?;
        crate::cluster::outbox::queued();
        Ok(Delivery {
            transport: self.direct.kind().into(),
            status: DeliveryStatus::Queued,
            accepted: envelope.recipients.clone(),
            reference: Some(format!("outbox:{id}")),
        })
    }
}

impl Transport for Queued {
    fn send<'a>(
        &'a self,
        envelope: &'a Envelope,
        message: &'a [u8],
    ) -> BoxFuture<'a, Result<Delivery, MailError>> {
        Box::pin(async move { self.enqueue(envelope, message) })
    }

    fn kind(&self) -> &'static str {
        self.direct.kind()
    }
}
