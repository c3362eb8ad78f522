//! TLS configuration from PEM files (tonic on rustls). shoal reads no system trust store:
//! a client of a TLS endpoint is given the CA that signed it.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// A server's certificate chain and private key, both PEM.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Security(format!("{what} {}: {e}", path.display())))
}

pub fn server_tls(tls: &ServerTls) -> Result<ServerTlsConfig> {
    let cert = read(&tls.cert, "--tls-cert")?;
    let key = read(&tls.key, "--tls-key")?;
    Ok(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))
}

/// Trust for `https://` / `grpc+tls://` endpoints: the CA certificate (PEM) at `ca`.
pub fn client_tls(ca: &Path) -> Result<ClientTlsConfig> {
    let pem = read(ca, "--tls-ca")?;
    Ok(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
}
