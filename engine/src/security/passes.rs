//! Which credential each cluster member presents to each other one: the coordinator a
//! per-site credential made with that site's secret, a site the peer passes the
//! coordinator issued it (see [`super::identity`]).

use super::identity::SiteKeys;
use super::{ClusterPasses, Connector};
use crate::error::{Error, Result};
use crate::protocol::{ACTION_PEERS, Peers};
use async_trait::async_trait;
use parking_lot::RwLock;
use shoal_planner::SiteCatalog;
use std::collections::HashMap;
use std::sync::Arc;

/// A credential one site may present to another, issued by the coordinator.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PeerPass {
    /// The site it opens.
    pub site: String,
    /// Where that site serves.
    pub url: String,
    /// `peer:<holder>:<mac>`, made with the opened site's secret.
    pub token: String,
}

/// The coordinator's side: it reaches site S with S's coordinator credential.
#[derive(Debug)]
pub struct CoordinatorPasses {
    catalog: Arc<SiteCatalog>,
    keys: SiteKeys,
}

impl CoordinatorPasses {
    pub fn new(catalog: Arc<SiteCatalog>, keys: SiteKeys) -> Self {
        Self { catalog, keys }
    }

    /// The passes site `holder` gets for every other registered site.
    pub fn issue(&self, holder: &str) -> Vec<PeerPass> {
        if !self.keys.configured() {
            return Vec::new();
        }
        self.catalog
            .sites()
            .into_iter()
            .filter(|(site, ..)| site != holder)
            .filter_map(|(site, url, ..)| {
                let secret = self.keys.secret_of(&site)?;
                Some(PeerPass {
                    token: secret.peer_credential(holder, &site),
                    site,
                    url: url.to_string(),
                })
            })
            .collect()
    }
}

#[async_trait]
impl ClusterPasses for CoordinatorPasses {
    async fn pass_for(&self, url: &url::Url) -> Result<Option<String>> {
        if !self.keys.configured() {
            return Ok(None);
        }
        let site = self.catalog.site_at(url).ok_or_else(|| {
            Error::Security(format!(
                "no registered site serves at {url}: no credential for it"
            ))
        })?;
        let secret = self.keys.secret_of(&site).ok_or_else(|| {
            Error::Security(format!("site '{site}' has no secret at this coordinator"))
        })?;
        Ok(Some(secret.coordinator_credential(&site)))
    }
}

/// A site's side: the passes the coordinator issued it, by the URL they open. They come
/// with the registration and each heartbeat reply; a site that joined since is asked for
/// at once (a statement may reach it before the next heartbeat).
#[derive(Debug)]
pub struct PeerPasses {
    /// None on an open site (no secret): it presents nothing.
    coordinator: Option<PassSource>,
    by_url: RwLock<HashMap<String, String>>,
}

/// Where a site asks for its passes.
#[derive(Debug)]
pub struct PassSource {
    pub site: String,
    pub coordinator_url: String,
    pub connector: Connector,
}

impl PeerPasses {
    pub fn new(coordinator: Option<PassSource>) -> Self {
        Self {
            coordinator,
            by_url: RwLock::default(),
        }
    }

    fn get(&self, url: &url::Url) -> Option<String> {
        self.by_url.read().get(url.as_str()).cloned()
    }

    async fn refresh(&self, source: &PassSource) -> Result<()> {
        let body = serde_json::to_vec(&Peers {
            name: source.site.clone(),
        })
        .map_err(|e| Error::Security(e.to_string()))?;
        let reply = crate::client::action(
            &source.connector,
            &source.coordinator_url,
            ACTION_PEERS,
            body,
        )
        .await?;
        let passes: Vec<PeerPass> =
            serde_json::from_slice(&reply).map_err(|e| Error::Malformed {
                what: "peer passes".into(),
                message: e.to_string(),
            })?;
        self.set(passes);
        Ok(())
    }

    /// Replaces the passes with the coordinator's latest issue.
    pub fn set(&self, passes: Vec<PeerPass>) {
        let by_url = passes
            .into_iter()
            .filter_map(|pass| {
                let url = url::Url::parse(&pass.url).ok()?;
                Some((url.to_string(), pass.token))
            })
            .collect();
        *self.by_url.write() = by_url;
    }
}

#[async_trait]
impl ClusterPasses for PeerPasses {
    async fn pass_for(&self, url: &url::Url) -> Result<Option<String>> {
        let Some(source) = &self.coordinator else {
            return Ok(None);
        };
        if let Some(token) = self.get(url) {
            return Ok(Some(token));
        }
        self.refresh(source).await?;
        self.get(url).map(Some).ok_or_else(|| {
            Error::Security(format!(
                "site '{}' has no pass for {url}: the coordinator knows no site there",
                source.site
            ))
        })
    }
}
