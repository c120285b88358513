//! Binds the mail logic to the WIT world: imports become a [`Host`], the logic becomes
//! the `actions` export.

use crate::export;
use crate::flowmail::mail::log::{Level, log};
use crate::host::{CredentialInfo, Host};
use crate::mailbox::{self, Batch, RawMessage, Search, SizeCap};
use crate::tokens;
use crate::transport::{self, AccountPolicy, Delivery, Envelope};
use crate::types::{MailError, OutgoingMessage};
use crate::wit_actions::{Filter, Guest, MailboxPage, Receipt};

struct Imports;

impl Host for Imports {
    fn policy(&self, account: &str) -> Result<AccountPolicy, MailError> {
        transport::policy(account)
    }

    fn credential(&self, account: &str) -> Result<CredentialInfo, MailError> {
        let c = tokens::credential_for(account)?;
        Ok(CredentialInfo {
            kind: c.kind(),
            username: c.username(),
            state: c.state(),
        })
    }

    fn send(
        &self,
        account: &str,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<Delivery, MailError> {
        transport::send(account, envelope, message)
    }

    fn fetch_after(
        &self,
        account: &str,
        after: Option<&str>,
        limit: u32,
        search: &Search,
        cap: Option<SizeCap>,
    ) -> Result<Batch, MailError> {
        mailbox::fetch_after(account, after, limit, search, cap)
    }

    fn fetch(&self, account: &str, id: &str) -> Result<RawMessage, MailError> {
        mailbox::fetch(account, id)
    }

    fn warn(&self, message: &str) {
        log(Level::Warn, message);
    }

    fn now(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default()
    }

    fn random(&self) -> u128 {
        let mut bytes = [0u8; 16];
        if getrandom::fill(&mut bytes).is_err() {
            // Uniqueness then rests on the time and a process-local counter.
            static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return ((self.now() as u128) << 64) | n as u128;
        }
        u128::from_le_bytes(bytes)
    }
}

struct Component;

impl Guest for Component {
    fn send_mail(account: String, message: OutgoingMessage) -> Result<Receipt, MailError> {
        crate::actions::send_mail(&Imports, &account, &message)
    }

    fn read_mailbox(
        account: String,
        filter: Filter,
        after: Option<String>,
        limit: u32,
        cap: Option<SizeCap>,
    ) -> Result<MailboxPage, MailError> {
        crate::actions::read_mailbox(&Imports, &account, &filter, after.as_deref(), limit, cap)
    }
}

export!(Component with_types_in crate);
