//! Pipelines written in TOML: parsed with the span of every value, checked before anything
//! runs (unknown keys, missing inputs, cycles, unknown tables, models and columns, wrong
//! types, each error naming the key, file, line and column, with the nearest valid name), and
//! compiled to the same DataFusion plans the SQL path produces.
//!
//! ```text
//!  pipeline.toml ──► parse (spec, params, graph) ──► compile (one DataFrame per sink)
//!                                                     │  feature pre-passes run on the cluster
//!                                                     ▼
//!                         DataFusion LogicalPlan ──► datafusion-distributed stages
//! ```

mod combine;
mod compile;
mod diagnostic;
mod feature_ops;
mod features_node;
mod ordered;
mod parse;
mod sink_node;
pub mod spec;
mod train_node;
pub mod waves;

pub use compile::{Compiled, CompiledOutput, Mode, SinkKind, compile};
pub use diagnostic::{Diagnostic, PipelineError, nearest};
pub use parse::{Node, NodeKind, Pipeline};

/// Parses and compiles; every error carries the file's name and positions.
pub async fn compile_file(
    text: &str,
    file: &str,
    overrides: &[(String, String)],
    ctx: &datafusion::prelude::SessionContext,
    mode: &Mode,
) -> Result<(Pipeline, Compiled), PipelineError> {
    let pipeline = Pipeline::parse(text, file, overrides)?;
    let compiled = compile(&pipeline, ctx, mode)
        .await
        .map_err(|d| pipeline.error(d))?;
    Ok((pipeline, compiled))
}

/// The Parquet sink `node` is, if it is one.
pub fn sink_node_of(
    node: &datafusion::logical_expr::LogicalPlan,
) -> Option<&shoal_operators::sink::ParquetSinkNode> {
    match node {
        datafusion::logical_expr::LogicalPlan::Extension(extension) => {
            extension
                .node
                .as_any()
                .downcast_ref::<shoal_operators::sink::ParquetSinkNode>()
        }
        _ => None,
    }
}
