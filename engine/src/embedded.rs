//! An embedded cluster: a coordinator and several workers in one process, on loopback.
//! Same code paths as separate processes (real gRPC, real Flight), no manual steps.

use crate::coordinator::{Coordinator, CoordinatorOptions, QueryOutput};
use crate::error::{Error, Result};
use crate::security::random_secret;
use crate::worker::{WorkerOptions, WorkerProcess};
use shoal_planner::policy::SitePolicy;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::task::AbortOnDropHandle;

pub struct EmbeddedCluster {
    pub coordinator: Arc<Coordinator>,
    /// The coordinator's Flight SQL endpoint, e.g. `http://127.0.0.1:43117` (`https://`
    /// with TLS); Flight clients may write it `grpc://` (`grpc+tls://`).
    pub url: String,
    pub workers: Vec<WorkerProcess>,
    /// The egress policy each worker this cluster starts enforces.
    site_policy: Arc<SitePolicy>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: AbortOnDropHandle<()>,
}

/// The sample sites' policy (`shoal demo`, `shoal run` on the sample data): `lineitem`
/// open, `visits` aggregates-only.
pub const DEMO_SITE_POLICY: &str = include_str!("../../examples/site-policy.toml");

/// [`DEMO_SITE_POLICY`], read.
pub fn demo_site_policy() -> SitePolicy {
    SitePolicy::parse(DEMO_SITE_POLICY, "the sample sites' policy").unwrap_or_default()
}

impl EmbeddedCluster {
    /// Starts a coordinator and one worker per folder in `sites` (named `site-1`, ...) on
    /// loopback. Without site secrets in `options`, a random enrollment key is made and
    /// each worker given only its own secret, so even an embedded cluster's sites run plans
    /// only from their coordinator and cannot pose as one another. With TLS in `options`,
    /// the workers serve TLS with the same certificate.
    ///
    /// Each worker enforces the default site policy (every table aggregates-only); see
    /// [`EmbeddedCluster::start_with_policy`].
    pub async fn start(options: CoordinatorOptions, sites: &[PathBuf]) -> Result<Self> {
        Self::start_on("127.0.0.1:0", options, sites, SitePolicy::default()).await
    }

    /// As [`EmbeddedCluster::start`], every worker enforcing `policy`.
    pub async fn start_with_policy(
        options: CoordinatorOptions,
        sites: &[PathBuf],
        policy: SitePolicy,
    ) -> Result<Self> {
        Self::start_on("127.0.0.1:0", options, sites, policy).await
    }

    /// As [`EmbeddedCluster::start_with_policy`], with the coordinator listening on `listen`.
    pub async fn start_on(
        listen: &str,
        mut options: CoordinatorOptions,
        sites: &[PathBuf],
        policy: SitePolicy,
    ) -> Result<Self> {
        if !options.site_keys()?.configured() {
            options.site_key = Some(random_secret()?);
        }
        let scheme = if options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let coordinator = Coordinator::new(options)?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| Error::Listen {
                addr: listen.into(),
                message: e.to_string(),
            })?;
        let addr = listener.local_addr().map_err(|e| Error::Listen {
            addr: listen.into(),
            message: e.to_string(),
        })?;
        let url = format!("{scheme}://{addr}");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = {
            let coordinator = coordinator.clone();
            crate::tasks::spawn_owned(async move {
                let stop = async {
                    let _ = rx.await;
                };
                if let Err(e) = crate::coordinator::serve(coordinator, listener, stop).await {
                    tracing::error!("coordinator stopped: {e}");
                }
            })
        };
        let mut cluster = Self {
            coordinator,
            url,
            workers: Vec::new(),
            site_policy: Arc::new(policy),
            shutdown: Some(tx),
            server,
        };
        for (i, dir) in sites.iter().enumerate() {
            cluster
                .add_worker(format!("site-{}", i + 1), dir.clone())
                .await?;
        }
        Ok(cluster)
    }

    pub async fn add_worker(&mut self, name: String, data_dir: PathBuf) -> Result<()> {
        self.add_worker_with(name, data_dir, |_| {}).await
    }

    /// As [`EmbeddedCluster::add_worker`], with `configure` setting the worker's options
    /// (a memory limit, a model cache) after the cluster's own.
    pub async fn add_worker_with(
        &mut self,
        name: String,
        data_dir: PathBuf,
        configure: impl FnOnce(&mut WorkerOptions),
    ) -> Result<()> {
        let mut options = WorkerOptions::new(data_dir, self.url.clone());
        let security = self.coordinator.options();
        options.register_timeout = Duration::from_secs(10);
        options.site_secret = security.secret_for_site(&name)?;
        options.tls = security.tls.clone();
        options.tls_ca = security.tls_ca.clone();
        options.policy = self.site_policy.clone();
        options.name = Some(name);
        configure(&mut options);
        let worker = WorkerProcess::start(options).await?;
        self.workers.push(worker);
        Ok(())
    }

    /// Runs a statement on the cluster and returns the whole result with its report.
    pub async fn sql(&self, sql: &str) -> Result<QueryOutput> {
        self.coordinator.run(sql).await
    }

    pub async fn stop(mut self) {
        for worker in self.workers.drain(..) {
            worker.stop().await;
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.server).await;
        self.server.abort();
    }
}
