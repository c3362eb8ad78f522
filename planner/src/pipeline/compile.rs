//! A parsed pipeline into DataFusion DataFrames: one per sink, built with the same session
//! (functions, catalog, distributed planner) the SQL path uses, so a pipeline gets the same
//! locality, distribution and checks as the equivalent query.

use super::diagnostic::Diagnostic;
use super::parse::{Node, NodeKind, Pipeline};
use super::spec::Text;
use super::{combine, features_node, sink_node, train_node};
use datafusion::common::Column;
use datafusion::error::DataFusionError;
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{Expr, ScalarUDF, col, lit};
use datafusion::prelude::{DataFrame, SessionContext};
use shoal_operators::model::MAX_BATCH_ROWS;
use shoal_operators::{PredictKind, PredictUdf};
use shoal_sql::statement::StatementLimits;
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
    /// Parquet written on the sites under `path` (in each worker's output folder, or where
    /// the site's data lives); only manifests come back.
    Files {
        path: String,
        target: shoal_operators::sink::staging::SinkTarget,
    },
    /// A model trained on the output's rows (the training statement; its query is filled
    /// in by whoever runs it) and registered under the node's name.
    Train(shoal_sql::train::CreateModel),
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
            NodeKind::Features => {
                features_node::features(pipeline, ctx, node, &frames, mode, &mut out).await
            }
            NodeKind::Model => model(pipeline, ctx, node, &frames, &mut out),
            NodeKind::Join => combine::join(pipeline, node, &frames, &mut out),
            NodeKind::Union => combine::union(pipeline, node, &frames, &mut out),
            NodeKind::Aggregate => combine::aggregate(pipeline, node, &frames, &mut out),
            NodeKind::Sink => sink_node::sink(pipeline, ctx, node, &frames, mode, &mut out),
            NodeKind::Train => train_node::train(pipeline, node, &frames, &mut out),
        };
        frames.insert(node.name.clone(), built.map_err(|d| vec![d])?);
    }
    Ok(out)
}

pub(super) fn input<'a>(
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

pub(super) fn field_names(df: &DataFrame) -> Vec<String> {
    df.schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect()
}

/// A DataFusion error at `key`; a missing column gets the nearest existing one suggested.
pub(super) fn df_error(
    key: &str,
    span: Option<Range<usize>>,
    e: DataFusionError,
    names: &[String],
) -> Diagnostic {
    let missing = match e.find_root() {
        DataFusionError::SchemaError(err, _) => match err.as_ref() {
            datafusion::common::SchemaError::FieldNotFound { field, .. } => {
                Some(field.name().to_string())
            }
            _ => None,
        },
        _ => None,
    };
    let message = e.strip_backtrace().replace('\n', " ");
    let diagnostic = Diagnostic::new(key, span, message);
    match missing {
        // SQL folded an unquoted mixed-case name: say how to keep its case.
        Some(name) => match names
            .iter()
            .find(|n| **n != name && n.to_lowercase() == name)
        {
            Some(exact) => diagnostic.with_help(format!(
                "SQL folds unquoted names to lower case: write \"{exact}\" (in double \
                 quotes) inside an expression, or the name alone where a list takes names"
            )),
            None => diagnostic.suggest(&name, names.iter().map(String::as_str)),
        },
        None => diagnostic,
    }
}

/// Checks that every listed column exists in `df`, naming the nearest one if not.
pub(super) fn check_columns(
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

/// An entry of a list that takes names or expressions (a model's features, an aggregate's
/// `group_by`): a string that is exactly a column's name is that column, as written (a name
/// is a name in a pipeline file, whatever its case); anything else is an SQL expression,
/// where SQL's rules apply.
pub(super) fn parse_name_or_expr(
    pipeline: &Pipeline,
    df: &DataFrame,
    key: &str,
    text: &Text,
) -> Result<Expr, Diagnostic> {
    let written = pipeline.substitute(text, key)?;
    if df.schema().fields().iter().any(|f| f.name() == &written) {
        return Ok(col(Column::from_name(written)));
    }
    parse_expr(pipeline, df, key, text)
}

pub(super) fn parse_expr(
    pipeline: &Pipeline,
    df: &DataFrame,
    key: &str,
    text: &Text,
) -> Result<Expr, Diagnostic> {
    let sql = pipeline.substitute(text, key)?;
    // Checked first as a client's SQL: a pipeline file is the client's, so its expressions
    // get the same size and depth limits and may not call internal functions.
    StatementLimits::default()
        .check_expression(&sql)
        .map_err(|e| Diagnostic::new(key.to_string(), Some(text.span()), e.to_string()))?;
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
    // The node's device travels with the statement's pins; each site checks it against
    // the GPUs it declared (no GPU: the run fails naming why, or falls back to the CPU
    // where `[pipeline]` allows it, and the report says so per site).
    let device = match &spec.device {
        None => None,
        Some(d) => Some(
            d.get_ref()
                .parse::<shoal_operators::device::DeviceRequest>()
                .map_err(|e| {
                    Diagnostic::new(format!("{key}.device"), Some(d.span()), e.to_string())
                        .with_help("use \"auto\", \"cpu\", \"cuda\" or \"cuda:N\" (N = GPU index)")
                })?,
        ),
    };
    let batch_rows = match &spec.batch_size {
        Some(b) if *b.get_ref() == 0 || *b.get_ref() > MAX_BATCH_ROWS as u64 => {
            return Err(Diagnostic::new(
                format!("{key}.batch_size"),
                Some(b.span()),
                format!("batch_size must be from 1 to {MAX_BATCH_ROWS}"),
            ));
        }
        b => b.as_ref().map(|b| *b.get_ref() as usize),
    };
    let mut args = vec![lit(model_name.as_str())];
    for (i, f) in spec.features.get_ref().iter().enumerate() {
        args.push(parse_name_or_expr(
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
                PredictUdf::new(kind, provider.clone())
                    .with_batch_rows(batch_rows)
                    .with_device(device),
            );
            let call = Expr::ScalarFunction(ScalarFunction::new_udf(Arc::new(udf), args.clone()));
            exprs.push(call.alias(output.get_ref()));
        }
    }
    out.steps.push(format!(
        "model {}: {model_name} on {} feature(s) -> {}, device {}{}",
        node.name,
        args.len() - 1,
        [spec.predict.as_ref(), spec.predict_proba.as_ref()]
            .into_iter()
            .flatten()
            .map(|o| o.get_ref().as_str())
            .collect::<Vec<_>>()
            .join(", "),
        device.unwrap_or_default(),
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
