//! The coordinator: owns the site catalog and the model registry, plans every query with
//! datafusion-distributed and serves clients over Flight SQL.

mod catalog_calls;
mod flight;
mod limits;
pub mod pipeline;
mod prepared;
mod query;
mod resilient;
mod running;
mod train;
mod waves;

pub use flight::CoordinatorFlight;
pub use query::{PlannedQuery, QueryOutput};

use crate::error::{Error, Result};
use crate::security::{
    Authenticator, ClusterChannels, Connector, Guarded, ServerTls, check_exposure, client_tls,
    server_tls,
};
use parking_lot::Mutex;
use prepared::PreparedStatements;
use running::RunningQueries;
use shoal_operators::model::DirectoryModels;
use shoal_planner::{QueryReport, SiteCatalog};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Reports kept for `shoal.query_report`: the most recent queries only.
const KEPT_REPORTS: usize = 256;

#[derive(Debug, Clone)]
pub struct CoordinatorOptions {
    /// Folder of `<name>.onnx` files; none means an empty registry.
    pub models_dir: Option<PathBuf>,
    pub heartbeat_interval: Duration,
    /// A worker silent for longer is considered down.
    pub heartbeat_timeout: Duration,
    /// Static bearer tokens clients may present.
    pub tokens: Vec<String>,
    /// (user, password) pairs for the Basic-to-Bearer handshake.
    pub users: Vec<(String, String)>,
    /// Shared with the workers: they run plans only from its holder, and only its holders
    /// may register as workers.
    pub cluster_secret: Option<String>,
    /// Serve Flight SQL over TLS with this certificate.
    pub tls: Option<ServerTls>,
    /// CA that signed the workers' certificates (for `https://` workers).
    pub tls_ca: Option<PathBuf>,
    /// Allow listening beyond loopback without client authentication.
    pub insecure: bool,
    /// A statement running longer is cancelled on every worker.
    pub query_timeout: Duration,
    /// A statement returning more rows fails (add a LIMIT or aggregate on the cluster).
    pub max_result_rows: u64,
    /// Times a statement is planned again and re-run when a worker is lost mid-query.
    pub task_retries: u32,
    /// A statement during which no worker scans a row and no batch arrives for this long
    /// fails with a no-progress error.
    pub stall_timeout: Duration,
    /// Input files each site reads per wave of a resumable run; 0: as many as a site reads
    /// in parallel (the core count). Smaller waves checkpoint more often.
    pub wave_files: usize,
}

impl Default for CoordinatorOptions {
    fn default() -> Self {
        Self {
            models_dir: None,
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(5),
            tokens: Vec::new(),
            users: Vec::new(),
            cluster_secret: None,
            tls: None,
            tls_ca: None,
            insecure: false,
            query_timeout: Duration::from_secs(3600),
            max_result_rows: 100_000_000,
            task_retries: 2,
            stall_timeout: Duration::from_secs(300),
            wave_files: 0,
        }
    }
}

#[derive(Debug)]
pub struct Coordinator {
    catalog: Arc<SiteCatalog>,
    models: Arc<DirectoryModels>,
    options: CoordinatorOptions,
    reports: Mutex<VecDeque<(String, QueryReport)>>,
    auth: Arc<Authenticator>,
    /// Channels to the workers, reused across queries.
    channels: ClusterChannels,
    running: RunningQueries,
    prepared: PreparedStatements,
    /// Model runs per worker, from the heartbeats.
    model_runs: Mutex<HashMap<String, u64>>,
    /// Rows scanned per worker since it started, from the heartbeats (pipeline progress).
    rows_scanned: Mutex<HashMap<String, u64>>,
}

impl Coordinator {
    pub fn new(options: CoordinatorOptions) -> Result<Arc<Self>> {
        let models = match &options.models_dir {
            Some(dir) => DirectoryModels::load(dir).map_err(|source| Error::Models {
                path: dir.clone(),
                source: Box::new(source),
            })?,
            None => DirectoryModels::default(),
        };
        let auth = Arc::new(Authenticator::new(
            &options.tokens,
            &options.users,
            options.cluster_secret.as_deref(),
        ));
        let worker_tls = options.tls_ca.as_deref().map(client_tls).transpose()?;
        let channels = ClusterChannels::new(Connector::new(
            options.cluster_secret.as_deref(),
            worker_tls,
        )?);
        Ok(Arc::new(Self {
            catalog: Arc::new(SiteCatalog::new(options.heartbeat_timeout)),
            models: Arc::new(models),
            options,
            reports: Mutex::new(VecDeque::new()),
            auth,
            channels,
            running: RunningQueries::default(),
            prepared: PreparedStatements::default(),
            model_runs: Mutex::new(HashMap::new()),
            rows_scanned: Mutex::new(HashMap::new()),
        }))
    }

    pub fn authenticator(&self) -> &Arc<Authenticator> {
        &self.auth
    }

    /// Ids of the statements streaming now.
    pub fn running_queries(&self) -> Vec<String> {
        self.running.ids()
    }

    /// The registry listing for a worker's heartbeat or registration reply. Statements do
    /// not depend on it (they carry the versions they pin, which a worker fetches by hash);
    /// it lets a worker name the models it could serve.
    pub(crate) fn registry_listing(&self) -> Vec<shoal_operators::ModelInfo> {
        shoal_operators::ModelProvider::list(self.models.as_ref())
    }

    pub(crate) fn note_model_runs(&self, worker: &str, runs: u64) {
        self.model_runs.lock().insert(worker.to_string(), runs);
    }

    pub(crate) fn note_rows_scanned(&self, worker: &str, rows: u64) {
        self.rows_scanned.lock().insert(worker.to_string(), rows);
    }

    /// Rows scanned by every worker, as of their last heartbeats.
    pub(crate) fn rows_scanned_total(&self) -> u64 {
        self.rows_scanned.lock().values().sum()
    }

    pub(crate) fn model_runs_of(&self, worker: &str) -> u64 {
        self.model_runs.lock().get(worker).copied().unwrap_or(0)
    }

    pub fn catalog(&self) -> &Arc<SiteCatalog> {
        &self.catalog
    }

    pub fn models(&self) -> &Arc<DirectoryModels> {
        &self.models
    }

    pub fn options(&self) -> &CoordinatorOptions {
        &self.options
    }

    pub(crate) fn keep_report(&self, query_id: String, report: QueryReport) {
        let mut reports = self.reports.lock();
        if reports.len() == KEPT_REPORTS {
            reports.pop_front();
        }
        reports.push_back((query_id, report));
    }

    pub fn report(&self, query_id: &str) -> Option<QueryReport> {
        self.reports
            .lock()
            .iter()
            .rev()
            .find(|(id, _)| id == query_id)
            .map(|(_, r)| r.clone())
    }

    /// Serves Flight SQL (and the worker actions) until `shutdown` resolves. Refuses to
    /// serve beyond loopback without client authentication unless `insecure` is set.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let addr = listener.local_addr().map_err(|e| Error::Listen {
            addr: "coordinator".into(),
            message: e.to_string(),
        })?;
        check_exposure(
            "coordinator",
            addr,
            self.auth.requires_client_auth(),
            self.options.insecure,
        )?;
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = &self.options.tls {
            builder = builder
                .tls_config(server_tls(tls)?)
                .map_err(|e| Error::Security(format!("coordinator TLS: {e}")))?;
        }
        let auth = self.auth.clone();
        let service = arrow_flight::flight_service_server::FlightServiceServer::new(
            CoordinatorFlight::new(self),
        )
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
        builder
            .add_service(Guarded::coordinator(service, auth))
            .serve_with_incoming_shutdown(crate::accept::accept_nodelay(listener), shutdown)
            .await
            .map_err(|e| Error::Listen {
                addr: "coordinator".into(),
                message: e.to_string(),
            })
    }
}
