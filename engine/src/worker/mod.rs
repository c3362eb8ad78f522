//! A worker: serves datafusion-distributed tasks over the Parquet files of its data folder,
//! registers them with the coordinator, and heartbeats on its own task.

mod data_dir;
mod models;
mod scan_ledger;

pub use data_dir::describe_tables;
pub use models::RemoteModels;
pub use scan_ledger::ScanLedger;

use crate::client;
use crate::error::{Error, Result};
use crate::protocol::{
    ACTION_HEARTBEAT, ACTION_REGISTER, Heartbeat, HeartbeatReply, RegisterReply, SiteReport,
};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion_distributed::{DistributedExt, Worker, WorkerQueryContext};
use object_store::local::LocalFileSystem;
use shoal_operators::ModelProvider;
use shoal_operators::codec::ShoalCodec;
use shoal_planner::site_store_url;
use shoal_sql::with_shoal_functions;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Site name; defaults to `worker-<port>`.
    pub name: Option<String>,
    pub data_dir: PathBuf,
    pub coordinator: String,
    pub listen: String,
    /// Where fetched models are cached; defaults to `<temp>/shoal-models/<name>` (content
    /// addressed: safe to share, never inside the data folder).
    pub model_cache: Option<PathBuf>,
    /// How long to keep retrying the first registration (the coordinator may start later).
    pub register_timeout: Duration,
}

impl WorkerOptions {
    pub fn new(data_dir: PathBuf, coordinator: String) -> Self {
        Self {
            name: None,
            data_dir,
            coordinator,
            listen: "127.0.0.1:0".into(),
            model_cache: None,
            register_timeout: Duration::from_secs(30),
        }
    }
}

/// A running worker; dropping it does not stop it, call [`WorkerProcess::stop`].
#[derive(Debug)]
pub struct WorkerProcess {
    pub name: String,
    pub url: String,
    pub ledger: Arc<ScanLedger>,
    server: JoinHandle<()>,
    heartbeat: JoinHandle<()>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl WorkerProcess {
    pub async fn start(options: WorkerOptions) -> Result<Self> {
        let data_dir = options
            .data_dir
            .canonicalize()
            .map_err(|_| Error::MissingDataDir {
                path: options.data_dir.clone(),
            })?;
        let tables = describe_tables(&data_dir).await?;
        let listener = tokio::net::TcpListener::bind(&options.listen)
            .await
            .map_err(|e| Error::Listen {
                addr: options.listen.clone(),
                message: e.to_string(),
            })?;
        let addr = listener.local_addr().map_err(|e| Error::Listen {
            addr: options.listen.clone(),
            message: e.to_string(),
        })?;
        let name = options
            .name
            .clone()
            .unwrap_or_else(|| format!("worker-{}", addr.port()));
        shoal_planner::catalog::validate_site_name(&name)?;
        let url = format!("http://{addr}");

        let models = Arc::new(RemoteModels::new(
            options.coordinator.clone(),
            options
                .model_cache
                .clone()
                .unwrap_or_else(|| std::env::temp_dir().join("shoal-models").join(&name)),
            tokio::runtime::Handle::current(),
        ));
        let ledger = Arc::new(ScanLedger::new(name.clone()));

        // This site's files, and only these, are readable as shoal://<name>/...
        let store = LocalFileSystem::new_with_prefix(&data_dir).map_err(|e| Error::Io {
            path: data_dir.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let runtime = RuntimeEnvBuilder::new().build_arc()?;
        let store_url = url::Url::parse(&site_store_url(&name)).map_err(|e| Error::Listen {
            addr: name.clone(),
            message: e.to_string(),
        })?;
        runtime.register_object_store(&store_url, Arc::new(store));

        let worker = {
            let models = models.clone();
            let ledger = ledger.clone();
            Worker::from_session_builder(move |ctx: WorkerQueryContext| {
                let provider: Arc<dyn ModelProvider> = models.clone();
                let ledger = ledger.clone();
                let runtime = runtime.clone();
                async move {
                    let builder = ctx.builder.with_runtime_env(runtime);
                    Ok(with_shoal_functions(builder, provider.clone())
                        .with_distributed_user_codec(ShoalCodec::new(provider))
                        .with_distributed_worker_plan_rewrite_handler(ledger.handler())
                        .build())
                }
            })
        };
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let result = tonic::transport::Server::builder()
                .add_service(worker.into_worker_server())
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        let _ = shutdown_rx.await;
                    },
                )
                .await;
            if let Err(e) = result {
                tracing::error!("worker server stopped: {e}");
            }
        });

        let report = SiteReport {
            name: name.clone(),
            url: url.clone(),
            tables,
        };
        let reply = register_with_retry(&options.coordinator, &report, options.register_timeout)
            .await
            .inspect_err(|_| server.abort())?;
        models.set_registry(reply.models);
        let interval = Duration::from_millis(reply.heartbeat_interval_ms.max(50));
        let heartbeat = tokio::spawn(heartbeat_loop(
            options.coordinator.clone(),
            report,
            models,
            interval,
        ));
        tracing::info!(worker = %name, %url, "worker serving {}", data_dir.display());
        Ok(Self {
            name,
            url,
            ledger,
            server,
            heartbeat,
            shutdown: Some(shutdown_tx),
        })
    }

    /// Stops heartbeats and the server.
    pub async fn stop(mut self) {
        self.heartbeat.abort();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        // In-flight streams are cut after a short grace period.
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.server).await;
        self.server.abort();
    }

    /// Stops the worker abruptly, as a crash would (no goodbye to the coordinator).
    pub fn kill(self) {
        self.heartbeat.abort();
        self.server.abort();
    }
}

async fn register(coordinator: &str, report: &SiteReport) -> Result<RegisterReply> {
    let body = serde_json::to_vec(report).map_err(|e| Error::Refused {
        action: ACTION_REGISTER.into(),
        message: e.to_string(),
    })?;
    let reply = client::action(client::connect(coordinator).await?, ACTION_REGISTER, body).await?;
    serde_json::from_slice(&reply).map_err(|e| Error::Refused {
        action: ACTION_REGISTER.into(),
        message: e.to_string(),
    })
}

async fn register_with_retry(
    coordinator: &str,
    report: &SiteReport,
    timeout: Duration,
) -> Result<RegisterReply> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match register(coordinator, report).await {
            Ok(reply) => return Ok(reply),
            // A refusal (bad schema, bad name) will not change by retrying.
            Err(e @ Error::Refused { .. }) => return Err(e),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Runs on its own task, apart from query work, so a busy worker still reports in.
async fn heartbeat_loop(
    coordinator: String,
    report: SiteReport,
    models: Arc<RemoteModels>,
    interval: Duration,
) {
    models.prefetch().await;
    let mut ticker = tokio::time::interval(interval);
    loop {
        ticker.tick().await;
        let beat = Heartbeat {
            name: report.name.clone(),
        };
        let Ok(body) = serde_json::to_vec(&beat) else {
            continue;
        };
        let reply = match client::connect(&coordinator).await {
            Ok(channel) => client::action(channel, ACTION_HEARTBEAT, body).await,
            Err(e) => Err(e),
        };
        match reply.and_then(|r| {
            serde_json::from_slice::<HeartbeatReply>(&r).map_err(|e| Error::Refused {
                action: ACTION_HEARTBEAT.into(),
                message: e.to_string(),
            })
        }) {
            Ok(reply) if reply.known => {
                models.set_registry(reply.models);
                models.prefetch().await;
            }
            Ok(_) => {
                // The coordinator restarted and forgot us: register again.
                if let Err(e) = register(&coordinator, &report).await {
                    tracing::warn!(worker = %report.name, "re-registering: {e}");
                }
            }
            Err(e) => tracing::warn!(worker = %report.name, "heartbeat: {e}"),
        }
    }
}
