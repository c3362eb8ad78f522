//! Site identities: every site holds its own secret, and every credential that crosses the
//! cluster is derived from the secret of the site it concerns, so that a site's secret
//! speaks for that site only.
//!
//! | who → whom             | bearer                  | MAC key           | MAC message                   |
//! |------------------------|-------------------------|-------------------|-------------------------------|
//! | site S → coordinator   | `site:S:<mac>`          | S's secret        | `shoal/v1 site S`             |
//! | coordinator → site S   | `coordinator:<mac>`     | S's secret        | `shoal/v1 coordinator to S`   |
//! | site P → site S        | `peer:P:<mac>`          | S's secret        | `shoal/v1 peer P to S`        |
//!
//! The coordinator knows each site's secret; a site knows only its own. So site P can
//! prove to the coordinator that it is P (and nobody else), and cannot make the
//! credential that site S accepts plans with (it needs S's secret): a stolen secret runs
//! plans nowhere but on its own site. The peer credential P presents to S is issued to P
//! by the coordinator at registration and on each heartbeat, and lets P only fetch the
//! outputs of tasks S already checked against its policy, never send S a plan.
//!
//! MACs are HMAC-SHA-256 from `ring` (already the TLS provider's crypto; its `verify` is
//! constant-time), not a hand-rolled construction.

use super::Principal;
use crate::error::{Error, Result};
use ring::hmac;
use std::collections::HashMap;

/// Shortest secret accepted anywhere (a site's, a shared or an enrollment key).
pub const MIN_SECRET_CHARS: usize = 16;

/// One secret, as an HMAC key.
#[derive(Clone)]
pub struct SiteSecret(hmac::Key);

impl std::fmt::Debug for SiteSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SiteSecret(..)")
    }
}

fn site_message(site: &str) -> String {
    format!("shoal/v1 site {site}")
}

fn coordinator_message(site: &str) -> String {
    format!("shoal/v1 coordinator to {site}")
}

fn peer_message(from: &str, to: &str) -> String {
    format!("shoal/v1 peer {from} to {to}")
}

fn enrollment_message(site: &str) -> String {
    format!("shoal/v1 enroll {site}")
}

impl SiteSecret {
    pub fn new(secret: &str) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()))
    }

    fn mac(&self, message: &str) -> String {
        hex::encode(hmac::sign(&self.0, message.as_bytes()).as_ref())
    }

    fn verify(&self, message: &str, mac_hex: &str) -> bool {
        hex::decode(mac_hex)
            .is_ok_and(|mac| hmac::verify(&self.0, message.as_bytes(), &mac).is_ok())
    }

    /// What site `site` presents to the coordinator.
    pub fn site_credential(&self, site: &str) -> String {
        format!("site:{site}:{}", self.mac(&site_message(site)))
    }

    /// What the coordinator presents to site `site` (whose secret this is).
    pub fn coordinator_credential(&self, site: &str) -> String {
        format!("coordinator:{}", self.mac(&coordinator_message(site)))
    }

    /// What site `from` presents to site `to` (whose secret this is).
    pub fn peer_credential(&self, from: &str, to: &str) -> String {
        format!("peer:{from}:{}", self.mac(&peer_message(from, to)))
    }

    /// Who a bearer token presented at site `me` (whose secret this is) comes from:
    /// the coordinator, or a peer site.
    pub fn caller_at_site(&self, me: &str, token: &str) -> Option<Principal> {
        if let Some(mac) = token.strip_prefix("coordinator:") {
            return self
                .verify(&coordinator_message(me), mac)
                .then_some(Principal::Coordinator);
        }
        let (from, mac) = token.strip_prefix("peer:")?.split_once(':')?;
        (from != me && self.verify(&peer_message(from, me), mac)).then(|| Principal::Peer {
            site: from.to_string(),
        })
    }
}

/// The coordinator's knowledge of the sites' secrets.
#[derive(Debug, Clone, Default)]
pub struct SiteKeys {
    /// One secret for every site (`cluster_secret`): one trust domain, in which any holder
    /// may act as any site.
    shared: Option<SiteSecret>,
    /// The enrollment key (`site_key`): site S's secret is `HMAC(site_key, "enroll S")`,
    /// which `shoal enroll` prints for S's operator.
    enrollment: Option<SiteSecret>,
    /// Secrets given one by one (`[[sites]]`), e.g. chosen by the sites themselves.
    listed: HashMap<String, SiteSecret>,
}

impl SiteKeys {
    pub fn new(
        shared: Option<&str>,
        enrollment: Option<&str>,
        listed: &[(String, String)],
    ) -> Result<Self> {
        if shared.is_some() && (enrollment.is_some() || !listed.is_empty()) {
            return Err(Error::Security(
                "give either a cluster_secret shared by every site, or per-site secrets \
                 (site_key and/or [[sites]]), not both: a shared secret would let any site \
                 act as the others"
                    .into(),
            ));
        }
        Ok(Self {
            shared: shared.map(SiteSecret::new),
            enrollment: enrollment.map(SiteSecret::new),
            listed: listed
                .iter()
                .map(|(site, secret)| (site.clone(), SiteSecret::new(secret)))
                .collect(),
        })
    }

    /// Whether any site credential is configured (without one, the cluster is open).
    pub fn configured(&self) -> bool {
        self.shared.is_some() || self.enrollment.is_some() || !self.listed.is_empty()
    }

    /// Whether each site has a secret of its own.
    pub fn per_site(&self) -> bool {
        self.shared.is_none() && self.configured()
    }

    /// Site `site`'s secret, if it may join.
    pub fn secret_of(&self, site: &str) -> Option<SiteSecret> {
        if let Some(secret) = self.listed.get(site) {
            return Some(secret.clone());
        }
        if let Some(key) = &self.enrollment {
            return Some(SiteSecret::new(&enrolled_secret(key, site)));
        }
        self.shared.clone()
    }

    /// The site a `site:S:<mac>` bearer token proves, if it does.
    pub fn site_of(&self, token: &str) -> Option<String> {
        let (site, mac) = token.strip_prefix("site:")?.split_once(':')?;
        let secret = self.secret_of(site)?;
        secret
            .verify(&site_message(site), mac)
            .then(|| site.to_string())
    }
}

fn enrolled_secret(key: &SiteSecret, site: &str) -> String {
    key.mac(&enrollment_message(site))
}

/// Site `site`'s secret under enrollment key `site_key` (what `shoal enroll` prints).
pub fn enroll(site_key: &str, site: &str) -> Result<String> {
    shoal_planner::catalog::validate_site_name(site)?;
    Ok(enrolled_secret(&SiteSecret::new(site_key), site))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn per_site() -> SiteKeys {
        SiteKeys::new(
            None,
            Some("enrollment-key-0123456789"),
            &[("site-9".into(), "site-nine-own-secret".into())],
        )
        .unwrap()
    }

    #[test]
    fn a_site_proves_itself_and_nobody_else() {
        let keys = per_site();
        let one = SiteSecret::new(&enroll("enrollment-key-0123456789", "site-1").unwrap());
        let nine = SiteSecret::new("site-nine-own-secret");
        assert_eq!(
            keys.site_of(&one.site_credential("site-1")).as_deref(),
            Some("site-1")
        );
        assert_eq!(
            keys.site_of(&nine.site_credential("site-9")).as_deref(),
            Some("site-9")
        );
        // site-1's secret cannot speak for site-2, nor for a listed site.
        assert_eq!(keys.site_of(&one.site_credential("site-2")), None);
        assert_eq!(keys.site_of(&one.site_credential("site-9")), None);
        // A credential with its name swapped fails.
        let forged = one.site_credential("site-1").replace("site-1", "site-2");
        assert_eq!(keys.site_of(&forged), None);
        assert_eq!(keys.site_of("site:site-1:zz"), None);
        assert!(keys.per_site());
    }

    #[test]
    fn a_site_accepts_plans_only_from_the_coordinator_and_fetches_from_issued_peers() {
        let keys = per_site();
        let one = keys.secret_of("site-1").unwrap();
        let two = keys.secret_of("site-2").unwrap();
        // The coordinator's credential for site-1 (made with site-1's secret).
        let to_one = one.coordinator_credential("site-1");
        assert_eq!(
            one.caller_at_site("site-1", &to_one),
            Some(Principal::Coordinator)
        );
        // Site-2, with only its own secret, cannot make it.
        assert_eq!(
            one.caller_at_site("site-1", &two.coordinator_credential("site-1")),
            None
        );
        // The coordinator's credential for site-2 does not open site-1.
        assert_eq!(
            one.caller_at_site("site-1", &two.coordinator_credential("site-2")),
            None
        );
        // The peer credential the coordinator issues site-2 for site-1.
        let pass = one.peer_credential("site-2", "site-1");
        assert_eq!(
            one.caller_at_site("site-1", &pass),
            Some(Principal::Peer {
                site: "site-2".into()
            })
        );
        // ... names site-2 only, and opens site-1 only.
        assert_eq!(
            one.caller_at_site("site-1", &pass.replace("site-2", "site-3")),
            None
        );
        assert_eq!(two.caller_at_site("site-2", &pass), None);
        assert_eq!(one.caller_at_site("site-1", "Bearer nonsense"), None);
    }

    #[test]
    fn a_shared_secret_cannot_be_mixed_with_per_site_ones() {
        let err = SiteKeys::new(Some("shared-secret-0123456789"), Some("k"), &[]).unwrap_err();
        assert!(err.to_string().contains("not both"), "{err}");
        let shared = SiteKeys::new(Some("shared-secret-0123456789"), None, &[]).unwrap();
        assert!(shared.configured() && !shared.per_site());
        assert!(!SiteKeys::default().configured());
    }
}
