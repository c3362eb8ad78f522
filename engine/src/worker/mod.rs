//! A worker: serves datafusion-distributed tasks over the Parquet files of its data folder,
//! registers them with the coordinator, and heartbeats on its own task.

pub mod audit;
mod data_dir;
mod egress;
mod heartbeat;
mod kill_switch;
mod models;
mod privacy_budget;
mod private_dir;
mod relisting;
mod scan_ledger;
mod sent_ledger;
mod sink_actions;
pub mod site_data;
mod yielding_scan;

pub use data_dir::Describer;
pub use models::RemoteModels;
pub use scan_ledger::ScanLedger;
pub use site_data::{DataLocation, SiteData, StoreLimits};

use crate::client;
use crate::error::{Error, Result};
use crate::protocol::{ACTION_LEAVE, ACTION_REGISTER, Leave, RegisterReply, SiteReport};
use crate::security::{
    ClusterChannels, Connector, Guarded, PassSource, PeerPasses, ServerTls, SiteGate, SiteSecret,
    check_exposure, client_tls, server_tls,
};
use datafusion::config::ConfigNonZeroUsize;
use datafusion::execution::memory_pool::MemoryPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion_distributed::{DistributedExt, Worker, WorkerQueryContext};
use shoal_operators::ModelProvider;
use shoal_operators::ShoalOptions;
use shoal_operators::codec::ShoalCodec;
use shoal_operators::device::{Device, GpuOptions};
use shoal_operators::udf::model_pins::Pins;
use shoal_planner::policy::SitePolicy;
use shoal_planner::site_store_url;
use shoal_sql::with_shoal_functions_at;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::task::AbortOnDropHandle;

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Site name; defaults to `worker-<port>`.
    pub name: Option<String>,
    /// The site's data: a folder, or a bucket prefix (`s3://bucket/prefix`, ...).
    pub data: DataLocation,
    /// Bounds on each request to a remote store (ignored for a folder).
    pub store_limits: StoreLimits,
    /// How often the data is listed again for new, changed or removed files (zero: never).
    pub rescan_interval: Duration,
    pub coordinator: String,
    /// What the worker binds.
    pub listen: String,
    /// What the coordinator and other sites dial (`HOST[:PORT]`); defaults to the bound
    /// address, which must then not be every interface.
    pub advertise: Option<String>,
    /// Where fetched models are cached; defaults to `<temp>/shoal-models/<name>` (content
    /// addressed: safe to share, never inside the data folder).
    pub model_cache: Option<PathBuf>,
    /// How long to keep retrying the first registration (the coordinator may start later).
    pub register_timeout: Duration,
    /// This site's secret (see [`crate::security::identity`]): it proves the site to the
    /// coordinator, and the site runs plans only from a coordinator that knows it, and
    /// serves task outputs only to peers the coordinator issued passes. Never sent.
    pub site_secret: Option<String>,
    /// Serve TLS with this certificate (the worker's URL becomes `https://`).
    pub tls: Option<ServerTls>,
    /// CA that signed the coordinator's and the other workers' certificates.
    pub tls_ca: Option<PathBuf>,
    /// Allow listening beyond loopback without a cluster secret.
    pub insecure: bool,
    /// Where pipeline sinks write on this site; defaults to `<data>/.shoal-output` (a hidden
    /// folder, so it is never read as a table).
    pub output_dir: Option<PathBuf>,
    /// Bytes the worker's queries and loaded models may hold (DataFusion's memory pool);
    /// operators that can spill do so past it, the others fail with a resources-exhausted
    /// error. None: no limit.
    pub memory_limit: Option<usize>,
    /// On a graceful stop, how long running tasks may take to finish before they are cut
    /// (the coordinator then re-runs them on another holder of the files).
    pub drain_timeout: Duration,
    /// What may leave this site (`--policy`); by default every table is aggregates-only.
    pub policy: Arc<SitePolicy>,
    /// Where the site's audit log is written; defaults to `<data>/.shoal-audit`.
    pub audit_dir: Option<PathBuf>,
    /// The devices to score on (`--devices`), each checked at start: a GPU that cannot be
    /// used stops the worker from starting. None: the CPU and every GPU detected that
    /// passes the check.
    pub devices: Option<Vec<Device>>,
    /// How the GPUs are shared between models (`--gpu-streams`, `--gpu-memory-limit`).
    pub gpu: GpuOptions,
}

impl WorkerOptions {
    pub fn new(data: impl Into<DataLocation>, coordinator: String) -> Self {
        Self {
            name: None,
            data: data.into(),
            store_limits: StoreLimits::default(),
            rescan_interval: Duration::from_secs(30),
            coordinator,
            listen: "127.0.0.1:0".into(),
            advertise: None,
            model_cache: None,
            register_timeout: Duration::from_secs(30),
            site_secret: None,
            tls: None,
            tls_ca: None,
            insecure: false,
            output_dir: None,
            memory_limit: crate::memory::default_memory_limit(),
            drain_timeout: Duration::from_secs(30),
            policy: Arc::new(SitePolicy::default()),
            audit_dir: None,
            devices: None,
            gpu: GpuOptions::default(),
        }
    }
}

/// A running worker. Dropping it aborts its server (as a crash would); [`WorkerProcess::stop`]
/// leaves gracefully.
#[derive(Debug)]
pub struct WorkerProcess {
    pub name: String,
    pub url: String,
    pub ledger: Arc<ScanLedger>,
    server: AbortOnDropHandle<()>,
    heartbeat: heartbeat::HeartbeatThread,
    /// Publishes new and removed files; stops with the worker.
    relisting: relisting::Relisting,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    kill_switch: kill_switch::KillSwitch,
    coordinator: Coordinator,
    drain_timeout: Duration,
}

impl WorkerProcess {
    pub async fn start(options: WorkerOptions) -> Result<Self> {
        // First: a worker told to use a GPU it cannot use says so before anything else.
        let requested = options.devices.clone();
        let devices = shoal_operators::runtime::run_on_cpu_pool(move || {
            shoal_operators::device::resolve(requested.as_deref())
        })
        .map_err(|e| e.to_string())
        .and_then(|resolved| resolved)
        .map_err(|message| Error::Devices { message })?;
        shoal_operators::device::declare(devices, options.gpu);
        let declared = shoal_operators::device::declared();
        tracing::info!(devices = %declared.names().join(","), "scoring devices");
        if declared.gpus.is_empty() {
            tracing::info!("no GPU: {}", declared.no_gpu_reason);
        }
        let data = SiteData::open(&options.data, options.store_limits)?;
        let audit_dir = local_dir_for(&data, options.audit_dir.as_deref(), "--audit-log", |d| {
            audit::default_dir(d)
        })?;
        let output_root = local_dir_for(&data, options.output_dir.as_deref(), "--output", |d| {
            d.join(".shoal-output")
        })?;
        let describer = Arc::new(Describer::default());
        let tables = describer.describe(&data).await?;
        check_policy_columns(&options.policy, &tables)?;
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
        check_exposure(
            "worker",
            addr,
            options.site_secret.is_some(),
            options.insecure,
        )?;
        let secret = options.site_secret.as_deref().map(SiteSecret::new);
        let scheme = if options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let url = crate::address::advertised_url(
            scheme,
            "worker",
            options.advertise.as_deref(),
            addr,
            options.tls.as_ref(),
        )?;
        let client_tls = options.tls_ca.as_deref().map(client_tls).transpose()?;
        let site_credential = secret.as_ref().map(|s| s.site_credential(&name));
        let connector = Connector::new(site_credential.as_deref(), client_tls)?;
        let peer_passes = Arc::new(PeerPasses::new(secret.is_some().then(|| PassSource {
            site: name.clone(),
            coordinator_url: options.coordinator.clone(),
            connector: connector.clone(),
        })));
        let peers = ClusterChannels::new(connector.clone(), peer_passes.clone());
        let gate = Arc::new(SiteGate::new(&name, secret));

        // Idle models are let go before a statement fails for memory (see `models`).
        let memory = crate::memory::memory_pool(options.memory_limit)
            .map(|pool| Arc::new(crate::memory::ReclaimingPool::new(pool)));
        let mut models = RemoteModels::new(
            options.coordinator.clone(),
            connector.clone(),
            options
                .model_cache
                .clone()
                .unwrap_or_else(|| private_dir::default_model_cache(&name)),
        );
        if let Some(pool) = &memory {
            let pool: Arc<dyn MemoryPool> = pool.clone();
            shoal_operators::runtime::set_memory_pool(pool.clone());
            models = models.with_memory_pool(pool);
        }
        let models = Arc::new(models);
        if let Some(pool) = &memory {
            let reclaimer: Arc<dyn crate::memory::Reclaim> = models.clone();
            pool.reclaim_from(Arc::downgrade(&reclaimer));
        }
        let ledger = Arc::new(ScanLedger::new(name.clone()));
        let audit = Arc::new(audit::AuditLog::open(&audit_dir).map_err(Error::Security)?);
        let sent = Arc::new(sent_ledger::SentLedger::default());
        let egress = egress::EgressGate::new(
            name.clone(),
            options.policy.clone(),
            audit,
            Arc::new(privacy_budget::PrivacyBudget::open(&audit_dir).map_err(Error::Security)?),
            models.clone(),
            sent.clone(),
        );
        let sink_site = shoal_operators::sink::SinkSite {
            site: name.clone(),
            output_root: output_root.clone(),
            data_store: data.store.clone(),
        };
        let (relist_now, relist_requests) = relisting::relist_channel();

        let mut runtime = RuntimeEnvBuilder::new();
        if let Some(pool) = memory {
            runtime = runtime.with_memory_pool(pool);
        }
        let runtime = runtime.build_arc()?;
        let store_url = url::Url::parse(&site_store_url(&name)).map_err(|e| Error::Listen {
            addr: name.clone(),
            message: e.to_string(),
        })?;
        // This site's files, and only these, are readable as shoal://<name>/...
        runtime.register_object_store(&store_url, data.store.clone());

        let worker = {
            let models = models.clone();
            let ledger = ledger.clone();
            Worker::from_session_builder(move |ctx: WorkerQueryContext| {
                let models = models.clone();
                let provider: Arc<dyn ModelProvider> = models.clone();
                let ledger = ledger.clone();
                let egress = egress.clone();
                let runtime = runtime.clone();
                let peers = peers.clone();
                let sink_site = sink_site.clone();
                async move {
                    let builder = ctx
                        .builder
                        .with_runtime_env(runtime)
                        // `shoal.*` as the coordinator planned the statement: the model
                        // versions it pinned, the evaluator it chose.
                        .with_distributed_option_extension_from_headers::<ShoalOptions>(
                            &ctx.headers,
                        )?;
                    let mut state = with_shoal_functions_at(builder, provider, &sink_site.site)
                        .with_distributed_channel_resolver(peers)
                        .with_distributed_user_codec(
                            ShoalCodec::default().with_sink_site(sink_site),
                        )
                        // The site's policy first: a refused fragment never reaches
                        // anything that reads.
                        .with_distributed_worker_plan_rewrite_handler(egress)
                        .with_distributed_worker_plan_rewrite_handler(ledger.handler())
                        .build();
                    // The models the task calls, ready before it runs: `predict` never
                    // fetches or loads inside an operator.
                    // The inference pool is this site's: its size is the worker's own.
                    let options = state.config_mut().options_mut();
                    let mut shoal = ShoalOptions::from_config(options);
                    shoal.inference.slots = shoal_operators::runtime::inference_options().slots;
                    // Smaller batches where the statement builds large tensors per row
                    // (never larger than this worker's own).
                    let own = options.execution.batch_size.get();
                    if (1..own).contains(&shoal.query.batch_rows) {
                        options.execution.batch_size =
                            ConfigNonZeroUsize::try_new(shoal.query.batch_rows)?;
                    }
                    // Bigger batches where the statement's models may run on this site's
                    // GPU (a run there costs a launch and a copy, whatever its size).
                    if let Some(rows) = shoal_operators::device::scan_batch_rows(
                        shoal_operators::device::declared(),
                        &shoal_operators::device::gpu_options(),
                        shoal.inference.device,
                        shoal.query.batch_rows,
                        own,
                    ) {
                        options.execution.batch_size = ConfigNonZeroUsize::try_new(rows)?;
                    }
                    options.extensions.insert(shoal);
                    let pins = Pins::from_config(state.config_options())?;
                    // Held by the task's context: its models stay loaded while it runs.
                    let lease = models.preload(&pins).await?;
                    state.config_mut().set_extension(Arc::new(lease));
                    Ok(state)
                }
            })
        };
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        // Pings find clients and peers whose link was cut, so their streams end.
        let mut builder = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(crate::security::KEEP_ALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(crate::security::KEEP_ALIVE_TIMEOUT));
        if let Some(tls) = &options.tls {
            builder = builder
                .tls_config(server_tls(tls)?)
                .map_err(|e| Error::Security(format!("worker TLS: {e}")))?;
        }
        let service = Guarded::site(worker.into_worker_server(), gate.clone());
        let actions = Guarded::site(
            arrow_flight::flight_service_server::FlightServiceServer::new(
                sink_actions::WorkerActions {
                    output_root,
                    data_store: data.store.clone(),
                    relist: relist_now,
                    sent,
                },
            ),
            gate,
        );
        let kill_switch = kill_switch::KillSwitch::default();
        let incoming = {
            use tokio_stream::StreamExt;
            let kill_switch = kill_switch.clone();
            crate::accept::accept_nodelay(listener)
                .map(move |accepted| accepted.map(|stream| kill_switch.wrap(stream)))
        };
        let server = crate::tasks::spawn_owned(async move {
            let result = builder
                .add_service(service)
                .add_service(actions)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = shutdown_rx.await;
                })
                .await;
            if let Err(e) = result {
                tracing::error!("worker server stopped: {e}");
            }
        });

        let report = SiteReport {
            name: name.clone(),
            url: url.clone(),
            tables,
            policy: Some(options.policy.as_ref().clone()),
            devices: shoal_operators::device::declared().names(),
        };
        let coordinator = Coordinator {
            url: options.coordinator.clone(),
            connector,
        };
        let reply = register_with_retry(&coordinator, &report, options.register_timeout)
            .await
            .inspect_err(|_| server.abort())?;
        let report = Arc::new(parking_lot::RwLock::new(report));
        models.set_registry(reply.models);
        peer_passes.set(reply.peers);
        let interval = Duration::from_millis(reply.heartbeat_interval_ms.max(50));
        let heartbeat = heartbeat::HeartbeatThread::start(
            coordinator.clone(),
            report.clone(),
            models,
            peer_passes,
            interval,
            tokio::runtime::Handle::current(),
        )
        .map_err(|e| {
            server.abort();
            Error::HeartbeatThread { source: e }
        })?;
        tracing::info!(worker = %name, %url, "worker serving {}", data.location);
        let relisting = relisting::Relisting::start(relisting::RelistingSetup {
            data,
            describer,
            report,
            coordinator: coordinator.clone(),
            policy: options.policy.clone(),
            interval: options.rescan_interval,
            requests: relist_requests,
        });
        Ok(Self {
            relisting,
            name,
            url,
            ledger,
            server,
            heartbeat,
            shutdown: Some(shutdown_tx),
            kill_switch,
            coordinator,
            drain_timeout: options.drain_timeout,
        })
    }

    /// Leaves gracefully: tells the coordinator (which plans no new task here), lets the
    /// running tasks finish for up to the drain timeout, then cuts what is left (the
    /// coordinator re-runs those tasks on another holder of the files).
    pub async fn stop(mut self) {
        // A listing registered after the goodbye would make the site plannable again.
        self.relisting.stop();
        let leave = serde_json::to_vec(&Leave {
            name: self.name.clone(),
        })
        .unwrap_or_default();
        if let Err(e) = self.coordinator.action(ACTION_LEAVE, leave).await {
            tracing::warn!(worker = %self.name, "telling the coordinator we leave: {e}");
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let drained = tokio::time::timeout(self.drain_timeout, &mut self.server).await;
        if drained.is_err() {
            tracing::warn!(
                worker = %self.name,
                "tasks still running after {:?}: cutting them",
                self.drain_timeout
            );
            self.kill_switch.pull();
            // Work holding a thread (training, a slow model) stops at its next check.
            shoal_operators::cancel::shut_down();
        }
        self.heartbeat.stop();
        self.server.abort();
    }

    /// Stops the worker abruptly, as a crash would (no goodbye to the coordinator).
    pub fn kill(mut self) {
        self.relisting.stop();
        self.heartbeat.stop();
        // Cut open connections first: the abort below takes effect only when the runtime
        // next polls the server task, and its connections would otherwise close gracefully.
        self.kill_switch.pull();
        self.server.abort();
    }
}

/// A local folder of the site's: the one given, else `default` beside a local data folder.
/// A site whose data is in an object store must name it: its audit log and privacy budget
/// have to outlive the process, so they never default to a temporary folder.
fn local_dir_for(
    data: &SiteData,
    given: Option<&Path>,
    flag: &str,
    default: impl Fn(&Path) -> PathBuf,
) -> Result<PathBuf> {
    match (given, data.location.local_dir()) {
        (Some(dir), _) => Ok(dir.to_path_buf()),
        // The folder is canonical: SiteData::open resolved it.
        (None, Some(folder)) => Ok(default(folder)),
        (None, None) => Err(Error::DataLocation {
            location: data.location.to_string(),
            message: format!(
                "a site whose data is in an object store needs {flag} DIR, a local folder \
                 (it must outlive the process)"
            ),
        }),
    }
}

/// Where the worker's coordinator is and how to talk to it.
#[derive(Debug, Clone)]
struct Coordinator {
    url: String,
    connector: Connector,
}

impl Coordinator {
    async fn action(&self, kind: &str, body: Vec<u8>) -> Result<Vec<u8>> {
        client::action(&self.connector, &self.url, kind, body).await
    }
}

async fn register(coordinator: &Coordinator, report: &SiteReport) -> Result<RegisterReply> {
    let body = serde_json::to_vec(report).map_err(|e| Error::Refused {
        action: ACTION_REGISTER.into(),
        message: e.to_string(),
    })?;
    let reply = coordinator.action(ACTION_REGISTER, body).await?;
    serde_json::from_slice(&reply).map_err(|e| Error::Refused {
        action: ACTION_REGISTER.into(),
        message: e.to_string(),
    })
}

async fn register_with_retry(
    coordinator: &Coordinator,
    report: &SiteReport,
    timeout: Duration,
) -> Result<RegisterReply> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match register(coordinator, report).await {
            Ok(reply) => return Ok(reply),
            // Only an unreachable coordinator may come up later; a refusal (bad schema,
            // bad name, wrong secret) or a TLS mistake will not change by retrying.
            Err(Error::Unreachable { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => return Err(e),
        }
    }
}

/// A policy naming a column its table does not have is a mistake that would let the
/// column out under another name later: refuse to start, naming it.
fn check_policy_columns(
    policy: &SitePolicy,
    tables: &[shoal_planner::SiteTableReport],
) -> Result<()> {
    for table in tables {
        let Some(rules) = policy.tables.get(&table.name) else {
            continue;
        };
        let named = rules
            .never_leave
            .iter()
            .map(|c| ("never_leave", c))
            .chain(rules.row_keys.iter().map(|c| ("row_keys", c)))
            .chain(rules.bounds.keys().map(|c| ("bounds", c)));
        for (key, column) in named {
            if table.schema.field_with_name(column).is_err() {
                return Err(Error::Security(format!(
                    "site policy {}: [tables.{}] {key} names column '{column}', which the table \
                     does not have (columns: {})",
                    policy.source,
                    table.name,
                    table
                        .schema
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
    }
    Ok(())
}
