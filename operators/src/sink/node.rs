//! The logical sink node a pipeline's `local_parquet` and `object_store` sinks compile to, and the extension
//! planner that turns it into [`ParquetSinkExec`] below the distributed planner (so the
//! sink lands in the workers' stage, next to the scan).

use super::exec::{ParquetSinkExec, manifest_schema};
use super::staging::SinkTarget;
use async_trait::async_trait;
use datafusion::common::{DFSchema, DFSchemaRef, Result, plan_err};
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{
    Expr, LogicalPlan, UserDefinedLogicalNode, UserDefinedLogicalNodeCore,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use std::cmp::Ordering;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ParquetSinkNode {
    pub input: LogicalPlan,
    pub path: String,
    pub run_id: String,
    pub target: SinkTarget,
    schema: DFSchemaRef,
}

impl ParquetSinkNode {
    pub fn new(
        input: LogicalPlan,
        path: String,
        run_id: String,
        target: SinkTarget,
    ) -> Result<Self> {
        let schema = Arc::new(DFSchema::try_from(manifest_schema().as_ref().clone())?);
        Ok(Self {
            input,
            path,
            run_id,
            target,
            schema,
        })
    }
}

impl PartialOrd for ParquetSinkNode {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        (&self.path, &self.run_id, self.target).partial_cmp(&(
            &other.path,
            &other.run_id,
            other.target,
        ))
    }
}

impl UserDefinedLogicalNodeCore for ParquetSinkNode {
    fn name(&self) -> &str {
        "ParquetSink"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        vec![]
    }

    fn fmt_for_explain(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "ParquetSink: path={}, run={}, kind={}",
            self.path,
            self.run_id,
            self.target.kind_name()
        )
    }

    fn with_exprs_and_inputs(
        &self,
        _exprs: Vec<Expr>,
        mut inputs: Vec<LogicalPlan>,
    ) -> Result<Self> {
        let Some(input) = inputs.pop() else {
            return plan_err!("ParquetSink has one input");
        };
        Self::new(input, self.path.clone(), self.run_id.clone(), self.target)
    }
}

/// Plans [`ParquetSinkNode`]; the coordinator's sink has no site (it only encodes it).
#[derive(Debug, Default)]
pub struct SinkPlanner;

#[async_trait]
impl ExtensionPlanner for SinkPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        _session: &dyn datafusion::catalog::Session,
        _planning_ctx: &PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(sink) = node.as_any().downcast_ref::<ParquetSinkNode>() else {
            return Ok(None);
        };
        let [input] = physical_inputs else {
            return plan_err!("ParquetSink has one input");
        };
        Ok(Some(Arc::new(ParquetSinkExec::new(
            input.clone(),
            sink.path.clone(),
            sink.run_id.clone(),
            sink.target,
            None,
        )?)))
    }
}

/// DataFusion's planner with shoal's extension nodes; set it before the distributed planner
/// wraps the query planner.
#[derive(Debug, Default)]
pub struct ShoalQueryPlanner;

#[async_trait]
impl QueryPlanner for ShoalQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session_state: &dyn datafusion::catalog::Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(SinkPlanner)])
            .create_physical_plan(logical_plan, session_state)
            .await
    }
}
