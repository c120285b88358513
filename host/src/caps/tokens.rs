//! The `tokens` capability: opaque credential handles. The guest learns the kind and
//! state of an account's credential, never the secret; transports attach it themselves.

use std::collections::HashMap;

use tracing::instrument;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use super::Audit;
use crate::auth::TokenManager;
use crate::bindings::tokens::{self as generated, AuthKind, CredentialState};
use crate::bindings::{Credential, MailError};

/// What the host tells the guest about one account's credential.
#[derive(Debug, Clone)]
pub struct CredentialInfo {
    pub kind: AuthKind,
    pub username: Option<String>,
    pub state: CredentialState,
}

/// Credentials by account name.
#[derive(Clone, Default)]
pub struct TokensCtx {
    pub accounts: HashMap<String, CredentialInfo>,
    /// Accounts whose tokens come from the token store; their state is read from it.
    pub managers: HashMap<String, std::sync::Arc<TokenManager>>,
}

/// The view of [`TokensCtx`] that serves one step.
pub struct Tokens<'a> {
    pub ctx: &'a TokensCtx,
    pub table: &'a mut ResourceTable,
    pub audit: &'a Audit,
    pub scope: &'a super::Scope,
}

impl Tokens<'_> {
    fn info(&self, handle: &Resource<Credential>) -> wasmtime::Result<&CredentialInfo> {
        let account = &self.table.get(handle)?.account;
        self.ctx.accounts.get(account).ok_or_else(|| {
            wasmtime::Error::msg(format!("credential of unknown account `{account}`"))
        })
    }
}

impl generated::Host for Tokens<'_> {
    #[instrument(name = "tokens.credential_for", skip(self))]
    async fn credential_for(
        &mut self,
        account: String,
    ) -> wasmtime::Result<Result<Resource<Credential>, MailError>> {
        let result = if let Err(denied) = self.scope.admit(&account) {
            Err(denied)
        } else if self.ctx.accounts.contains_key(&account) {
            Ok(self.table.push(Credential {
                account: account.clone(),
            })?)
        } else {
            Err(MailError::NotFound(format!(
                "no account `{account}` is configured"
            )))
        };
        self.audit
            .record(|| format!("import tokens.credential-for account={account} -> {result:?}"));
        Ok(result)
    }
}

impl generated::HostCredential for Tokens<'_> {
    async fn kind(&mut self, handle: Resource<Credential>) -> wasmtime::Result<AuthKind> {
        let kind = self.info(&handle)?.kind;
        self.audit
            .record(|| format!("import tokens.credential.kind -> {kind:?}"));
        Ok(kind)
    }

    async fn username(&mut self, handle: Resource<Credential>) -> wasmtime::Result<Option<String>> {
        let username = self.info(&handle)?.username.clone();
        self.audit
            .record(|| format!("import tokens.credential.username -> {username:?}"));
        Ok(username)
    }

    async fn state(&mut self, handle: Resource<Credential>) -> wasmtime::Result<CredentialState> {
        let account = self.table.get(&handle)?.account.clone();
        let state = match self.ctx.managers.get(&account) {
            Some(manager) => manager.state(),
            None => self.info(&handle)?.state.clone(),
        };
        self.audit
            .record(|| format!("import tokens.credential.state -> {state:?}"));
        Ok(state)
    }

    async fn drop(&mut self, handle: Resource<Credential>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}

struct HasTokens;

impl HasData for HasTokens {
    type Data<'a> = Tokens<'a>;
}

/// Adds the `tokens` interface to `linker`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    f: fn(&mut T) -> Tokens<'_>,
) -> wasmtime::Result<()> {
    generated::add_to_linker::<T, HasTokens>(linker, f)
}
