//! Calls the coordinator makes on workers outside of query work: sink commits, aborts,
//! statuses, waves and seals, each to one worker or to every live one.

use crate::client;
use crate::error::{Error, Result};
use crate::protocol::{SentRequest, SinkRun, StatementAtSite};
use std::collections::BTreeMap;
use std::time::Duration;

/// How long a statement's report waits for a site's sent bytes.
const SENT_WAIT: Duration = Duration::from_secs(1);
/// The most a site may answer the coordinator's actions with (sink runs list their files).
const SITE_REPLY_LIMIT: usize = 16 << 20;
/// The most a site may answer what it did for a statement with: a few recipients and
/// reasons.
const SENT_REPLY_LIMIT: usize = 64 << 10;
use crate::security::ClusterChannels;
use shoal_planner::SiteCatalog;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct WorkerCalls {
    catalog: Arc<SiteCatalog>,
    channels: ClusterChannels,
}

impl WorkerCalls {
    pub fn new(catalog: Arc<SiteCatalog>, channels: ClusterChannels) -> Self {
        Self { catalog, channels }
    }

    /// Sends `action` with `body` to worker `site`; its reply, at most
    /// [`SITE_REPLY_LIMIT`] bytes.
    pub async fn call(&self, site: &str, action: &str, body: Vec<u8>) -> Result<Vec<u8>> {
        self.call_at_most(site, action, body, SITE_REPLY_LIMIT)
            .await
    }

    async fn call_at_most(
        &self,
        site: &str,
        action: &str,
        body: Vec<u8>,
        limit: usize,
    ) -> Result<Vec<u8>> {
        let url = self.catalog.url_of(site)?;
        let connector = self.channels.connector_for(&url).await?;
        client::action_at_most(&connector, url.as_str(), action, body, limit).await
    }

    /// What each live site did for statement `key` (see [`crate::protocol::ACTION_SENT`]):
    /// what it sent, by recipient, and why it scored on the CPU if it did against the
    /// statement's device; sites with nothing to say are left out. Best effort and bounded:
    /// a site that does not answer within a second is left out too.
    pub async fn statement_at_sites(&self, key: &str) -> BTreeMap<String, StatementAtSite> {
        let body = serde_json::to_vec(&SentRequest {
            statement: key.to_string(),
        })
        .unwrap_or_default();
        let asks = self.catalog.live_sites().into_iter().map(|(site, _)| {
            let body = body.clone();
            async move {
                let reply = tokio::time::timeout(
                    SENT_WAIT,
                    self.call_at_most(&site, crate::protocol::ACTION_SENT, body, SENT_REPLY_LIMIT),
                )
                .await;
                let said: StatementAtSite = match reply {
                    Ok(Ok(bytes)) => serde_json::from_slice::<StatementAtSite>(&bytes)
                        .unwrap_or_default()
                        .bounded(),
                    _ => StatementAtSite::default(),
                };
                (site, said)
            }
        });
        futures::future::join_all(asks)
            .await
            .into_iter()
            .filter(|(_, said)| !said.sent.is_empty() || !said.device_fallbacks.is_empty())
            .collect()
    }

    /// What statement `key` did not read, when it answered from the live sites.
    pub fn coverage_of(&self, key: &str) -> Option<shoal_planner::Coverage> {
        self.catalog.coverage_of(key)
    }

    /// The live workers' names.
    pub fn live_sites(&self) -> Vec<String> {
        self.catalog
            .live_sites()
            .into_iter()
            .map(|(site, _)| site)
            .collect()
    }

    /// Sends `action` about `run` to every live worker; their replies, in site order.
    pub async fn ask_every_worker(&self, action: &str, run: &SinkRun) -> Result<Vec<Vec<u8>>> {
        let body = serde_json::to_vec(run).map_err(|e| Error::Malformed {
            what: "sink run".into(),
            message: e.to_string(),
        })?;
        let mut replies = Vec::new();
        for (site, url) in self.catalog.live_sites() {
            let call = async {
                let connector = self.channels.connector_for(&url).await?;
                client::action_at_most(
                    &connector,
                    url.as_str(),
                    action,
                    body.clone(),
                    SITE_REPLY_LIMIT,
                )
                .await
            };
            let reply = call.await.map_err(|e| Error::SinkAction {
                action: action.to_string(),
                run_id: run.run_id.clone(),
                worker: site.clone(),
                source: Box::new(e),
            })?;
            replies.push(reply);
        }
        Ok(replies)
    }

    pub async fn on_every_worker(&self, action: &str, run: &SinkRun) -> Result<()> {
        self.ask_every_worker(action, run).await.map(|_| ())
    }
}
