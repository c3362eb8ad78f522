//! The group-size guard: the aggregate a site releases a restricted table through, counted.
//!
//! The guard runs the aggregate with one more column, the number of the table's rows in
//! each group, over all partitions of the task, adds the counts of each group key across
//! them (a group may be split over partitions, and DataFusion may skip partial aggregation
//! and emit a group's rows one by one), and then either fails the task naming the table
//! and the rule, or drops the small groups and counts them. Only then does anything leave.
//!
//! It stands in for the aggregate it wraps (same name, properties and children; its metrics
//! are the counting aggregate's plus `suppressed_groups`; see [`crate::stand_in`]).

use super::refusal::Refusal;
use super::rules::SmallGroups;
use crate::stand_in::inner_with_children;
use datafusion::arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::Int64Type;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::functions_aggregate::count::count_udaf;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateExprBuilder;
use datafusion::physical_expr::expressions::lit;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use futures::TryStreamExt;
use std::collections::HashMap;
use std::sync::Arc;

/// How a guarded aggregate is released under a table's `noise`.
#[derive(Debug, Clone, PartialEq)]
pub struct NoisePlan {
    /// Spent by this release (split evenly over the noised values and the group count
    /// that decides which groups are released).
    pub epsilon: f64,
    /// Input column -> (low, high): clamped before the aggregate sees it, so one row moves
    /// a sum by at most max(|low|, |high|).
    pub clamps: std::collections::BTreeMap<usize, (f64, f64)>,
    /// Output columns that get noise: (column, sensitivity, is a count).
    pub releases: Vec<(usize, f64, bool)>,
}

impl NoisePlan {
    /// Epsilon of each noised quantity: the releases and the group count.
    fn epsilon_each(&self) -> f64 {
        self.epsilon / (self.releases.len() + 1) as f64
    }
}

/// The size rule of one guarded aggregate.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupRule {
    /// Noise on what is released, when the table's policy asks for it.
    pub noise: Option<NoisePlan>,
    pub site: String,
    /// The table whose rule applies (the strictest of those the aggregate reads).
    pub table: String,
    pub min_rows: u64,
    pub small_groups: SmallGroups,
}

type Released = Result<Arc<Vec<Vec<RecordBatch>>>, Arc<DataFusionError>>;

#[derive(Debug)]
pub struct GroupGuardExec {
    /// The aggregate as planned: what the guard presents itself as.
    original: Arc<dyn ExecutionPlan>,
    /// The same aggregate with the group's row count as its last column.
    counting: Arc<dyn ExecutionPlan>,
    rule: GroupRule,
    /// Output columns that make a group's key (group expressions and grouping id).
    key_columns: usize,
    /// The counting aggregate's column holding each group's row count.
    count_column: usize,
    /// Whether that column was added by the guard (and is removed before release).
    added_count: bool,
    /// Every partition's released batches, computed once for all of them.
    released: Arc<tokio::sync::OnceCell<Released>>,
    metrics: ExecutionPlanMetricsSet,
    suppressed: Count,
}

/// Name of the row-count column the guard adds (and removes before anything leaves).
const GROUP_ROWS: &str = "__shoal_group_rows";

impl GroupGuardExec {
    /// Guards `plan`, an [`AggregateExec`] over raw rows of a restricted table.
    pub fn wrap(plan: Arc<dyn ExecutionPlan>, rule: GroupRule) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(aggregate) = plan.downcast_ref::<AggregateExec>() else {
            return datafusion::common::internal_err!("a group guard wraps an AggregateExec");
        };
        let key_columns = aggregate.group_expr().num_group_exprs();
        let clamps = rule.noise.as_ref().is_some_and(|n| !n.clamps.is_empty());
        let existing = row_count_column(aggregate, key_columns)?;
        let (counting, count_column, added_count): (Arc<dyn ExecutionPlan>, usize, bool) =
            match existing {
                // The statement counts its rows itself (`count(*)`): that column is the
                // group's size, and the aggregate runs as planned.
                Some(column) if !clamps => (plan.clone(), column, false),
                _ => {
                    let input = match &rule.noise {
                        Some(noise) if clamps => clamped(aggregate.input().clone(), noise)?,
                        _ => aggregate.input().clone(),
                    };
                    let mut functions = aggregate.aggr_expr().to_vec();
                    let mut filters = aggregate.filter_expr().to_vec();
                    if existing.is_none() {
                        let count = AggregateExprBuilder::new(count_udaf(), vec![lit(1i64)])
                            .schema(input.schema())
                            .alias(GROUP_ROWS)
                            .build()?;
                        functions.push(Arc::new(count));
                        filters.push(None);
                    }
                    let counting = AggregateExec::try_new(
                        *aggregate.mode(),
                        aggregate.group_expr().clone(),
                        functions,
                        filters,
                        input,
                        aggregate.input_schema(),
                    )?;
                    let width = counting.schema().fields().len();
                    let column = existing.unwrap_or(width - 1);
                    (Arc::new(counting), column, existing.is_none())
                }
            };
        let metrics = ExecutionPlanMetricsSet::new();
        let suppressed = MetricBuilder::new(&metrics).global_counter("suppressed_groups");
        Ok(Arc::new(Self {
            original: plan,
            counting,
            rule,
            key_columns,
            count_column,
            added_count,
            released: Arc::new(tokio::sync::OnceCell::new()),
            metrics,
            suppressed,
        }))
    }

    /// Groups this guard dropped so far.
    pub fn suppressed_groups(&self) -> usize {
        self.suppressed.value()
    }
}

crate::display_as_stood_in!(GroupGuardExec, original);

impl ExecutionPlan for GroupGuardExec {
    crate::stand_in_for!(original);

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Self::wrap(
            inner_with_children(&self.original, children)?,
            self.rule.clone(),
        )
    }

    fn metrics(&self) -> Option<MetricsSet> {
        let mut set = self.counting.metrics().unwrap_or_default();
        for metric in self.metrics.clone_inner().iter() {
            set.push(metric.clone());
        }
        Some(set)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let released = self.released.clone();
        let counting = self.counting.clone();
        let rule = self.rule.clone();
        let columns = Columns {
            keys: self.key_columns,
            count: self.count_column,
            added_count: self.added_count,
        };
        let suppressed = self.suppressed.clone();
        let batches = async move {
            let all = released
                .get_or_init(|| async move {
                    release(counting, context, &rule, columns, &suppressed)
                        .await
                        .map(Arc::new)
                        .map_err(Arc::new)
                })
                .await
                .clone()
                .map_err(DataFusionError::Shared)?;
            let mine = all.get(partition).cloned().unwrap_or_default();
            Ok::<_, DataFusionError>(futures::stream::iter(mine.into_iter().map(Ok)))
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            futures::stream::once(batches).try_flatten(),
        )))
    }
}

/// Runs the counting aggregate on every partition, then keeps the groups the rule allows,
/// without the count column.
async fn release(
    counting: Arc<dyn ExecutionPlan>,
    context: Arc<TaskContext>,
    rule: &GroupRule,
    columns: Columns,
    suppressed: &Count,
) -> Result<Vec<Vec<RecordBatch>>> {
    let key_columns = columns.keys;
    let partitions = counting.output_partitioning().partition_count();
    let reservation = MemoryConsumer::new("GroupGuardExec").register(context.memory_pool());
    // Each partition on a task of its own (as they would run unguarded); the set is
    // aborted with the guard if the statement stops.
    let mut running = tokio::task::JoinSet::new();
    for partition in 0..partitions {
        let stream = counting.execute(partition, context.clone())?;
        running.spawn(async move { (partition, stream.try_collect::<Vec<_>>().await) });
    }
    let mut collected: Vec<Vec<RecordBatch>> = vec![Vec::new(); partitions];
    while let Some(joined) = running.join_next().await {
        let (partition, batches) =
            joined.map_err(|e| DataFusionError::ExecutionJoin(Box::new(e)))?;
        let batches = batches?;
        for batch in &batches {
            reservation.try_grow(batch.get_array_memory_size())?;
        }
        collected[partition] = batches;
    }
    // Each row's group key, encoded once per batch for both the totals and the filter.
    let keyed: Vec<Vec<Keyed>> = collected
        .into_iter()
        .map(|batches| {
            batches
                .into_iter()
                .map(|batch| {
                    let keys = group_keys(&batch, key_columns)?;
                    Ok((batch, keys))
                })
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<_>>()?;
    let mut totals = group_totals(&keyed, columns.count);
    if let Some(noise) = &rule.noise {
        // Which groups exist is itself released: decide on a noisy count (Laplace partition
        // selection), never the true one.
        let scale = 1.0 / noise.epsilon_each();
        for rows in totals.values_mut() {
            let noisy = shoal_operators::privacy::laplace_count(*rows as i64, scale)
                .map_err(DataFusionError::Execution)?;
            *rows = noisy.max(0) as u64;
        }
    }
    let small = totals
        .values()
        .filter(|rows| **rows < rule.min_rows)
        .count();
    if small > 0 && rule.small_groups == SmallGroups::Refuse {
        return Err(Refusal {
            site: rule.site.clone(),
            table: rule.table.clone(),
            rule: format!("releases only groups of at least {} rows", rule.min_rows),
            detail: format!(
                "{small} group(s) of the statement would hold fewer of its rows (small_groups = \"refuse\")"
            ),
            key: "min_group_rows".into(),
        }
        .into());
    }
    suppressed.add(small);
    let mut out = Vec::with_capacity(keyed.len());
    for batches in keyed {
        let mut kept = Vec::with_capacity(batches.len());
        for (batch, keys) in batches {
            let keep: BooleanArray = keys
                .iter()
                .map(|key| Some(totals.get(key).is_some_and(|rows| *rows >= rule.min_rows)))
                .collect();
            let mut batch = filter_record_batch(&batch, &keep)?;
            if let Some(noise) = &rule.noise {
                batch = with_noise(batch, noise)?;
            }
            if columns.added_count {
                batch = batch.project(&(0..batch.num_columns() - 1).collect::<Vec<_>>())?;
            }
            if batch.num_rows() > 0 {
                kept.push(batch);
            }
        }
        out.push(kept);
    }
    Ok(out)
}

/// The aggregate's input with the noised columns clamped to their bounds (same names and
/// types).
fn clamped(input: Arc<dyn ExecutionPlan>, noise: &NoisePlan) -> Result<Arc<dyn ExecutionPlan>> {
    use datafusion::arrow::datatypes::DataType;
    use datafusion::logical_expr::Operator;
    use datafusion::physical_expr::expressions::{BinaryExpr, CaseExpr, CastExpr, Column};
    let schema = input.schema();
    let mut exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = Vec::new();
    for (index, field) in schema.fields().iter().enumerate() {
        let column: Arc<dyn PhysicalExpr> = Arc::new(Column::new(field.name(), index));
        let expr = match noise.clamps.get(&index) {
            None => column,
            Some((low, high)) => {
                let value: Arc<dyn PhysicalExpr> =
                    Arc::new(CastExpr::new(column, DataType::Float64, None));
                let (low, high) = (lit(*low), lit(*high));
                let below = Arc::new(BinaryExpr::new(value.clone(), Operator::Lt, low.clone()));
                let above = Arc::new(BinaryExpr::new(value.clone(), Operator::Gt, high.clone()));
                let clamp =
                    CaseExpr::try_new(None, vec![(below, low), (above, high)], Some(value))?;
                Arc::new(CastExpr::new(
                    Arc::new(clamp),
                    field.data_type().clone(),
                    None,
                ))
            }
        };
        exprs.push((expr, field.name().clone()));
    }
    Ok(Arc::new(
        datafusion::physical_plan::projection::ProjectionExec::try_new(exprs, input)?,
    ))
}

/// `batch` with Laplace noise on the plan's release columns, each value its own draw
/// (a row of the table reaches one partial row, so draws on different rows compose in
/// parallel). Counts stay integers of at least 0.
fn with_noise(batch: RecordBatch, noise: &NoisePlan) -> Result<RecordBatch> {
    use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array};
    use datafusion::arrow::compute::cast;
    use datafusion::arrow::datatypes::{DataType, Float64Type};
    let epsilon = noise.epsilon_each();
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    for (index, sensitivity, is_count) in &noise.releases {
        let Some(original) = columns.get(*index).cloned() else {
            continue;
        };
        let scale = sensitivity / epsilon;
        let noisy: ArrayRef = if *is_count {
            let counts = cast(&original, &DataType::Int64)?;
            let counts = counts.as_primitive::<Int64Type>();
            let values = counts
                .iter()
                .map(|v| {
                    v.map(|v| shoal_operators::privacy::laplace_count(v, scale).map(|n| n.max(0)))
                        .transpose()
                })
                .collect::<Result<Int64Array, String>>()
                .map_err(DataFusionError::Execution)?;
            Arc::new(values)
        } else {
            let sums = cast(&original, &DataType::Float64)?;
            let sums = sums.as_primitive::<Float64Type>();
            let values = sums
                .iter()
                .map(|v| {
                    v.map(|v| shoal_operators::privacy::laplace(v, scale))
                        .transpose()
                })
                .collect::<Result<Float64Array, String>>()
                .map_err(DataFusionError::Execution)?;
            Arc::new(values)
        };
        columns[*index] = cast(&noisy, original.data_type())?;
    }
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

/// Where the guard finds what it needs in the counting aggregate's output.
#[derive(Debug, Clone, Copy)]
struct Columns {
    keys: usize,
    count: usize,
    added_count: bool,
}

/// The output column of a plain `count(*)` of `aggregate` (no DISTINCT, no FILTER), whose
/// value (or partial state) is each group's row count.
fn row_count_column(aggregate: &AggregateExec, key_columns: usize) -> Result<Option<usize>> {
    let partial = matches!(
        aggregate.mode().output_mode(),
        datafusion::physical_plan::aggregates::AggregateOutputMode::Partial
    );
    let mut column = key_columns;
    for (function, filter) in aggregate.aggr_expr().iter().zip(aggregate.filter_expr()) {
        let width = if partial {
            function.state_fields()?.len()
        } else {
            1
        };
        let counts_rows = function.fun().name() == "count"
            && !function.is_distinct()
            && filter.is_none()
            && function.expressions().iter().all(|e| {
                e.downcast_ref::<datafusion::physical_expr::expressions::Literal>()
                    .is_some_and(|l| !l.value().is_null())
            });
        if counts_rows && width == 1 {
            return Ok(Some(column));
        }
        column += width;
    }
    Ok(None)
}

/// A batch of the counting aggregate's output with each row's encoded group key.
type Keyed = (RecordBatch, Vec<Vec<u8>>);

/// Rows of the table in each group, over all partitions.
fn group_totals(keyed: &[Vec<Keyed>], count_column: usize) -> HashMap<Vec<u8>, u64> {
    let mut totals: HashMap<Vec<u8>, u64> = HashMap::new();
    for (batch, keys) in keyed.iter().flatten() {
        let counts = batch.column(count_column).as_primitive::<Int64Type>();
        for (row, key) in keys.iter().enumerate() {
            let rows = if counts.is_null(row) {
                0
            } else {
                counts.value(row).max(0) as u64
            };
            *totals.entry(key.clone()).or_default() += rows;
        }
    }
    totals
}

/// Each row's group key, encoded (a global aggregate has one, empty, key).
fn group_keys(batch: &RecordBatch, key_columns: usize) -> Result<Vec<Vec<u8>>> {
    if key_columns == 0 {
        return Ok(vec![Vec::new(); batch.num_rows()]);
    }
    let columns = &batch.columns()[..key_columns];
    let converter = RowConverter::new(
        columns
            .iter()
            .map(|c| SortField::new(c.data_type().clone()))
            .collect(),
    )?;
    let rows = converter.convert_columns(columns)?;
    Ok(rows.iter().map(|row| row.as_ref().to_vec()).collect())
}
