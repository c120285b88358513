//! The flowmail component: validates, composes, parses and filters mail.
//!
//! The mail logic lives in plain modules that compile and unit-test on the native
//! target. They reach the host only through the [`host::Host`] trait; [`glue`] implements
//! it with the WIT imports and exports the `actions` interface.

wit_bindgen::generate!({
    world: "mail-plugin",
    path: "../wit",
});

pub mod actions;
pub mod address;
pub mod compose;
pub mod filter;
pub mod host;
pub mod parse;

#[cfg(target_arch = "wasm32")]
mod glue;

pub use exports::flowmail::mail::actions as wit_actions;
pub use flowmail::mail::{mailbox, tokens, transport, types};
