//! A gRPC service wrapper that checks credentials before any handler runs, so no Flight
//! method can be reached unauthenticated by forgetting a check in it.

use super::identity::SiteSecret;
use super::{Admission, Authenticator, Principal};
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::NamedService;

const HANDSHAKE_PATH: &str = "/arrow.flight.protocol.FlightService/Handshake";
const DO_ACTION_PATH: &str = "/arrow.flight.protocol.FlightService/DoAction";
/// What a peer site may call on a site: fetch the output of a task the coordinator set
/// there (and ask its version).
const PEER_PATHS: [&str; 2] = [
    "/worker.WorkerService/ExecuteTask",
    "/worker.WorkerService/GetWorkerInfo",
];

tokio::task_local! {
    /// Who the request being handled comes from (at a site: `coordinator` or a peer site's
    /// name), for the audit log's "sent to".
    static CALLER: String;
}

/// The caller of the request whose handler is running, if a site's gate admitted one.
pub fn current_caller() -> Option<String> {
    CALLER.try_with(Clone::clone).ok()
}

/// What a site demands of its callers.
#[derive(Debug)]
pub struct SiteGate {
    site: String,
    /// None: an open site (loopback, no secret).
    secret: Option<SiteSecret>,
}

impl SiteGate {
    pub fn new(site: &str, secret: Option<SiteSecret>) -> Self {
        Self {
            site: site.to_string(),
            secret,
        }
    }

    /// The coordinator may call anything; a peer site only fetches task outputs; anyone
    /// else is refused.
    fn admit(&self, authorization: Option<&str>, path: &str) -> Result<Admission, tonic::Status> {
        let admitted = |principal| {
            Ok(Admission {
                principal,
                issued_token: None,
            })
        };
        let Some(secret) = &self.secret else {
            return admitted(Principal::Open);
        };
        let token = authorization.and_then(|h| {
            let (scheme, token) = h.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
        match token.and_then(|t| secret.caller_at_site(&self.site, t)) {
            Some(Principal::Peer { site }) if !PEER_PATHS.contains(&path) => {
                Err(tonic::Status::permission_denied(format!(
                    "site '{}' accepts plans and actions only from its coordinator; site \
                     '{site}' may only fetch the outputs of tasks the coordinator set here",
                    self.site
                )))
            }
            Some(principal) => admitted(principal),
            None => Err(tonic::Status::unauthenticated(format!(
                "site '{}' accepts plans only from its coordinator and task fetches only from \
                 its peers (credential missing, or not made for this site)",
                self.site
            ))),
        }
    }
}

#[derive(Debug, Clone)]
enum Gate {
    /// The coordinator: clients (tokens or handshake) and its sites.
    Coordinator(Arc<Authenticator>),
    /// A site: its coordinator, and its peers for task outputs.
    Site(Arc<SiteGate>),
}

#[derive(Debug, Clone)]
pub struct Guarded<S> {
    inner: S,
    gate: Gate,
}

impl<S> Guarded<S> {
    pub fn coordinator(inner: S, auth: Arc<Authenticator>) -> Self {
        Self {
            inner,
            gate: Gate::Coordinator(auth),
        }
    }

    pub fn site(inner: S, gate: Arc<SiteGate>) -> Self {
        Self {
            inner,
            gate: Gate::Site(gate),
        }
    }

    fn admit(&self, request: &http::Request<Body>) -> Result<Admission, tonic::Status> {
        let header = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let path = request.uri().path();
        match &self.gate {
            Gate::Coordinator(auth) => {
                let admission = auth.admit(header, path == HANDSHAKE_PATH)?;
                // A site's credential joins the cluster; it does not run statements.
                if matches!(admission.principal, Principal::Site { .. }) && path != DO_ACTION_PATH {
                    return Err(tonic::Status::permission_denied(
                        "a site's credential may only register, heartbeat, leave and fetch \
                         models; statements need a client's credential",
                    ));
                }
                Ok(admission)
            }
            Gate::Site(gate) => gate.admit(header, path),
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
                let caller = match &admission.principal {
                    Principal::Coordinator => Some("coordinator".to_string()),
                    Principal::Peer { site } => Some(site.clone()),
                    _ => None,
                };
                request.extensions_mut().insert(admission);
                let call = self.inner.call(request);
                match caller {
                    Some(caller) => Box::pin(CALLER.scope(caller, call)),
                    None => Box::pin(call),
                }
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
