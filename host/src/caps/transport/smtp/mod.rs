//! The SMTP transport: lettre's connection API over the host's own sockets, sessions
//! pooled per account, every failure classified once, and Test Mail's staged report.

mod classify;
mod relay;
pub(crate) mod session;
pub mod test_mail;
mod transaction;
mod wire;

pub use self::relay::Relay;
pub use self::session::Auth;
pub use self::transaction::Session;
