//! One output of a pipeline, by its sink's kind: a train node, a resumable run in waves, or
//! one query whose rows go to the client or whose files are committed on the sites.

use super::Pipelines;
use super::events::Events;
use crate::coordinator::ids::new_id;
use crate::error::Result;
use crate::protocol::{ACTION_SINK_ABORT, PipelineEvent, SinkRun};
use shoal_operators::config::ShoalOptions;
use shoal_operators::sink::staging::ManifestFile;
use shoal_planner::pipeline::{CompiledOutput, Pipeline, SinkKind, waves};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

impl Pipelines {
    pub(super) async fn run_output(
        &self,
        pipeline: &Pipeline,
        output: &CompiledOutput,
        run_id: &str,
        resume: bool,
        events: &Events,
    ) -> Result<()> {
        let started = Instant::now();
        let name = output.sink.clone();
        if let SinkKind::Train(statement) = &output.kind {
            return self.run_train_output(output, statement, events).await;
        }
        if let SinkKind::Files { path, target } = &output.kind
            && waves::is_map_only(output.dataframe.logical_plan())
        {
            let run = SinkRun {
                path: path.clone(),
                run_id: run_id.to_string(),
                target: *target,
            };
            return self
                .run_output_in_waves(pipeline, output, &run, resume, events)
                .await;
        }
        let kind = match &output.kind {
            SinkKind::Client | SinkKind::Train(_) => "client",
            SinkKind::Files { target, .. } => target.kind_name(),
        };
        let run = match &output.kind {
            SinkKind::Files { path, target } => {
                let run = SinkRun {
                    path: path.clone(),
                    run_id: run_id.to_string(),
                    target: *target,
                };
                let done = self.committed_manifests(&run).await?;
                if !done.is_empty() {
                    let files: Vec<ManifestFile> = done.into_iter().flat_map(|m| m.files).collect();
                    return events
                        .send(PipelineEvent::Output {
                            output: name,
                            kind: kind.into(),
                            rows: files.iter().map(|f| f.rows).sum(),
                            files,
                            already_committed: true,
                            elapsed_ms: started.elapsed().as_millis() as u64,
                            bytes_scanned: 0,
                            bytes_to_coordinator: 0,
                            coverage: None,
                        })
                        .await;
                }
                self.workers
                    .on_every_worker(ACTION_SINK_ABORT, &run)
                    .await?;
                Some(run)
            }
            SinkKind::Client | SinkKind::Train(_) => None,
        };
        let frame = self.sessions.pinned(output.dataframe.clone())?;
        let task_ctx = Arc::new(frame.task_ctx());
        let statement = ShoalOptions::from_config(task_ctx.session_config().options())
            .statement
            .key;
        let plan = frame.create_physical_plan().await?;
        let result = self
            .stream_output(
                pipeline,
                &name,
                plan.clone(),
                task_ctx,
                run.is_none(),
                events,
            )
            .await;
        let (rows, manifest) = match (result, &run) {
            (Ok(done), _) => done,
            (Err(e), Some(run)) => {
                if let Err(abort) = self.workers.on_every_worker(ACTION_SINK_ABORT, run).await {
                    tracing::warn!("aborting run {}: {abort}", run.run_id);
                }
                return Err(e);
            }
            (Err(e), None) => return Err(e),
        };
        let files = match &run {
            Some(run) => self.commit(run, manifest, &BTreeMap::new()).await?,
            None => Vec::new(),
        };
        let report = self
            .executor
            .reports()
            .of_plan(&new_id(), plan, rows, started)
            .await;
        // Where the run allowed scoring on the CPU for want of a GPU, each site that did
        // says so (a site's reasons are kept for its recent statements).
        if crate::coordinator::session::Asker::current().device_fallback {
            for (site, said) in self.workers.statement_at_sites(&statement).await {
                for reason in said.device_fallbacks {
                    events
                        .send(PipelineEvent::Warning {
                            message: format!("output '{name}': {site} scored on cpu: {reason}"),
                        })
                        .await?;
                }
            }
        }
        events
            .send(PipelineEvent::Output {
                output: name,
                kind: kind.into(),
                rows: if run.is_some() {
                    files.iter().map(|f| f.rows).sum()
                } else {
                    rows
                },
                files,
                already_committed: false,
                elapsed_ms: started.elapsed().as_millis() as u64,
                bytes_scanned: report.bytes_scanned,
                bytes_to_coordinator: report.bytes_to_coordinator,
                coverage: self.workers.coverage_of(&statement),
            })
            .await
    }
}
