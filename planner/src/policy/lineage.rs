//! Where the values leaving a plan node come from: the [`Source`]s of each column, and how
//! the operators the check does not special-case carry them.

use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::ScalarFunctionExpr;
use datafusion::physical_expr::expressions::{Column, Literal};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::union::{InterleaveExec, UnionExec};
use datafusion::scalar::ScalarValue;
use std::collections::BTreeSet;
use std::sync::Arc;

/// How a value that leaves a node came from a table's column.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Via {
    /// The value itself, or a function of it row by row.
    Raw,
    /// A model's output over it.
    Model(String),
    /// A group key of a guarded aggregate.
    GroupKey,
    /// An aggregate over a group.
    Aggregate,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Source {
    pub table: String,
    pub column: String,
    pub via: Via,
}

pub(super) type Origin = BTreeSet<Source>;

/// A node as the check sees it.
pub(super) struct Node {
    pub plan: Arc<dyn ExecutionPlan>,
    /// One origin per output column.
    pub columns: Vec<Origin>,
    /// Tables whose rows this node still emits one by one.
    pub rows_from: BTreeSet<String>,
    /// Whether rows of different inputs were joined below (a group could then count a
    /// table's row many times).
    pub joined: bool,
}

/// Whether `plan` may emit a table's row more than once: a join or cross product of it
/// with anything (even a VALUES list), a union of it with itself, an unnest. A group's
/// count of rows would then not be a count of the table's rows.
pub(super) fn multiplies_rows(plan: &Arc<dyn ExecutionPlan>, children: &[Node]) -> bool {
    let carrying = children.iter().filter(|c| !c.rows_from.is_empty()).count();
    if carrying == 0 {
        return false;
    }
    if plan.downcast_ref::<UnionExec>().is_some() || plan.downcast_ref::<InterleaveExec>().is_some()
    {
        return carrying > 1;
    }
    children.len() > 1 || plan.name() == "UnnestExec"
}

/// The columns of `table` a refused fragment would have sent, for the message.
pub(super) fn leaving_columns(root: &Node, table: &str) -> String {
    let columns: BTreeSet<&str> = root
        .columns
        .iter()
        .flatten()
        .filter(|s| s.table == table)
        .map(|s| s.column.as_str())
        .collect();
    if columns.is_empty() {
        String::new()
    } else {
        format!(
            " (columns {})",
            columns.into_iter().collect::<Vec<_>>().join(", ")
        )
    }
}

/// The input column an aggregate argument is, through casts.
pub(super) fn bare_column(expr: &Arc<dyn PhysicalExpr>) -> Option<usize> {
    if let Some(column) = expr.downcast_ref::<Column>() {
        return Some(column.index());
    }
    if let Some(cast) = expr.downcast_ref::<datafusion::physical_expr::expressions::CastExpr>() {
        return bare_column(cast.expr());
    }
    if let Some(cast) = expr.downcast_ref::<datafusion::physical_expr::expressions::TryCastExpr>() {
        return bare_column(cast.expr());
    }
    None
}

/// A model call's model name: `predict('m', ...)`, `predict_proba('m', ...)`.
pub(super) fn model_call(function: &ScalarFunctionExpr) -> Option<String> {
    if !matches!(function.name(), "predict" | "predict_proba") {
        return None;
    }
    let first = function.args().first()?.downcast_ref::<Literal>()?;
    match first.value() {
        ScalarValue::Utf8(Some(m))
        | ScalarValue::LargeUtf8(Some(m))
        | ScalarValue::Utf8View(Some(m)) => Some(m.clone()),
        _ => None,
    }
}

/// Aggregates whose result is a statistic of the group, never one row's value.
pub(super) fn releases_no_value(name: &str) -> bool {
    const ALLOWED: &[&str] = &[
        "count",
        "sum",
        "avg",
        "mean",
        "var",
        "var_samp",
        "var_pop",
        "var_population",
        "variance",
        "stddev",
        "stddev_samp",
        "stddev_pop",
        "covar",
        "covar_samp",
        "covar_pop",
        "corr",
        "regr_slope",
        "regr_intercept",
        "regr_count",
        "regr_r2",
        "regr_avgx",
        "regr_avgy",
        "regr_sxx",
        "regr_syy",
        "regr_sxy",
        "bool_and",
        "bool_or",
        "grouping",
        "evaluate",
        "compare_models",
    ];
    // The training states of CREATE MODEL (model weights, sufficient statistics).
    ALLOWED.contains(&name) || name.starts_with("__shoal_")
}

/// `origin` as released by an aggregate: raw values and model outputs become `via`.
pub(super) fn released(origin: Origin, via: Via) -> Origin {
    origin
        .into_iter()
        .map(|s| match s.via {
            Via::Raw | Via::Model(_) => Source {
                via: via.clone(),
                ..s
            },
            _ => s,
        })
        .collect()
}

pub(super) fn by_position(width: usize, children: &[Node]) -> Vec<Origin> {
    (0..width)
        .map(|i| {
            children
                .iter()
                .filter_map(|c| c.columns.get(i))
                .flatten()
                .cloned()
                .collect()
        })
        .collect()
}

/// An operator the check does not know: each output column carries the input columns of
/// its name, or every input column when none has it.
pub(super) fn by_name(plan: &Arc<dyn ExecutionPlan>, children: &[Node]) -> Vec<Origin> {
    let everything: Origin = children
        .iter()
        .flat_map(|c| c.columns.iter().flatten())
        .cloned()
        .collect();
    plan.schema()
        .fields()
        .iter()
        .map(|field| {
            let mut origin = Origin::new();
            let mut found = false;
            for child in children {
                for (i, child_field) in child.plan.schema().fields().iter().enumerate() {
                    if child_field.name() == field.name() {
                        found = true;
                        origin.extend(child.columns[i].iter().cloned());
                    }
                }
            }
            if found { origin } else { everything.clone() }
        })
        .collect()
}

pub(super) fn by_name_node(plan: Arc<dyn ExecutionPlan>, children: &[Node]) -> Node {
    Node {
        columns: by_name(&plan, children),
        rows_from: children
            .iter()
            .flat_map(|c| c.rows_from.iter().cloned())
            .collect(),
        joined: children.iter().any(|c| c.joined),
        plan,
    }
}
