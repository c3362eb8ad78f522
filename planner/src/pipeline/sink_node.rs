//! A `[sink.*]` node: rows back to the client, or a local Parquet sink on the workers.

use super::compile::{Compiled, CompiledOutput, Mode, SinkKind, df_error, input};
use super::diagnostic::Diagnostic;
use super::parse::{Node, Pipeline};
use super::spec::Text;
use datafusion::logical_expr::{Extension, LogicalPlan};
use datafusion::prelude::{DataFrame, SessionContext};
use shoal_operators::sink::LocalParquetSinkNode;
use shoal_operators::sink::staging::{check_run_id, check_sink_path};
use std::collections::HashMap;
use std::sync::Arc;

pub(super) fn sink(
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
        SinkKind::Client | SinkKind::Train(_) => df,
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
        SinkKind::Client | SinkKind::Train(_) => format!("sink {}: rows of '{}' streamed to the client", node.name, spec.input.get_ref()),
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
