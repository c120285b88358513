//! The Graph clients of an account: its transport and its mailbox, each on the shared TLS
//! policy, with the account's tokens.

use std::time::Duration;

use anyhow::{Context, bail};

use super::{TokenManagers, token_source};
use crate::config::{Config, TransportConfig};
use crate::net::graph::GraphApi;

/// The Graph transport of `account`, for sending and for Test Mail.
pub fn graph(
    config: &Config,
    account: &str,
    managers: &TokenManagers,
) -> anyhow::Result<crate::caps::transport::graph::Graph> {
    let a = config
        .accounts
        .get(account)
        .with_context(|| format!("no account `{account}` in the config"))?;
    let Some(TransportConfig::Graph(g)) = &a.transport else {
        bail!("account `{account}` does not send through Microsoft Graph");
    };
    Ok(crate::caps::transport::graph::Graph::new(graph_api(
        config,
        account,
        "transport",
        g,
        managers,
    )?))
}

/// The Graph client of `account`'s transport or mailbox (`part`), on the shared TLS
/// policy.
pub(super) fn graph_api(
    config: &Config,
    account: &str,
    part: &str,
    g: &crate::config::GraphConfig,
    managers: &TokenManagers,
) -> anyhow::Result<GraphApi> {
    let ca = g
        .ca_file
        .as_ref()
        .map(|p| std::fs::read(config.resolve(p)))
        .transpose()
        .with_context(|| format!("accounts.{account}.{part}.ca_file"))?;
    let tls = crate::net::tls_config(ca.as_deref(), crate::net::MinTls::V12)
        .map_err(anyhow::Error::msg)?;
    let http = crate::net::http_client(&tls, Duration::from_secs(g.timeout_secs))
        .map_err(anyhow::Error::msg)?;
    Ok(GraphApi::new(
        &g.graph_url,
        &g.user,
        token_source(config, account, managers)?,
        http,
        Duration::from_secs(g.max_wait_secs),
    ))
}
