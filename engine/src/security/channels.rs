//! Outgoing connections: to the coordinator (clients, workers' actions) and between
//! cluster members (datafusion-distributed's worker channels), with the right credentials
//! and TLS trust attached to every call.

use crate::error::{Error, Result};
use async_trait::async_trait;
use datafusion::error::DataFusionError;
use datafusion_distributed::{ChannelResolver, WorkerChannel, grpc};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::body::Body;
use tonic::codegen::{Service, http};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// Bound on establishing a connection: a dead address fails fast with its name.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Time between HTTP/2 pings on an open connection, and how long an answer may take before
/// the connection counts as dead.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
pub const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens channels with a bearer token and TLS trust.
#[derive(Debug, Clone, Default)]
pub struct Connector {
    token: Option<String>,
    /// `Bearer <token>`, marked sensitive (kept out of logs).
    bearer: Option<http::HeaderValue>,
    tls: Option<ClientTlsConfig>,
}

impl Connector {
    pub fn new(token: Option<&str>, tls: Option<ClientTlsConfig>) -> Result<Self> {
        let bearer = token
            .map(|t| {
                let mut value =
                    http::HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| {
                        Error::Security("the token has characters not allowed in a header".into())
                    })?;
                value.set_sensitive(true);
                Ok::<_, Error>(value)
            })
            .transpose()?;
        Ok(Self {
            token: token.map(str::to_string),
            bearer,
            tls,
        })
    }

    /// The same trust, presenting `token` instead.
    pub fn with_token(&self, token: Option<&str>) -> Result<Self> {
        Self::new(token, self.tls.clone())
    }

    /// The token as `FlightSqlServiceClient::set_token` wants it.
    pub fn token(&self) -> Option<String> {
        self.token.clone()
    }

    /// Connects to `url` (`http://`, `https://`, `grpc://`, `grpc+tls://`).
    pub async fn connect(&self, url: &str) -> Result<Channel> {
        let unreachable = |message: String| Error::Unreachable {
            url: url.to_string(),
            message,
        };
        let endpoint = self.endpoint(url).map_err(|e| unreachable(e.to_string()))?;
        endpoint
            .connect()
            .await
            .map_err(|e| unreachable(transport_message(&e)))
    }

    /// A connection that attaches the bearer token to every call.
    pub async fn connect_authorized(&self, url: &str) -> Result<Authorized> {
        Ok(Authorized {
            channel: self.connect(url).await?,
            bearer: self.bearer.clone(),
        })
    }

    fn endpoint(&self, url: &str) -> Result<Endpoint> {
        let url = http_url(url);
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| Error::Security(format!("bad URL {url}: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            // A peer whose link is cut sends no reset: HTTP/2 pings find the dead
            // connection, so the next call dials again instead of waiting on it.
            .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        if url.starts_with("https://") {
            let tls = self.tls.clone().ok_or_else(|| {
                Error::Security(format!(
                    "{url} uses TLS: give the CA certificate that signed it (--tls-ca)"
                ))
            })?;
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| Error::Security(format!("TLS for {url}: {e}")))?;
        }
        Ok(endpoint)
    }
}

/// Flight clients say `grpc://` and `grpc+tls://`; tonic wants `http(s)://`.
pub fn http_url(url: &str) -> String {
    if let Some(rest) = url.strip_prefix("grpc+tls://") {
        format!("https://{rest}")
    } else if let Some(rest) = url.strip_prefix("grpc+tcp://") {
        format!("http://{rest}")
    } else if let Some(rest) = url.strip_prefix("grpc://") {
        format!("http://{rest}")
    } else {
        url.to_string()
    }
}

/// tonic's transport errors hide the cause (refused, TLS failure) in their source chain.
fn transport_message(error: &tonic::transport::Error) -> String {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// A channel that sends `authorization: Bearer <token>` with every request.
#[derive(Debug, Clone)]
pub struct Authorized {
    channel: Channel,
    bearer: Option<http::HeaderValue>,
}

impl Service<http::Request<Body>> for Authorized {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future = <Channel as Service<http::Request<Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::<http::Request<Body>>::poll_ready(&mut self.channel, cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        if let Some(bearer) = &self.bearer {
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, bearer.clone());
        }
        self.channel.call(request)
    }
}

/// The credential to present to the cluster member at a URL: each site accepts only
/// credentials made for it (see [`super::identity`]).
#[async_trait]
pub trait ClusterPasses: Send + Sync + std::fmt::Debug {
    /// None: present nothing (an open cluster).
    async fn pass_for(&self, url: &url::Url) -> Result<Option<String>>;
}

/// datafusion-distributed's channels between cluster members, each presenting the
/// credential made for the member it reaches, and trusting the cluster's CA. Channels are
/// kept per URL (and credential) and reused across queries.
#[derive(Debug, Clone)]
pub struct ClusterChannels {
    connector: Connector,
    passes: Arc<dyn ClusterPasses>,
    channels: Arc<Mutex<HashMap<String, PassedChannel>>>,
}

/// A channel and the credential it presents.
type PassedChannel = (Option<String>, Authorized);

/// No credentials: an open cluster.
#[derive(Debug)]
struct NoPasses;

#[async_trait]
impl ClusterPasses for NoPasses {
    async fn pass_for(&self, _url: &url::Url) -> Result<Option<String>> {
        Ok(None)
    }
}

impl Default for ClusterChannels {
    fn default() -> Self {
        Self::new(Connector::default(), Arc::new(NoPasses))
    }
}

impl ClusterChannels {
    /// `connector` gives the TLS trust; `passes` the credential for each member.
    pub fn new(connector: Connector, passes: Arc<dyn ClusterPasses>) -> Self {
        Self {
            connector,
            passes,
            channels: Arc::default(),
        }
    }

    /// A connector presenting the credential for the member at `url`.
    pub async fn connector_for(&self, url: &url::Url) -> Result<Connector> {
        self.connector
            .with_token(self.passes.pass_for(url).await?.as_deref())
    }

    /// Dials `url` (TCP and, for `https://`, the TLS handshake against the cluster's CA) without
    /// calling anything: whether a member that registers at it can be reached there.
    /// Bounded as a whole: the connect timeout covers TCP only, and a registering site
    /// could name an address that accepts connections and never finishes a handshake.
    pub async fn reach(&self, url: &str) -> Result<()> {
        self.reach_within(url, 2 * CONNECT_TIMEOUT).await
    }

    async fn reach_within(&self, url: &str, limit: Duration) -> Result<()> {
        tokio::time::timeout(limit, self.connector.connect(url))
            .await
            .map_err(|_| Error::Unreachable {
                url: url.to_string(),
                message: format!("no TLS or HTTP/2 handshake within {limit:?}"),
            })?
            .map(|_| ())
    }

    async fn channel(&self, url: &url::Url) -> Result<Authorized> {
        let pass = self.passes.pass_for(url).await?;
        if let Some((cached_pass, channel)) = self.channels.lock().get(url.as_str())
            && *cached_pass == pass
        {
            return Ok(channel.clone());
        }
        // Failed connections are not kept: the next query tries again.
        let channel = self
            .connector
            .with_token(pass.as_deref())?
            .connect_authorized(url.as_str())
            .await?;
        self.channels
            .lock()
            .insert(url.to_string(), (pass, channel.clone()));
        Ok(channel)
    }
}

#[async_trait]
impl ChannelResolver for ClusterChannels {
    async fn get_worker_client_for_url(
        &self,
        url: &url::Url,
    ) -> Result<Box<dyn WorkerChannel>, DataFusionError> {
        let channel = self
            .channel(url)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        Ok(grpc::create_worker_client(grpc::BoxCloneSyncChannel::new(
            channel,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flight_schemes_map_to_http() {
        assert_eq!(http_url("grpc://h:1"), "http://h:1");
        assert_eq!(http_url("grpc+tls://h:1"), "https://h:1");
        assert_eq!(http_url("http://h:1"), "http://h:1");
    }

    #[tokio::test]
    async fn an_address_that_accepts_but_never_answers_is_unreachable_in_bounded_time() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepts, reads nothing, answers nothing: the TLS handshake never completes.
        let _held = crate::tasks::spawn_owned(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let ca = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/tls/ca.pem");
        let connector =
            Connector::new(None, Some(crate::security::client_tls(&ca).unwrap())).unwrap();
        let channels = ClusterChannels::new(connector, Arc::new(NoPasses));
        let started = std::time::Instant::now();
        let err = channels
            .reach_within(&format!("https://{addr}"), Duration::from_millis(500))
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(3), "{err}");
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }

    #[tokio::test]
    async fn tls_without_a_ca_is_refused_with_the_fix() {
        let err = Connector::default()
            .connect("grpc+tls://127.0.0.1:1")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("--tls-ca"), "{err}");
    }
}
