//! A parsed pipeline into DataFusion DataFrames: one per sink, built with the same session
//! (functions, catalog, distributed planner) the SQL path uses, so a pipeline gets the same
//! locality, distribution and checks as the equivalent query.

use super::diagnostic::Diagnostic;
use super::feature_ops::{self, Fitting};
use super::parse::{Node, NodeKind, Pipeline};
use super::spec::Text;
use datafusion::common::{Column, JoinType};
use datafusion::error::DataFusionError;
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{Expr, Extension, LogicalPlan, ScalarUDF, col, lit};
use datafusion::prelude::{DataFrame, SessionContext};
use shoal_operators::sink::LocalParquetSinkNode;
use shoal_operators::sink::staging::{check_run_id, check_sink_path};
use shoal_operators::{PredictKind, PredictUdf};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

/// What compiling is for: validation and explain never run anything (fitted statistics are
/// stood in for); a run fits them on the cluster and names its output by run id.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    Validate,
    Explain,
    Run { run_id: String },
}

#[derive(Debug, Clone, PartialEq)]
pub enum SinkKind {
    /// Rows streamed back to the client.
    Client,
    /// Parquet written on the workers under `path`; only manifests come back.
    LocalParquet { path: String },
}

pub struct CompiledOutput {
    pub sink: String,
    pub kind: SinkKind,
    pub dataframe: DataFrame,
}

#[derive(Default)]
pub struct Compiled {
    pub outputs: Vec<CompiledOutput>,
    /// One line per node: what it does.
    pub steps: Vec<String>,
    /// What the pre-passes fitted.
    pub fitted: Vec<String>,
    pub warnings: Vec<String>,
}

/// Compiles every node in order; stops at the first node with errors.
pub async fn compile(
    pipeline: &Pipeline,
    ctx: &SessionContext,
    mode: &Mode,
) -> Result<Compiled, Vec<Diagnostic>> {
    let mut frames: HashMap<String, DataFrame> = HashMap::new();
    let mut out = Compiled::default();
    for node in &pipeline.order {
        let built = match node.kind {
            NodeKind::Source => source(pipeline, ctx, node, &mut out).await,
            NodeKind::Features => features(pipeline, ctx, node, &frames, mode, &mut out).await,
            NodeKind::Model => model(pipeline, ctx, node, &frames, &mut out),
            NodeKind::Join => join(pipeline, node, &frames, &mut out),
            NodeKind::Union => union(pipeline, node, &frames, &mut out),
            NodeKind::Aggregate => aggregate(pipeline, node, &frames, &mut out),
            NodeKind::Sink => sink(pipeline, ctx, node, &frames, mode, &mut out),
        };
        frames.insert(node.name.clone(), built.map_err(|d| vec![d])?);
    }
    Ok(out)
}

fn input<'a>(
    frames: &'a HashMap<String, DataFrame>,
    name: &Text,
) -> Result<&'a DataFrame, Diagnostic> {
    frames.get(name.get_ref()).ok_or_else(|| {
        Diagnostic::new(
            "",
            Some(name.span()),
            format!("node '{}' was not built", name.get_ref()),
        )
    })
}

fn field_names(df: &DataFrame) -> Vec<String> {
    df.schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect()
}

/// A DataFusion error at `key`; a missing column gets the nearest existing one suggested.
fn df_error(
    key: &str,
    span: Option<Range<usize>>,
    e: DataFusionError,
    names: &[String],
) -> Diagnostic {
    let message = e.strip_backtrace().replace('\n', " ");
    let missing = message
        .split("No field named ")
        .nth(1)
        .and_then(|rest| {
            rest.split(|c: char| c == '.' && !rest.starts_with('"') || c == ' ')
                .next()
        })
        .map(|n| n.trim_matches(|c| c == '"' || c == '.').to_string());
    let diagnostic = Diagnostic::new(key, span, message);
    match missing {
        Some(name) => diagnostic.suggest(&name, names.iter().map(String::as_str)),
        None => diagnostic,
    }
}

/// Checks that every listed column exists in `df`, naming the nearest one if not.
fn check_columns(
    df: &DataFrame,
    key: &str,
    columns: &[Text],
    what: &str,
) -> Result<(), Diagnostic> {
    let names = field_names(df);
    for c in columns {
        if !names.iter().any(|n| n == c.get_ref()) {
            return Err(Diagnostic::new(
                key,
                Some(c.span()),
                format!("{what} has no column '{}'", c.get_ref()),
            )
            .suggest(c.get_ref(), names.iter().map(String::as_str)));
        }
    }
    Ok(())
}

fn parse_expr(
    pipeline: &Pipeline,
    df: &DataFrame,
    key: &str,
    text: &Text,
) -> Result<Expr, Diagnostic> {
    let sql = pipeline.substitute(text, key)?;
    df.parse_sql_expr(&sql)
        .map_err(|e| df_error(key, Some(text.span()), e, &field_names(df)))
}

fn table_names(ctx: &SessionContext) -> Vec<String> {
    let options = ctx.state().config_options().catalog.clone();
    ctx.catalog(&options.default_catalog)
        .and_then(|c| c.schema(&options.default_schema))
        .map(|s| s.table_names())
        .unwrap_or_default()
}

async fn source(
    pipeline: &Pipeline,
    ctx: &SessionContext,
    node: &Node,
    out: &mut Compiled,
) -> Result<DataFrame, Diagnostic> {
    let spec = &pipeline.spec.source.0[node.index].1;
    let key = node.key();
    let table = pipeline.substitute(&spec.table, &format!("{key}.table"))?;
    let mut df = match ctx.table(table.as_str()).await {
        Ok(df) => df,
        Err(_) => {
            let names = table_names(ctx);
            return Err(Diagnostic::new(
                format!("{key}.table"),
                Some(spec.table.span()),
                format!("no table named '{table}'"),
            )
            .suggest(&table, names.iter().map(String::as_str)));
        }
    };
    let mut step = format!("source {}: table {table}", node.name);
    if let Some(columns) = &spec.columns {
        check_columns(
            &df,
            &format!("{key}.columns"),
            columns,
            &format!("table '{table}'"),
        )?;
        let names: Vec<&str> = columns.iter().map(|c| c.get_ref().as_str()).collect();
        df = df
            .select_columns(&names)
            .map_err(|e| df_error(&key, Some(node.span.clone()), e, &[]))?;
        step.push_str(&format!(", columns [{}]", names.join(", ")));
    }
    if let Some(filter) = &spec.filter {
        let fkey = format!("{key}.filter");
        let predicate = parse_expr(pipeline, &df, &fkey, filter)?;
        step.push_str(&format!(", filter {predicate}"));
        let names = field_names(&df);
        df = df
            .filter(predicate)
            .map_err(|e| df_error(&fkey, Some(filter.span()), e, &names))?;
    }
    out.steps.push(step);
    Ok(df)
}

async fn features(
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

fn model(
    pipeline: &Pipeline,
    ctx: &SessionContext,
    node: &Node,
    frames: &HashMap<String, DataFrame>,
    out: &mut Compiled,
) -> Result<DataFrame, Diagnostic> {
    let spec = &pipeline.spec.model.0[node.index].1;
    let key = node.key();
    let df = input(frames, &spec.input)?.clone();
    let model_name = pipeline.substitute(&spec.model, &format!("{key}.model"))?;
    let registered = ctx
        .udf(PredictKind::Predict.function_name())
        .map_err(|e| Diagnostic::new(&key, None, e.to_string()))?;
    let Some(predict) = registered.inner().downcast_ref::<PredictUdf>() else {
        return Err(Diagnostic::new(
            &key,
            None,
            "this session has no shoal predict function",
        ));
    };
    let provider = predict.provider().clone();
    let known: Vec<String> = provider.list().into_iter().map(|m| m.name).collect();
    if !known.contains(&model_name) {
        return Err(Diagnostic::new(
            format!("{key}.model"),
            Some(spec.model.span()),
            format!("no model named '{model_name}' in the registry"),
        )
        .suggest(&model_name, known.iter().map(String::as_str)));
    }
    if spec.predict.is_none() && spec.predict_proba.is_none() {
        return Err(Diagnostic::new(
            &key,
            Some(node.span.clone()),
            "a model node needs an output",
        )
        .with_help("add predict = \"COLUMN\" (label or value) and/or predict_proba = \"COLUMN\""));
    }
    let device = match &spec.device {
        None => "cpu".to_string(),
        Some(d) => {
            let device = d.get_ref().as_str();
            let cuda = device
                .strip_prefix("cuda:")
                .is_some_and(|n| n.parse::<u32>().is_ok());
            if device != "cpu" && !cuda {
                return Err(Diagnostic::new(
                    format!("{key}.device"),
                    Some(d.span()),
                    format!("unknown device '{device}'"),
                )
                .with_help("use \"cpu\" or \"cuda:N\" (N = GPU index)"));
            }
            if cuda {
                out.warnings.push(format!(
                    "model node '{}': device {device} requested, but this build of shoal runs ONNX Runtime's CPU execution provider only; running on CPU",
                    node.name
                ));
            }
            "cpu".to_string()
        }
    };
    let batch_rows = match &spec.batch_size {
        Some(b) if *b.get_ref() == 0 || *b.get_ref() > 10_000_000 => {
            return Err(Diagnostic::new(
                format!("{key}.batch_size"),
                Some(b.span()),
                "batch_size must be from 1 to 10000000",
            ));
        }
        b => b.as_ref().map(|b| *b.get_ref() as usize),
    };
    let mut args = vec![lit(model_name.as_str())];
    for (i, f) in spec.features.get_ref().iter().enumerate() {
        args.push(parse_expr(
            pipeline,
            &df,
            &format!("{key}.features[{i}]"),
            f,
        )?);
    }
    let names = field_names(&df);
    let mut exprs: Vec<Expr> = names.iter().map(|n| col(Column::from_name(n))).collect();
    for (kind, output) in [
        (PredictKind::Predict, &spec.predict),
        (PredictKind::PredictProba, &spec.predict_proba),
    ] {
        if let Some(output) = output {
            let udf = ScalarUDF::new_from_impl(
                PredictUdf::new(kind, provider.clone(), Default::default())
                    .with_batch_rows(batch_rows),
            );
            let call = Expr::ScalarFunction(ScalarFunction::new_udf(Arc::new(udf), args.clone()));
            exprs.push(call.alias(output.get_ref()));
        }
    }
    out.steps.push(format!(
        "model {}: {model_name} on {} feature(s) -> {}, {device}{}",
        node.name,
        args.len() - 1,
        [spec.predict.as_ref(), spec.predict_proba.as_ref()]
            .into_iter()
            .flatten()
            .map(|o| o.get_ref().as_str())
            .collect::<Vec<_>>()
            .join(", "),
        batch_rows
            .map(|b| format!(", {b} rows per run"))
            .unwrap_or_default()
    ));
    df.select(exprs).map_err(|e| {
        df_error(
            &format!("{key}.features"),
            Some(spec.features.span()),
            e,
            &names,
        )
    })
}

fn join(
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

fn union(
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

fn aggregate(
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
        groups.push(parse_expr(
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

fn sink(
    pipeline: &Pipeline,
    ctx: &SessionContext,
    node: &Node,
    frames: &HashMap<String, DataFrame>,
    mode: &Mode,
    out: &mut Compiled,
) -> Result<DataFrame, Diagnostic> {
    let spec = &pipeline.spec.sink.0[node.index].1;
    let key = node.key();
    let df = input(frames, &spec.input)?.clone();
    let kind_name = spec
        .kind
        .as_ref()
        .map_or("client", |k| k.get_ref().as_str());
    let kind = match kind_name {
        "client" => {
            if let Some(p) = &spec.path {
                return Err(Diagnostic::new(
                    format!("{key}.path"),
                    Some(p.span()),
                    "a client sink takes no path",
                )
                .with_help("set kind = \"local_parquet\" to write files on the workers"));
            }
            SinkKind::Client
        }
        "local_parquet" => {
            let Some(p) = &spec.path else {
                return Err(Diagnostic::new(
                    &key,
                    Some(node.span.clone()),
                    "a local_parquet sink needs a path",
                )
                .with_help(
                    "path = \"predictions/daily\" (a folder under each worker's output folder)",
                ));
            };
            let path = pipeline.substitute(p, &format!("{key}.path"))?;
            check_sink_path(&path)
                .map_err(|e| Diagnostic::new(format!("{key}.path"), Some(p.span()), e))?;
            SinkKind::LocalParquet { path }
        }
        other => {
            let span = spec.kind.as_ref().map(Text::span);
            return Err(Diagnostic::new(
                format!("{key}.kind"),
                span,
                format!("unknown sink kind '{other}'"),
            )
            .suggest(other, ["client", "local_parquet"]));
        }
    };
    let dataframe = match &kind {
        SinkKind::Client => df,
        SinkKind::LocalParquet { path } => {
            let run_id = match mode {
                Mode::Run { run_id } => run_id.clone(),
                _ => "explain".to_string(),
            };
            check_run_id(&run_id).map_err(|e| Diagnostic::new(&key, None, e))?;
            let node = LocalParquetSinkNode::new(df.logical_plan().clone(), path.clone(), run_id)
                .map_err(|e| df_error(&key, None, e, &[]))?;
            let plan = LogicalPlan::Extension(Extension {
                node: Arc::new(node),
            });
            DataFrame::new(ctx.state(), plan)
        }
    };
    out.steps.push(match &kind {
        SinkKind::Client => format!("sink {}: rows of '{}' streamed to the client", node.name, spec.input.get_ref()),
        SinkKind::LocalParquet { path } => format!(
            "sink {}: '{}' written as Parquet on each worker under {path}/run-<run id>/ (only a manifest returns)",
            node.name,
            spec.input.get_ref()
        ),
    });
    out.outputs.push(CompiledOutput {
        sink: node.name.clone(),
        kind,
        dataframe: dataframe.clone(),
    });
    Ok(dataframe)
}
