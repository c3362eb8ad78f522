//! A `[sink.*]` node: rows back to the client, or Parquet files on the sites: in each
//! worker's output folder (`local_parquet`) or where the site's data lives (`object_store`).

use super::compile::{Compiled, CompiledOutput, Mode, SinkKind, df_error, input};
use super::diagnostic::Diagnostic;
use super::parse::{Node, Pipeline};
use super::spec::Text;
use datafusion::logical_expr::{Extension, LogicalPlan};
use datafusion::prelude::{DataFrame, SessionContext};
use shoal_operators::sink::ParquetSinkNode;
use shoal_operators::sink::staging::{SinkTarget, check_run_id, check_sink_path};
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
                .with_help(
                    "set kind = \"local_parquet\" or \"object_store\" to write files on the sites",
                ));
            }
            SinkKind::Client
        }
        "local_parquet" | "object_store" => {
            let target = if kind_name == "local_parquet" {
                SinkTarget::OutputFolder
            } else {
                SinkTarget::DataStore
            };
            let example = match target {
                SinkTarget::OutputFolder => {
                    "path = \"predictions/daily\" (a folder under each worker's output folder)"
                }
                SinkTarget::DataStore => {
                    "path = \"predictions\" (a table folder beside the site's data)"
                }
            };
            let Some(p) = &spec.path else {
                return Err(Diagnostic::new(
                    &key,
                    Some(node.span.clone()),
                    format!("a {kind_name} sink needs a path"),
                )
                .with_help(example));
            };
            let path = pipeline.substitute(p, &format!("{key}.path"))?;
            check_sink_path(&path)
                .map_err(|e| Diagnostic::new(format!("{key}.path"), Some(p.span()), e))?;
            // Its runs become the table named by the folder, so the folder is one name.
            if target == SinkTarget::DataStore && path.contains('/') {
                return Err(Diagnostic::new(
                    format!("{key}.path"),
                    Some(p.span()),
                    format!("an object_store sink's path is one folder name, the table its runs become; '{path}' has several"),
                )
                .with_help(example));
            }
            SinkKind::Files { path, target }
        }
        other => {
            let span = spec.kind.as_ref().map(Text::span);
            return Err(Diagnostic::new(
                format!("{key}.kind"),
                span,
                format!("unknown sink kind '{other}'"),
            )
            .suggest(other, ["client", "local_parquet", "object_store"]));
        }
    };
    let dataframe = match &kind {
        SinkKind::Client | SinkKind::Train(_) => df,
        SinkKind::Files { path, target } => {
            let run_id = match mode {
                Mode::Run { run_id } => run_id.clone(),
                _ => "explain".to_string(),
            };
            check_run_id(&run_id).map_err(|e| Diagnostic::new(&key, None, e))?;
            let node =
                ParquetSinkNode::new(df.logical_plan().clone(), path.clone(), run_id, *target)
                    .map_err(|e| df_error(&key, None, e, &[]))?;
            let plan = LogicalPlan::Extension(Extension {
                node: Arc::new(node),
            });
            DataFrame::new(ctx.state(), plan)
        }
    };
    out.steps.push(match &kind {
        SinkKind::Client | SinkKind::Train(_) => format!("sink {}: rows of '{}' streamed to the client", node.name, spec.input.get_ref()),
        SinkKind::Files {
            path,
            target: SinkTarget::OutputFolder,
        } => format!(
            "sink {}: '{}' written as Parquet on each worker under {path}/run-<run id>/ (only a manifest returns)",
            node.name,
            spec.input.get_ref()
        ),
        SinkKind::Files {
            path,
            target: SinkTarget::DataStore,
        } => format!(
            "sink {}: '{}' written as Parquet where each site's data lives, under {path}/run-<run id>/, committed by a manifest written last; the committed runs are the sites' table '{path}' (only a manifest returns)",
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
