//! Health endpoints for probes (Kubernetes, load balancers, systemd): plain HTTP on
//! `--health-listen ADDR`, separate from the gRPC port so a probe needs neither TLS nor a
//! credential. `GET /healthz` answers 200 while the process serves; `GET /readyz` answers
//! 200 once it is ready (a worker: registered with the coordinator; a coordinator: serving)
//! and 503 while starting or stopping. They say nothing else, so they are safe on any
//! interface.

use crate::error::{Error, Result};
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio_util::task::AbortOnDropHandle;

/// Whether the process is ready; shared with the endpoint.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// The running endpoint; stops when dropped.
#[derive(Debug)]
pub struct HealthServer {
    pub addr: std::net::SocketAddr,
    _task: AbortOnDropHandle<()>,
}

impl HealthServer {
    pub async fn start(listen: &str, readiness: Readiness) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| Error::Listen {
                addr: format!("--health-listen {listen}"),
                message: e.to_string(),
            })?;
        let addr = listener.local_addr().map_err(|e| Error::Listen {
            addr: format!("--health-listen {listen}"),
            message: e.to_string(),
        })?;
        let app = Router::new()
            .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
            .route(
                "/readyz",
                get(move || {
                    let ready = readiness.is_ready();
                    async move {
                        if ready {
                            (StatusCode::OK, "ready\n")
                        } else {
                            (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                        }
                    }
                }),
            );
        let task = crate::tasks::spawn_owned(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!("health endpoint stopped: {e}");
            }
        });
        Ok(Self { addr, _task: task })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get_status(addr: std::net::SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).await.unwrap();
        reply.lines().next().unwrap_or_default().to_string()
    }

    #[tokio::test]
    async fn live_at_once_ready_when_told() {
        let readiness = Readiness::default();
        let server = HealthServer::start("127.0.0.1:0", readiness.clone())
            .await
            .unwrap();
        assert!(get_status(server.addr, "/healthz").await.contains("200"));
        assert!(get_status(server.addr, "/readyz").await.contains("503"));
        readiness.set(true);
        assert!(get_status(server.addr, "/readyz").await.contains("200"));
        assert!(get_status(server.addr, "/metrics").await.contains("404"));
    }
}
