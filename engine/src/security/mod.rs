//! Who may talk to whom: client authentication at the coordinator (bearer tokens and the
//! Basic-to-Bearer handshake), site identities (each site's own secret; plans only from the
//! coordinator, task fetches only from issued peers), TLS, and the refusal to expose an
//! unauthenticated endpoint beyond loopback.

mod auth;
mod channels;
mod config;
mod guard;
pub mod identity;
mod passes;
mod tls;

pub use auth::{Admission, Authenticator, Principal, Role};
pub use channels::{
    ClusterChannels, ClusterPasses, Connector, KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT,
};
pub use config::{AuthFile, CLUSTER_SECRET_ENV, TOKENS_ENV, load_auth_file, read_secret_file};
pub use guard::{Guarded, SiteGate, current_caller};
pub use identity::{SiteKeys, SiteSecret};
pub use passes::{CoordinatorPasses, PassSource, PeerPass, PeerPasses};
pub use tls::{ServerTls, client_tls, server_tls};

use crate::error::{Error, Result};
use std::net::SocketAddr;

/// What a listening endpoint demands; checked before it serves anything.
pub fn check_exposure(
    role: &str,
    addr: SocketAddr,
    authenticated: bool,
    insecure: bool,
) -> Result<()> {
    if addr.ip().is_loopback() || authenticated {
        return Ok(());
    }
    if insecure {
        tracing::warn!(
            "{role} listens on {addr} without authentication (--insecure): anyone who can reach it can use it"
        );
        return Ok(());
    }
    let how = if role == "coordinator" {
        "configure client tokens (--auth-file or SHOAL_TOKENS) and the sites' secrets"
    } else {
        "give the site's secret (--site-secret-file or SHOAL_CLUSTER_SECRET)"
    };
    Err(Error::Exposed {
        role: role.to_string(),
        addr: addr.to_string(),
        how: how.to_string(),
    })
}

/// A coordinator beyond loopback that authenticates clients must also know its sites'
/// secrets: without them, registering and heartbeating are open to any client, which could
/// then add a site of its own that the coordinator dials and sends plans to.
pub fn check_cluster_secret(addr: SocketAddr, has_secret: bool, insecure: bool) -> Result<()> {
    if addr.ip().is_loopback() || has_secret || insecure {
        return Ok(());
    }
    Err(Error::Exposed {
        role: "coordinator".into(),
        addr: addr.to_string(),
        how: "client tokens alone let any client register a fake site: give the sites' \
              secrets too (site_key or [[sites]] in --auth-file; or one cluster_secret / \
              SHOAL_CLUSTER_SECRET shared by every site)"
            .into(),
    })
}

/// A fresh random secret (256 bits, hex): issued bearer tokens and the embedded cluster's
/// secret.
pub fn random_secret() -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| Error::Security(format!("no randomness: {e}")))?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_open_but_other_addresses_need_auth_or_insecure() {
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let public: SocketAddr = "0.0.0.0:5000".parse().unwrap();
        assert!(check_exposure("coordinator", local, false, false).is_ok());
        let refused = check_exposure("coordinator", public, false, false).unwrap_err();
        assert!(refused.to_string().contains("--insecure"), "{refused}");
        assert!(check_exposure("coordinator", public, true, false).is_ok());
        assert!(check_exposure("worker", public, false, true).is_ok());
        assert!(check_cluster_secret(public, false, false).is_err());
        assert!(check_cluster_secret(public, true, false).is_ok());
        assert!(check_cluster_secret(local, false, false).is_ok());
    }

    #[test]
    fn secrets_are_random() {
        assert_ne!(random_secret().unwrap(), random_secret().unwrap());
        assert_eq!(random_secret().unwrap().len(), 64);
    }
}
