//! Nodes that combine or reduce: joins, unions and aggregates.

use super::compile::{
    Compiled, check_columns, df_error, field_names, input, parse_expr, parse_name_or_expr,
};
use super::diagnostic::Diagnostic;
use super::parse::{Node, Pipeline};
use super::spec::Text;
use datafusion::common::{Column, JoinType};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{Expr, col};
use datafusion::prelude::DataFrame;
use std::collections::HashMap;

pub(super) fn join(
    pipeline: &Pipeline,
    node: &Node,
    frames: &HashMap<String, DataFrame>,
    out: &mut Compiled,
) -> Result<DataFrame, Diagnostic> {
    let spec = &pipeline.spec.join.0[node.index].1;
    let key = node.key();
    let left = input(frames, &spec.left)?.clone();
    let right = input(frames, &spec.right)?.clone();
    let on = spec.on.get_ref();
    if on.is_empty() {
        return Err(Diagnostic::new(
            format!("{key}.on"),
            Some(spec.on.span()),
            "a join needs at least one column in 'on'",
        ));
    }
    check_columns(
        &left,
        &format!("{key}.on"),
        on,
        &format!("left input '{}'", spec.left.get_ref()),
    )?;
    check_columns(
        &right,
        &format!("{key}.on"),
        on,
        &format!("right input '{}'", spec.right.get_ref()),
    )?;
    let how = spec.how.as_ref().map_or("inner", |h| h.get_ref().as_str());
    let join_type = match how {
        "inner" => JoinType::Inner,
        "left" => JoinType::Left,
        "right" => JoinType::Right,
        "full" => JoinType::Full,
        other => {
            let span = spec.how.as_ref().map(Text::span);
            return Err(Diagnostic::new(
                format!("{key}.how"),
                span,
                format!("unknown join kind '{other}'"),
            )
            .suggest(other, ["inner", "left", "right", "full"]));
        }
    };
    let on_names: Vec<String> = on.iter().map(|c| c.get_ref().clone()).collect();
    let left_names = field_names(&left);
    let right_names = field_names(&right);
    if let Some(clash) = right_names
        .iter()
        .find(|n| !on_names.contains(n) && left_names.contains(n))
    {
        return Err(Diagnostic::new(
            &key,
            Some(node.span.clone()),
            format!("both inputs have a column '{clash}' that is not a join key"),
        )
        .with_help("rename or drop it on one side with a [features] node (columns / keep)"));
    }
    let (l, r) = ("__left", "__right");
    let fail = |e: DataFusionError| df_error(&key, Some(node.span.clone()), e, &[]);
    let left_keys: Vec<String> = on_names.iter().map(|n| format!("{l}.{n}")).collect();
    let right_keys: Vec<String> = on_names.iter().map(|n| format!("{r}.{n}")).collect();
    let left_refs: Vec<&str> = left_keys.iter().map(String::as_str).collect();
    let right_refs: Vec<&str> = right_keys.iter().map(String::as_str).collect();
    let joined = left
        .alias(l)
        .map_err(fail)?
        .join(
            right.alias(r).map_err(fail)?,
            join_type,
            &left_refs,
            &right_refs,
            None,
        )
        .map_err(fail)?;
    // Keys from the side that always has them; bare names for the nodes downstream.
    let key_side = if join_type == JoinType::Right { r } else { l };
    let mut exprs: Vec<Expr> = on_names
        .iter()
        .map(|n| col(Column::new(Some(key_side), n)).alias(n))
        .collect();
    exprs.extend(
        left_names
            .iter()
            .filter(|n| !on_names.contains(n))
            .map(|n| col(Column::new(Some(l), n)).alias(n)),
    );
    exprs.extend(
        right_names
            .iter()
            .filter(|n| !on_names.contains(n))
            .map(|n| col(Column::new(Some(r), n)).alias(n)),
    );
    out.steps.push(format!(
        "join {}: {how} join of {} and {} on [{}]",
        node.name,
        spec.left.get_ref(),
        spec.right.get_ref(),
        on_names.join(", ")
    ));
    joined.select(exprs).map_err(fail)
}

pub(super) fn union(
    pipeline: &Pipeline,
    node: &Node,
    frames: &HashMap<String, DataFrame>,
    out: &mut Compiled,
) -> Result<DataFrame, Diagnostic> {
    let spec = &pipeline.spec.union.0[node.index].1;
    let key = node.key();
    let inputs = spec.inputs.get_ref();
    if inputs.len() < 2 {
        return Err(Diagnostic::new(
            format!("{key}.inputs"),
            Some(spec.inputs.span()),
            "a union needs at least two inputs",
        ));
    }
    let first = input(frames, &inputs[0])?.clone();
    let expected: Vec<(String, String)> = first
        .schema()
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().to_string()))
        .collect();
    let mut df = first;
    for other in &inputs[1..] {
        let next = input(frames, other)?.clone();
        let found: Vec<(String, String)> = next
            .schema()
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().to_string()))
            .collect();
        if found != expected {
            let show = |cols: &[(String, String)]| {
                cols.iter()
                    .map(|(n, t)| format!("{n} {t}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(Diagnostic::new(
                format!("{key}.inputs"),
                Some(other.span()),
                format!(
                    "'{}' has columns ({}) but '{}' has ({})",
                    other.get_ref(),
                    show(&found),
                    inputs[0].get_ref(),
                    show(&expected)
                ),
            )
            .with_help("union inputs need the same column names and types in the same order"));
        }
        df = df
            .union(next)
            .map_err(|e| df_error(&key, Some(other.span()), e, &[]))?;
    }
    out.steps.push(format!(
        "union {}: {}",
        node.name,
        inputs
            .iter()
            .map(|i| i.get_ref().as_str())
            .collect::<Vec<_>>()
            .join(" + ")
    ));
    Ok(df)
}

pub(super) fn aggregate(
    pipeline: &Pipeline,
    node: &Node,
    frames: &HashMap<String, DataFrame>,
    out: &mut Compiled,
) -> Result<DataFrame, Diagnostic> {
    let spec = &pipeline.spec.aggregate.0[node.index].1;
    let key = node.key();
    let df = input(frames, &spec.input)?.clone();
    let names = field_names(&df);
    let mut groups = Vec::new();
    for (i, g) in spec.group_by.iter().enumerate() {
        groups.push(parse_name_or_expr(
            pipeline,
            &df,
            &format!("{key}.group_by[{i}]"),
            g,
        )?);
    }
    if spec.values.is_empty() {
        return Err(Diagnostic::new(
            format!("{key}.values"),
            Some(node.span.clone()),
            "an aggregate needs at least one value",
        )
        .with_help("values = { n = \"count(*)\", avg_risk = \"avg(risk)\" }"));
    }
    let mut values = Vec::new();
    for (name, text) in spec.values.iter() {
        let vkey = format!("{key}.values.{}", name.get_ref());
        values.push(parse_expr(pipeline, &df, &vkey, text)?.alias(name.get_ref()));
    }
    let mut result = df
        .aggregate(groups, values)
        .map_err(|e| df_error(&format!("{key}.values"), Some(node.span.clone()), e, &names))?;
    if !spec.order_by.is_empty() {
        let mut sorts = Vec::new();
        let out_names = field_names(&result);
        for o in &spec.order_by {
            let text = o.get_ref().trim();
            let (column, descending) = match text.rsplit_once(char::is_whitespace) {
                Some((c, dir)) if dir.eq_ignore_ascii_case("desc") => (c.trim(), true),
                Some((c, dir)) if dir.eq_ignore_ascii_case("asc") => (c.trim(), false),
                _ => (text, false),
            };
            if !out_names.iter().any(|n| n == column) {
                return Err(Diagnostic::new(
                    format!("{key}.order_by"),
                    Some(o.span()),
                    format!("the aggregate has no column '{column}'"),
                )
                .suggest(column, out_names.iter().map(String::as_str)));
            }
            sorts.push(col(Column::from_name(column)).sort(!descending, false));
        }
        result = result
            .sort(sorts)
            .map_err(|e| df_error(&key, Some(node.span.clone()), e, &names))?;
    }
    out.steps.push(format!(
        "aggregate {}: group by [{}], {} value(s) (partial aggregates on the workers, merged on the coordinator)",
        node.name,
        spec.group_by.iter().map(|g| g.get_ref().as_str()).collect::<Vec<_>>().join(", "),
        spec.values.0.len()
    ));
    Ok(result)
}
