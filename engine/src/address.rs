//! What a server binds (`--listen`) and what others dial (`--advertise`) are separate: a
//! site behind NAT or bound to every interface (`0.0.0.0`) is reached at another address.
//! The advertised one is what a member registers, and what its TLS certificate must name.

use crate::error::{Error, Result};
use crate::security::ServerTls;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;

/// The URL others dial: `scheme://<advertise>`, where a missing or zero port means the
/// bound one; without `advertise`, the bound address, unless it is every interface (which
/// no one can dial). With TLS, the certificate must be valid for the advertised host.
pub fn advertised_url(
    scheme: &str,
    flag_context: &str,
    advertise: Option<&str>,
    bound: SocketAddr,
    tls: Option<&ServerTls>,
) -> Result<String> {
    let bad = |message: String| Error::Listen {
        addr: format!("{flag_context} {}", advertise.unwrap_or(&bound.to_string())),
        message,
    };
    let (host, port) = match advertise {
        Some(text) => {
            // A scheme with no default port: `h:80` keeps its port.
            let parsed = url::Url::parse(&format!("shoal://{text}"))
                .map_err(|e| bad(format!("--advertise must be HOST[:PORT]: {e}")))?;
            let host = parsed
                .host_str()
                .filter(|h| !h.is_empty())
                .ok_or_else(|| bad("--advertise must be HOST[:PORT]".into()))?
                .to_string();
            if !matches!(parsed.path(), "" | "/")
                || parsed.query().is_some()
                || !parsed.username().is_empty()
            {
                return Err(bad("--advertise must be HOST[:PORT], without a path".into()));
            }
            let port = parsed.port().filter(|p| *p != 0).unwrap_or(bound.port());
            (host, port)
        }
        None if bound.ip().is_unspecified() => {
            return Err(bad(format!(
                "it binds every interface ({bound}), which no other machine can dial: give \
                 --advertise HOST:PORT, the address the others reach this one at"
            )));
        }
        None => (host_of(bound), bound.port()),
    };
    if let Some(tls) = tls {
        check_certificate_names(tls, &host)?;
    }
    Ok(format!("{scheme}://{host}:{port}"))
}

/// The host part of an address as a URL writes it (`[::1]` for IPv6).
fn host_of(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    }
}

/// The certificate in `tls.cert` (its first, the server's own) is valid for `host`: the
/// check every client makes, made at start so a wrong certificate is named before anyone
/// fails to connect.
pub fn check_certificate_names(tls: &ServerTls, host: &str) -> Result<()> {
    let refused = |message: String| {
        Error::Security(format!(
            "--tls-cert {} for the advertised host '{host}': {message}",
            tls.cert.display()
        ))
    };
    let cert = CertificateDer::pem_file_iter(&tls.cert)
        .map_err(|e| refused(e.to_string()))?
        .next()
        .ok_or_else(|| refused("no certificate in the file".into()))?
        .map_err(|e| refused(e.to_string()))?;
    let end_entity =
        webpki::EndEntityCert::try_from(&cert).map_err(|e| refused(format!("{e:?}")))?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(bare.to_string()).map_err(|e| refused(e.to_string()))?;
    end_entity
        .verify_is_valid_for_subject_name(&name)
        .map_err(|_| {
            refused(
                "the certificate does not name it (no matching subjectAltName): clients \
                 dialing it would refuse the connection"
                    .into(),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn bound(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn test_tls() -> ServerTls {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/tls");
        ServerTls {
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        }
    }

    #[test]
    fn the_bound_address_is_advertised_unless_it_is_every_interface() {
        let url = advertised_url("http", "worker", None, bound("127.0.0.1:7000"), None).unwrap();
        assert_eq!(url, "http://127.0.0.1:7000");
        let err = advertised_url("http", "worker", None, bound("0.0.0.0:7000"), None).unwrap_err();
        assert!(err.to_string().contains("--advertise"), "{err}");
    }

    #[test]
    fn an_advertised_host_takes_the_bound_port_unless_it_gives_one() {
        let any = bound("0.0.0.0:7000");
        let url = advertised_url("https", "w", Some("site-1.example"), any, None).unwrap();
        assert_eq!(url, "https://site-1.example:7000");
        let url = advertised_url("https", "w", Some("10.0.0.2:443"), any, None).unwrap();
        assert_eq!(url, "https://10.0.0.2:443");
        let url = advertised_url("http", "w", Some("[fd00::2]:80"), any, None).unwrap();
        assert_eq!(url, "http://[fd00::2]:80");
        for bad in ["", "a/b", "h:p", "http://x"] {
            assert!(
                advertised_url("http", "w", Some(bad), any, None).is_err(),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn the_certificate_must_name_the_advertised_host() {
        let tls = test_tls();
        let any = bound("0.0.0.0:7000");
        // The test certificate names localhost and 127.0.0.1.
        advertised_url("https", "w", Some("localhost"), any, Some(&tls)).unwrap();
        advertised_url("https", "w", Some("127.0.0.1"), any, Some(&tls)).unwrap();
        let err = advertised_url("https", "w", Some("10.9.9.9"), any, Some(&tls)).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("10.9.9.9") && message.contains("server.pem"),
            "{message}"
        );
    }
}
