//! The settings page's Test and Validate and Save send their mail from the account's
//! data center ([`crate::cluster::probes`]): from this process when it is a node of that
//! data center, else from a live node there, which gets the form's settings with their
//! secrets sealed by the store key that every node shares.

use base64::Engine as _;

use super::Web;
use super::form::{self, PageSecrets, PageSettings};
use crate::caps::transport::smtp::test_mail::Report;
use crate::cluster::probes::{self, Route};
use crate::config::Config;
use crate::store::ProbeJob;

/// What the sealed secrets of a probe are bound to.
fn context(account: &str) -> String {
    format!("probe/{account}")
}

impl Web {
    /// Sends a test mail to `to` with the form's settings, unsaved, from the account's
    /// data center.
    pub(super) async fn test_mail(
        &self,
        name: &str,
        checked: &form::Checked,
        to: &str,
    ) -> Result<Report, String> {
        let text = |e: anyhow::Error| format!("{e:#}");
        let store = self.app.store();
        match probes::route(store, &self.node_data_center, &checked.settings.data_center)
            .map_err(text)?
        {
            Route::Here => {
                let config = self
                    .with_account(name, &checked.settings, &checked.secrets)
                    .map_err(text)?;
                let mut report = self.app.test_mail(&config, name, to).await.map_err(text)?;
                report.node = Some(self.node_name.clone());
                report.data_center = Some(self.node_data_center.clone());
                Ok(report)
            }
            Route::There(dc) => {
                let settings =
                    serde_json::to_string(&checked.settings).map_err(|e| text(e.into()))?;
                let secrets =
                    serde_json::to_string(&checked.secrets).map_err(|e| text(e.into()))?;
                let sealed = self
                    .app
                    .sealer()
                    .and_then(|s| Ok(s.seal(&context(name), &secrets)?))
                    .map_err(text)?;
                let sealed = base64::engine::general_purpose::STANDARD.encode(sealed);
                probes::run_there(store, &dc, name, to, Some((&settings, &sealed)))
                    .await
                    .map_err(text)
            }
        }
    }

    /// Runs a probe that a process of another data center asked of this node: with the
    /// form's settings it carries, or with the account as this node knows it.
    pub async fn run_probe(&self, job: ProbeJob) -> anyhow::Result<Report> {
        let config = match (&job.settings, &job.secrets) {
            (Some(settings), Some(sealed)) => {
                let settings: PageSettings = serde_json::from_str(settings)?;
                let sealed = base64::engine::general_purpose::STANDARD.decode(sealed)?;
                let secrets =
                    self.app
                        .sealer()?
                        .open(&job.account, &context(&job.account), &sealed)?;
                let secrets: PageSecrets = serde_json::from_str(&secrets)?;
                self.with_account(&job.account, &settings, &secrets)?
            }
            (Some(_), None) => anyhow::bail!(
                "the test's secrets were already handed to another node; run the test again"
            ),
            _ => {
                let mut config = Config::load(&self.config_path)?;
                super::accounts::add(&self.app, &mut config)?;
                config
            }
        };
        self.app
            .test_mail(&config, &job.account, &job.recipient)
            .await
    }
}
