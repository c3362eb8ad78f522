//! The coordinator: owns the site catalog and the model registry, plans every statement
//! with datafusion-distributed and serves clients over Flight SQL.
//!
//! Each stateful part owns its state and the methods that change it; [`Coordinator`] only
//! wires them and dispatches a statement to the part that plans it:
//!
//! | module | owns |
//! | --- | --- |
//! | `options` | [`CoordinatorOptions`] |
//! | `session` | the DataFusion session each statement is planned in (catalog, channels, codec, model pins) |
//! | `statement` | planning SQL, `SHOW MODELS` and `EXPLAIN` into a [`PlannedQuery`]; `describe`; prepared statements |
//! | `execution` | running plans: resilient re-runs, stream limits, running statements, reports |
//! | `training` | `CREATE MODEL`: training passes as statements, registration |
//! | `pipeline` | pipeline runs: outputs, sink commits, resumable waves, train nodes |
//! | `workers` | calls to workers outside query work (sink actions) |
//! | `progress` | what the workers' heartbeats report |
//! | `flight` | the Flight SQL service and shoal's actions (the only part that sees [`Coordinator`]) |
//!
//! ```text
//!  flight ──► Coordinator ──┬─► statement ──► session
//!                           ├─► training ──► statement, execution
//!                           ├─► pipeline ──► training, execution, workers, session
//!                           └─► execution ──► progress
//! ```

mod execution;
mod flight;
mod ids;
mod options;
mod pipeline;
mod progress;
mod session;
mod statement;
mod training;
mod workers;

pub use execution::QueryOutput;
pub use flight::{CoordinatorFlight, DEVICE_FALLBACK_HEADER, DEVICE_HEADER, PARTIAL_HEADER, serve};
pub use options::CoordinatorOptions;
pub use statement::PlannedQuery;

use crate::error::{Error, Result};
use crate::protocol::{PipelineEvent, PipelineRequest, StatementAsks};
use crate::security::{
    Authenticator, ClusterChannels, Connector, CoordinatorPasses, Principal, client_tls,
};
use crate::tasks::PlanningGate;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::ParamValues;
use execution::{ExecutionOptions, Executor, Replan};
use pipeline::Pipelines;
use progress::WorkerProgress;
use session::Sessions;
use shoal_operators::model::DirectoryModels;
use shoal_planner::{QueryReport, SiteCatalog};
use shoal_sql::ShoalStatement;
use statement::Statements;
use statement::prepared::PreparedStatements;
use std::sync::Arc;
use tokio::sync::mpsc;
use training::Training;

#[derive(Debug)]
pub struct Coordinator {
    options: CoordinatorOptions,
    catalog: Arc<SiteCatalog>,
    models: Arc<DirectoryModels>,
    auth: Arc<Authenticator>,
    sessions: Arc<Sessions>,
    statements: Arc<Statements>,
    prepared: PreparedStatements,
    executor: Arc<Executor>,
    training: Arc<Training>,
    pipelines: Pipelines,
    progress: Arc<WorkerProgress>,
    /// Client statements plan through it: a few at a time, off the runtime's threads.
    planning: PlanningGate,
    /// Signs the statement tickets handed to clients.
    tickets: flight::TicketKey,
    /// The credentials it presents to each site, and issues sites for one another.
    passes: Arc<CoordinatorPasses>,
    /// Dials members that register, to check their advertised address.
    members: ClusterChannels,
}

/// The coordinator's runtime: a memory pool of its own (final aggregations, sorts, joins
/// and shoal's kernels on the coordinator spill or fail past it, never abort the process).
fn coordinator_runtime(
    limit: Option<usize>,
) -> Result<Arc<datafusion::execution::runtime_env::RuntimeEnv>> {
    let mut runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new();
    if let Some(pool) = crate::memory::memory_pool(limit) {
        shoal_operators::runtime::set_memory_pool(pool.clone());
        runtime = runtime.with_memory_pool(pool);
    }
    Ok(runtime.build_arc()?)
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
        let models = Arc::new(models);
        let site_keys = options.site_keys()?;
        let auth = Arc::new(
            Authenticator::new(&options.tokens, &options.users, site_keys.clone())
                .with_roles(&options.roles)
                .with_grants(&options.grants),
        );
        let worker_tls = options.tls_ca.as_deref().map(client_tls).transpose()?;
        let catalog = Arc::new(SiteCatalog::new(options.heartbeat_timeout));
        let passes = Arc::new(CoordinatorPasses::new(catalog.clone(), site_keys));
        let channels = ClusterChannels::new(Connector::new(None, worker_tls)?, passes.clone());
        let progress = Arc::new(WorkerProgress::default());
        let sessions = Arc::new(Sessions::new(
            catalog.clone(),
            models.clone(),
            channels.clone(),
            options.target_partitions,
            options.query_timeout,
            coordinator_runtime(options.memory_limit)?,
        ));
        let statements = Arc::new(Statements::new(sessions.clone(), catalog.clone()));
        let executor = Arc::new(Executor::new(
            catalog.clone(),
            progress.clone(),
            workers::WorkerCalls::new(catalog.clone(), channels.clone()),
            ExecutionOptions {
                heartbeat_interval: options.heartbeat_interval,
                query_timeout: options.query_timeout,
                max_result_rows: options.max_result_rows,
                task_retries: options.task_retries,
                stall_timeout: options.stall_timeout,
            },
        ));
        let training = Arc::new(Training::new(
            sessions.clone(),
            statements.clone(),
            executor.clone(),
            models.clone(),
            options.max_search_trials,
        ));
        let pipelines = Pipelines::new(
            sessions.clone(),
            executor.clone(),
            training.clone(),
            workers::WorkerCalls::new(catalog.clone(), channels.clone()),
            catalog.clone(),
            progress.clone(),
            options.wave_files,
        );
        Ok(Arc::new(Self {
            options,
            catalog,
            models,
            auth,
            sessions,
            statements,
            prepared: PreparedStatements::default(),
            executor,
            training,
            pipelines,
            progress,
            planning: PlanningGate::per_core(),
            tickets: flight::TicketKey::random()?,
            passes,
            members: channels,
        }))
    }

    pub fn authenticator(&self) -> &Arc<Authenticator> {
        &self.auth
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

    /// Refuses a site that registers at an address the coordinator cannot dial, naming
    /// it: otherwise the mistake (a bound 0.0.0.0, a NAT, a firewall) shows only at the
    /// first query planned there.
    pub(crate) async fn check_reachable(&self, site: &str, url: &str) -> Result<()> {
        self.members.reach(url).await.map_err(|e| Error::Refused {
            action: crate::protocol::ACTION_REGISTER.into(),
            message: format!(
                "the coordinator cannot reach site '{site}' at {url}, the address it \
                     advertised ({e}): give the worker --advertise HOST:PORT with an address \
                     the coordinator can dial"
            ),
        })
    }

    /// The passes site `holder` needs to fetch task outputs from the other sites.
    pub(crate) fn peer_passes(&self, holder: &str) -> Vec<crate::security::PeerPass> {
        self.passes.issue(holder)
    }

    /// Ids of the statements streaming now that `principal` may see: its own, or all for
    /// an admin.
    pub fn running_queries(&self, principal: &Principal) -> Vec<String> {
        self.executor
            .running()
            .ids(&principal.owner(), principal.is_admin())
    }

    /// The report of a recent statement of `principal`'s (anyone's for an admin).
    pub fn report(&self, query_id: &str, principal: &Principal) -> Option<QueryReport> {
        self.executor
            .reports()
            .get(query_id, &principal.owner(), principal.is_admin())
    }

    /// The registry listing for a worker's heartbeat or registration reply. Statements do
    /// not depend on it (they carry the versions they pin, which a worker fetches by hash);
    /// it lets a worker name the models it could serve.
    pub(crate) fn registry_listing(&self) -> Vec<shoal_operators::ModelInfo> {
        shoal_operators::ModelProvider::list(self.models.as_ref())
    }

    /// Plans `sql`. Remote clients may only read (DDL, DML and `SET` are refused), and
    /// train models (`CREATE MODEL`).
    pub async fn plan(&self, sql: &str) -> Result<PlannedQuery> {
        self.plan_with_parameters(sql, None, &Principal::Open).await
    }

    /// Plans `sql` with its placeholders (`$1`, `?`) bound to `parameters`.
    pub async fn plan_with_parameters(
        &self,
        sql: &str,
        parameters: Option<ParamValues>,
        principal: &Principal,
    ) -> Result<PlannedQuery> {
        self.plan_as(sql, parameters, principal, &StatementAsks::default())
            .await
    }

    /// [`Coordinator::plan_with_parameters`] with what the client asked in its headers:
    /// with `partial`, files only down sites hold are skipped (the report says what was
    /// not read) instead of failing the statement; its device and fallback.
    pub async fn plan_as(
        &self,
        sql: &str,
        parameters: Option<ParamValues>,
        principal: &Principal,
        asks: &StatementAsks,
    ) -> Result<PlannedQuery> {
        let asker =
            session::Asker::new(principal, sql, self.auth.tables_of(principal)).with_asks(asks)?;
        self.planning
            .run(asker.scope(async {
                let statement =
                    ShoalStatement::parse_with_limits(sql, &self.options.statement_limits)?;
                self.statements
                    .plan(&statement, parameters, |create| {
                        self.training.plan(create, principal)
                    })
                    .await
            }))
            .await
    }

    /// The result schema of `sql` and the parameters it expects, without running it.
    pub async fn describe(&self, sql: &str) -> Result<(SchemaRef, SchemaRef)> {
        self.planning
            .run(async {
                let statement =
                    ShoalStatement::parse_with_limits(sql, &self.options.statement_limits)?;
                self.statements.describe(&statement).await
            })
            .await
    }

    /// Plans `sql` again with the same parameters: what a re-run after a lost worker runs.
    pub fn replan(
        self: &Arc<Self>,
        sql: &str,
        parameters: Option<ParamValues>,
        principal: &Principal,
    ) -> Replan {
        self.replan_as(sql, parameters, principal, &StatementAsks::default())
    }

    /// [`Coordinator::replan`], planning as [`Coordinator::plan_as`] does.
    pub fn replan_as(
        self: &Arc<Self>,
        sql: &str,
        parameters: Option<ParamValues>,
        principal: &Principal,
        asks: &StatementAsks,
    ) -> Replan {
        let coordinator = self.clone();
        let sql = sql.to_string();
        let principal = principal.clone();
        let asks = asks.clone();
        Arc::new(move || {
            let coordinator = coordinator.clone();
            let sql = sql.clone();
            let parameters = parameters.clone();
            let principal = principal.clone();
            let asks = asks.clone();
            Box::pin(async move {
                coordinator
                    .plan_as(&sql, parameters, &principal, &asks)
                    .await
            })
        })
    }

    /// Plans, runs and collects `sql` in process (the embedded cluster, tests, the demo),
    /// re-running it when a worker is lost mid-query.
    pub async fn run(self: &Arc<Self>, sql: &str) -> Result<QueryOutput> {
        let planned = self.plan(sql).await?;
        self.executor
            .collect(
                &ids::new_id(),
                planned,
                self.replan(sql, None, &Principal::Open),
            )
            .await
    }

    /// Validates, explains or runs a pipeline, sending its events to `events`.
    pub async fn pipeline(
        &self,
        request: PipelineRequest,
        owner: &Principal,
        events: mpsc::Sender<PipelineEvent>,
    ) -> Result<()> {
        // The pipeline's statements are the principal's: its grants narrow what they read
        // and every site's audit log names it.
        let asker = session::Asker::new(owner, &request.text, self.auth.tables_of(owner));
        asker
            .scope(self.pipelines.run(request, owner.clone(), events))
            .await
    }
}
