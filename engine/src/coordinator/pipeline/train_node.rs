//! A pipeline's `[train.*]` node: trains on the node's input and sends the training table
//! as the output's rows.

use super::Pipelines;
use super::events::{Events, encode_rows};
use crate::error::Result;
use crate::protocol::PipelineEvent;
use datafusion::prelude::SessionContext;
use shoal_planner::pipeline::CompiledOutput;
use shoal_sql::train::CreateModel;

impl Pipelines {
    pub(super) async fn run_train_output(
        &self,
        output: &CompiledOutput,
        statement: &CreateModel,
        events: &Events,
    ) -> Result<()> {
        let started = std::time::Instant::now();
        let (state, _) = output.dataframe.clone().into_parts();
        let ctx = SessionContext::new_with_state(state);
        let input = output.dataframe.clone().into_view();
        let batch = self
            .training
            .train_in_session(ctx, statement, input, &events.principal)
            .await?;
        let rows = batch.num_rows() as u64;
        events
            .send(PipelineEvent::Rows {
                output: output.sink.clone(),
                ipc: encode_rows(&batch)?,
            })
            .await?;
        events
            .send(PipelineEvent::Output {
                output: output.sink.clone(),
                kind: "train".into(),
                rows,
                files: Vec::new(),
                already_committed: false,
                elapsed_ms: started.elapsed().as_millis() as u64,
                bytes_scanned: 0,
                bytes_to_coordinator: 0,
                coverage: None,
            })
            .await
    }
}
