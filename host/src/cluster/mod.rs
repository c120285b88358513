//! What makes several `serve` processes one cluster: the durable outbox's delivery
//! workers, which send the queued mail of their node's data center.

pub mod outbox;
