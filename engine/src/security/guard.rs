//! A gRPC service wrapper that checks credentials before any handler runs, so no Flight
//! method can be reached unauthenticated by forgetting a check in it.

use super::{Admission, Authenticator};
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::NamedService;

const HANDSHAKE_PATH: &str = "/arrow.flight.protocol.FlightService/Handshake";

#[derive(Debug, Clone, Copy)]
enum Gate {
    /// The coordinator: clients (tokens or handshake) and cluster members.
    Coordinator,
    /// A worker: only holders of the cluster secret.
    Worker,
}

#[derive(Debug, Clone)]
pub struct Guarded<S> {
    inner: S,
    auth: Arc<Authenticator>,
    gate: Gate,
}

impl<S> Guarded<S> {
    pub fn coordinator(inner: S, auth: Arc<Authenticator>) -> Self {
        Self {
            inner,
            auth,
            gate: Gate::Coordinator,
        }
    }

    pub fn worker(inner: S, auth: Arc<Authenticator>) -> Self {
        Self {
            inner,
            auth,
            gate: Gate::Worker,
        }
    }

    fn admit(&self, request: &http::Request<Body>) -> Result<Admission, tonic::Status> {
        let header = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match self.gate {
            Gate::Coordinator => self
                .auth
                .admit(header, request.uri().path() == HANDSHAKE_PATH),
            Gate::Worker => self.auth.admit_cluster(header),
        }
    }
}

impl<S> Service<http::Request<Body>> for Guarded<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        match self.admit(&request) {
            Ok(admission) => {
                request.extensions_mut().insert(admission);
                Box::pin(self.inner.call(request))
            }
            Err(status) => {
                tracing::debug!(path = request.uri().path(), "refused: {}", status.message());
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

impl<S: NamedService> NamedService for Guarded<S> {
    const NAME: &'static str = S::NAME;
}
