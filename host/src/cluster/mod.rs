//! What makes several `serve` processes one cluster: the durable outbox's delivery
//! workers, which send the queued mail of their node's data center, and the probes that
//! run Test Mail from the account's data center.

pub mod outbox;
pub mod probes;
