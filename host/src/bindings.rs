//! The host side of the `flowmail:mail` WIT world.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "mail-plugin",
    imports: { default: async | trappable },
    exports: { default: async },
    with: {
        "flowmail:mail/tokens.credential": crate::caps::tokens::Credential,
    },
});

pub use self::exports::flowmail::mail::actions;
pub use self::flowmail::mail::{log, mailbox, smtp, tokens, types};
pub use types::MailError;

/// A sentence for people: the case, whether retrying helps, and the text.
pub fn describe(e: &MailError) -> String {
    match e {
        MailError::InvalidInput(e) => format!("field `{}`: {}", e.field, e.reason),
        MailError::AccessDenied(m) => format!("access denied: {m}"),
        MailError::AuthFailed(m) => format!("authentication failed: {m}"),
        MailError::Transient(m) => format!("temporary failure, retrying later can help: {m}"),
        MailError::Permanent(m) => format!("permanent failure: {m}"),
        MailError::NotFound(m) => format!("not found: {m}"),
    }
}
