//! A `[features.*]` node: SQL expression columns, then named feature operations (with their
//! statistics fitted by a distributed pre-pass on runs), then the kept columns.

use super::compile::Mode;
use super::compile::{Compiled, check_columns, df_error, field_names, input, parse_expr};
use super::diagnostic::Diagnostic;
use super::feature_ops::{self, Fitting};
use super::parse::{Node, Pipeline};
use datafusion::common::Column;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{Expr, col};
use datafusion::prelude::{DataFrame, SessionContext};
use std::collections::HashMap;

pub(super) async fn features(
    pipeline: &Pipeline,
    ctx: &SessionContext,
    node: &Node,
    frames: &HashMap<String, DataFrame>,
    mode: &Mode,
    out: &mut Compiled,
) -> Result<DataFrame, Diagnostic> {
    let spec = &pipeline.spec.features.0[node.index].1;
    let key = node.key();
    let input_df = input(frames, &spec.input)?.clone();
    let input_names = field_names(&input_df);
    // 1. New columns from SQL expressions over the input (one with an input column's name
    // replaces it).
    let redefined: Vec<&str> = spec
        .columns
        .iter()
        .map(|(n, _)| n.get_ref().as_str())
        .collect();
    let mut exprs: Vec<Expr> = input_names
        .iter()
        .filter(|n| !redefined.contains(&n.as_str()))
        .map(|n| col(Column::from_name(n)))
        .collect();
    let mut new_columns: Vec<String> = Vec::new();
    for (name, text) in spec.columns.iter() {
        let ckey = format!("{key}.columns.{}", name.get_ref());
        exprs.push(parse_expr(pipeline, &input_df, &ckey, text)?.alias(name.get_ref()));
        new_columns.push(name.get_ref().clone());
    }
    let with_columns = input_df
        .clone()
        .select(exprs)
        .map_err(|e| df_error(&key, Some(node.span.clone()), e, &input_names))?;
    // 2. Named operations, on the input and the new columns.
    let fitting = match mode {
        Mode::Run { .. } => Fitting::Run,
        _ => Fitting::Placeholder,
    };
    let mut checked = Vec::new();
    for (i, op) in spec.ops.iter().enumerate() {
        let okey = format!("{key}.ops[{i}]");
        let c = feature_ops::check(op.get_ref(), &okey)?;
        check_columns(
            &with_columns,
            &format!("{okey}.column"),
            std::slice::from_ref(&c.op.column),
            &format!("the input of '{}'", node.name),
        )?;
        checked.push(c);
    }
    let mut needed = Vec::new();
    for c in &checked {
        needed.push(feature_ops::statistics_needed(c)?);
    }
    let all: Vec<Expr> = needed
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, e)| e.clone().alias(format!("stat_{i}")))
        .collect();
    let mut statistics: Vec<Option<f64>> = vec![Some(0.0); all.len()];
    if !all.is_empty() {
        if fitting == Fitting::Run {
            let failed = |e: DataFusionError| {
                Diagnostic::new(
                    key.clone(),
                    Some(node.span.clone()),
                    format!("fitting feature statistics: {e}"),
                )
            };
            let batches = with_columns
                .clone()
                .aggregate(vec![], all)
                .map_err(failed)?
                .collect()
                .await
                .map_err(failed)?;
            if let Some(batch) = batches.iter().find(|b| b.num_rows() == 1) {
                statistics = feature_ops::read_statistics(batch.columns());
            }
        } else {
            // Stand-ins that keep every kernel's parameters valid (std 1, range 0..1).
            statistics = (0..all.len()).map(|i| Some((i % 2) as f64)).collect();
        }
    }
    let op_outputs: Vec<&str> = checked.iter().map(|c| c.output.as_str()).collect();
    let mut op_exprs: Vec<Expr> = field_names(&with_columns)
        .iter()
        .filter(|n| !op_outputs.contains(&n.as_str()))
        .map(|n| col(Column::from_name(n)))
        .collect();
    let mut offset = 0;
    for (c, stats_of_op) in checked.iter().zip(&needed) {
        let stats = &statistics[offset..offset + stats_of_op.len()];
        offset += stats_of_op.len();
        let vocabulary = if matches!(c.name, "one_hot" | "ordinal") {
            feature_ops::vocabulary(c, &with_columns, fitting).await?
        } else {
            Vec::new()
        };
        if fitting == Fitting::Run
            && let Some(line) = feature_ops::describe_fit(c, stats, &vocabulary)
        {
            out.fitted.push(format!("{}: {line}", node.name));
        }
        op_exprs.push(feature_ops::expression(ctx, c, stats, &vocabulary)?);
        new_columns.push(c.output.clone());
    }
    let with_ops = with_columns
        .select(op_exprs)
        .map_err(|e| df_error(&key, Some(node.span.clone()), e, &input_names))?;
    // 3. Keep the chosen input columns and every new one.
    let kept: Vec<String> = match &spec.keep {
        Some(keep) => {
            check_columns(
                &input_df,
                &format!("{key}.keep"),
                keep,
                &format!("the input of '{}'", node.name),
            )?;
            keep.iter().map(|k| k.get_ref().clone()).collect()
        }
        None => input_names.clone(),
    };
    let final_columns: Vec<Expr> = kept
        .iter()
        .filter(|k| !new_columns.contains(k))
        .chain(new_columns.iter())
        .map(|n| col(Column::from_name(n)))
        .collect();
    out.steps.push(format!(
        "features {}: {} new column(s) [{}]{}",
        node.name,
        new_columns.len(),
        new_columns.join(", "),
        if needed.iter().any(|n| !n.is_empty())
            || checked
                .iter()
                .any(|c| matches!(c.name, "one_hot" | "ordinal") && c.op.vocabulary.is_none())
        {
            " (statistics fitted by a distributed pre-pass before the run)"
        } else {
            ""
        }
    ));
    with_ops
        .select(final_columns)
        .map_err(|e| df_error(&key, Some(node.span.clone()), e, &input_names))
}
