//! The DataFusion session every statement is planned in: a fresh one per statement, so the
//! catalog is read live and nothing one client sets leaks into another's queries. It wires
//! datafusion-distributed to shoal's catalog (which worker holds which file), channels and
//! codec, and pins the model versions a statement calls.

use crate::error::Result;
use crate::security::ClusterChannels;
use datafusion::config::ConfigNonZeroUsize;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use datafusion_distributed::{DistributedExt, SessionStateBuilderExt};
use shoal_operators::ModelProvider;
use shoal_operators::ShoalOptions;
use shoal_operators::codec::ShoalCodec;
use shoal_operators::model::DirectoryModels;
use shoal_operators::udf::model_pins::Pins;
use shoal_operators::udf::tensor_batches::batch_rows_for;
use shoal_planner::locality::CatalogWorkerResolver;
use shoal_planner::{SiteCatalog, SiteLocality, SiteSchemaProvider};
use shoal_sql::with_shoal_functions_at;
use std::future::Future;
use std::sync::Arc;

#[derive(Debug)]
pub struct Sessions {
    catalog: Arc<SiteCatalog>,
    models: Arc<DirectoryModels>,
    /// Channels to the workers, reused across statements.
    channels: ClusterChannels,
    target_partitions: Option<usize>,
    /// Each statement's work stops this long after it is planned.
    query_timeout: std::time::Duration,
    /// Shared by every statement's session: the coordinator's memory pool.
    runtime: Arc<datafusion::execution::runtime_env::RuntimeEnv>,
}

impl Sessions {
    pub fn new(
        catalog: Arc<SiteCatalog>,
        models: Arc<DirectoryModels>,
        channels: ClusterChannels,
        target_partitions: Option<usize>,
        query_timeout: std::time::Duration,
        runtime: Arc<datafusion::execution::runtime_env::RuntimeEnv>,
    ) -> Self {
        Self {
            catalog,
            models,
            channels,
            target_partitions,
            query_timeout,
            runtime,
        }
    }

    /// The registry as a statement planned now would resolve its models (EXPLAIN's preview
    /// of the sites' model allow-lists).
    pub fn listed_models(&self) -> shoal_planner::policy::ListedModels {
        shoal_planner::policy::ListedModels(self.models.list())
    }

    /// A fresh session per statement: the catalog is read live, and nothing one client sets
    /// leaks into another's queries.
    pub fn session(&self) -> Result<SessionContext> {
        let provider: Arc<dyn ModelProvider> = self.models.clone();
        let locality = SiteLocality::new(self.catalog.clone());
        let mut config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema("shoal_cluster", "public");
        if let Some(partitions) = self.target_partitions {
            config = config.with_target_partitions(partitions.max(1));
        }
        let builder = SessionStateBuilder::new()
            .with_default_features()
            .with_config(config)
            .with_runtime_env(self.runtime.clone());
        // shoal's extension nodes (sinks) are planned before the distributed planner wraps
        // the query planner, so they land inside the workers' stages.
        let state = with_shoal_functions_at(builder, provider.clone(), "coordinator")
            .with_query_planner(Arc::new(shoal_operators::sink::ShoalQueryPlanner))
            .with_distributed_worker_resolver(CatalogWorkerResolver::new(self.catalog.clone()))
            .with_distributed_channel_resolver(self.channels.clone())
            .with_distributed_planner()
            .with_distributed_user_codec(ShoalCodec::default())
            // `shoal.*`, sent to the workers with every task; `pinned` fills in the model
            // versions per statement.
            .with_distributed_option_extension(shoal_operators::runtime::session_options())
            .with_distributed_desired_task_count_handler(locality.clone())
            .with_distributed_scale_up_leaf_node_handler(locality.clone())
            .with_distributed_route_tasks_handler(locality)
            .build();
        let mut state = state;
        // Every branch of a UNION gets the stage's full task count: each task is one site,
        // and a branch given fewer tasks than sites could not keep its scans local.
        state
            .config_mut()
            .options_mut()
            .set("distributed.children_isolator_unions", "false")?;
        let ctx = SessionContext::new_with_state(state);
        let catalog = Arc::new(datafusion::catalog::MemoryCatalogProvider::new());
        datafusion::catalog::CatalogProvider::register_schema(
            catalog.as_ref(),
            "public",
            // A user narrowed by grants sees only the tables granted (in every statement:
            // queries, EXPLAIN, CREATE MODEL).
            Arc::new(
                SiteSchemaProvider::new(self.catalog.clone()).granted_only(
                    ASKER
                        .try_with(|asker| asker.clone())
                        .ok()
                        .and_then(|asker| Some((asker.user, asker.tables?))),
                ),
            ),
        )?;
        ctx.register_catalog("shoal_cluster", catalog);
        // The system schema lives in the same catalog as the site tables.
        shoal_sql::session::register_system_tables(&ctx, provider)?;
        Ok(ctx)
    }

    /// `df` with the versions of the models its plan calls pinned, so the coordinator and
    /// every worker score with the same version even if one is registered meanwhile, or a
    /// worker has not heard of it yet. Called right before physical planning.
    pub fn pinned(&self, df: DataFrame) -> Result<DataFrame> {
        let pins = Pins::for_plan(df.logical_plan(), self.models.as_ref())?;
        let (mut state, plan) = df.into_parts();
        let options = state.config_mut().options_mut();
        let mut shoal = ShoalOptions::from_config(options);
        shoal.models = pins.to_options()?;
        // A statement building large tensors per row reads fewer rows per batch, here and
        // on every worker.
        let batch_rows = batch_rows_for(&plan, options.execution.batch_size.get())?;
        if let Some(rows) = batch_rows {
            options.execution.batch_size = ConfigNonZeroUsize::try_new(rows)?;
        }
        shoal.query.batch_rows = batch_rows.unwrap_or(0);
        // A key of its own, so its long loops on every process can be told to stop, and
        // the deadline at which they stop by themselves.
        let asker = Asker::current();
        shoal.query.partial = asker.partial;
        if let Some(device) = asker.device {
            shoal.inference.device = device;
        }
        shoal.inference.device_fallback |= asker.device_fallback;
        shoal.statement = shoal_operators::config::StatementOptions {
            key: crate::coordinator::ids::new_id(),
            deadline_ms: shoal_operators::cancel::deadline_after(self.query_timeout),
            user: asker.user,
            digest: asker.digest,
        };
        options.extensions.insert(shoal);
        Ok(DataFrame::new(state, plan))
    }
}

tokio::task_local! {
    /// Who the statement being planned on this task is for.
    static ASKER: Asker;
}

/// Who asked for a statement, as every site's audit log records it.
#[derive(Debug, Clone, PartialEq)]
pub struct Asker {
    /// The principal's owner name (`user:alice`, `open`).
    pub user: String,
    /// sha256 of the statement's text, hex.
    pub digest: String,
    /// The only tables the principal may read, where grants narrow it.
    pub tables: Option<Arc<std::collections::BTreeSet<String>>>,
    /// Answer from the sites that are up (see `shoal.query.partial`).
    pub partial: bool,
    /// The device the client asked for (`shoal.inference.device`); None: the default.
    pub device: Option<shoal_operators::device::DeviceRequest>,
    /// Score on the CPU where a site cannot give the device (`shoal.inference.device_fallback`).
    pub device_fallback: bool,
}

impl Asker {
    pub fn new(
        principal: &crate::security::Principal,
        text: &str,
        tables: Option<Arc<std::collections::BTreeSet<String>>>,
    ) -> Self {
        use sha2::Digest;
        Self {
            user: principal.owner(),
            digest: hex::encode(sha2::Sha256::digest(text.as_bytes())),
            tables,
            partial: false,
            device: None,
            device_fallback: false,
        }
    }

    /// The same asker, scoring on the CPU where a site lacks the device asked for.
    pub fn with_device_fallback(mut self, fallback: bool) -> Self {
        self.device_fallback |= fallback;
        self
    }

    /// The same asker with what the client asked in its headers; a device that is not
    /// one is refused.
    pub fn with_asks(mut self, asks: &crate::protocol::StatementAsks) -> Result<Self> {
        self.partial |= asks.partial;
        if !asks.device.is_empty() {
            self.device = Some(
                asks.device
                    .parse()
                    .map_err(|e: shoal_operators::Error| crate::Error::DataFusion(e.into()))?,
            );
        }
        self.device_fallback |= asks.device_fallback;
        Ok(self)
    }

    /// Work the coordinator plans for itself (training rounds, pipeline waves).
    fn coordinator() -> Self {
        Self {
            user: "coordinator".into(),
            digest: String::new(),
            tables: None,
            partial: false,
            device: None,
            device_fallback: false,
        }
    }

    /// Who the statement being planned on this task is for (the coordinator itself when
    /// no one asked).
    pub fn current() -> Self {
        ASKER
            .try_with(Clone::clone)
            .unwrap_or_else(|_| Self::coordinator())
    }

    /// The same asker, answered from the sites that are up when `partial`.
    pub fn with_partial(mut self, partial: bool) -> Self {
        self.partial |= partial;
        self
    }

    /// Runs `work` with every statement it plans marked as asked by `self`.
    pub async fn scope<F: Future>(self, work: F) -> F::Output {
        ASKER.scope(self, work).await
    }
}
