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
            .connect_timeout(CONNECT_TIMEOUT);
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

/// datafusion-distributed's channels between cluster members, carrying the cluster secret
/// and trusting the cluster's CA. Channels are kept per URL and reused across queries.
#[derive(Debug, Clone, Default)]
pub struct ClusterChannels {
    connector: Connector,
    channels: Arc<Mutex<HashMap<String, Authorized>>>,
}

impl ClusterChannels {
    pub fn new(connector: Connector) -> Self {
        Self {
            connector,
            channels: Arc::default(),
        }
    }

    pub fn connector(&self) -> &Connector {
        &self.connector
    }

    async fn channel(&self, url: &str) -> Result<Authorized> {
        if let Some(channel) = self.channels.lock().get(url) {
            return Ok(channel.clone());
        }
        // Failed connections are not kept: the next query tries again.
        let channel = self.connector.connect_authorized(url).await?;
        self.channels
            .lock()
            .insert(url.to_string(), channel.clone());
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
            .channel(url.as_str())
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
    async fn tls_without_a_ca_is_refused_with_the_fix() {
        let err = Connector::default()
            .connect("grpc+tls://127.0.0.1:1")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("--tls-ca"), "{err}");
    }
}
