//! The coordinator: owns the site catalog and the model registry, plans every query with
//! datafusion-distributed and serves clients over Flight SQL.

mod flight;
mod query;

pub use flight::CoordinatorFlight;
pub use query::{PlannedQuery, QueryOutput};

use crate::error::{Error, Result};
use parking_lot::Mutex;
use shoal_operators::model::DirectoryModels;
use shoal_planner::{QueryReport, SiteCatalog};
use std::collections::VecDeque;
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
}

impl Default for CoordinatorOptions {
    fn default() -> Self {
        Self {
            models_dir: None,
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug)]
pub struct Coordinator {
    catalog: Arc<SiteCatalog>,
    models: Arc<DirectoryModels>,
    options: CoordinatorOptions,
    reports: Mutex<VecDeque<(String, QueryReport)>>,
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
        Ok(Arc::new(Self {
            catalog: Arc::new(SiteCatalog::new(options.heartbeat_timeout)),
            models: Arc::new(models),
            options,
            reports: Mutex::new(VecDeque::new()),
        }))
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

    /// Serves Flight SQL (and the worker actions) until `shutdown` resolves.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let service = arrow_flight::flight_service_server::FlightServiceServer::new(
            CoordinatorFlight::new(self),
        )
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                shutdown,
            )
            .await
            .map_err(|e| Error::Listen {
                addr: "coordinator".into(),
                message: e.to_string(),
            })
    }
}
