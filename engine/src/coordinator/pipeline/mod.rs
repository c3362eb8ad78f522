//! Pipelines on the coordinator: validate, explain or run a pipeline file, streaming events
//! (steps, warnings, fitted statistics, progress, result rows, manifests) to the caller.
//!
//! A `local_parquet` sink runs in three steps: abort any staging a previous attempt with the
//! same run id left, run the query (each worker writes its files to a hidden staging folder
//! and returns manifest rows), then commit on every worker that wrote (one rename each; an
//! `object_store` sink uploads its files to the site's data and commits by writing the
//! manifest last). A
//! failure or cancel at any point aborts the run on every worker, so nothing partial is
//! visible. A run id that is already committed is not run again: its manifests are returned.
//!
//! Module map: `events` (what a run sends), `output` (one output, by its sink's kind),
//! `stream` (an output's query streamed and bounded), `sink` (commits on the workers), `waves` (resumable runs), `train_node`
//! (`[train.*]` outputs).

mod events;
mod output;
mod sink;
mod stream;
mod train_node;
mod waves;

use super::execution::Executor;
use super::ids::new_id;
use super::progress::WorkerProgress;
use super::session::{Asker, Sessions};
use super::training::Training;
use super::workers::WorkerCalls;
use crate::error::{Error, Result};
use crate::protocol::{PipelineEvent, PipelineMode, PipelineRequest};
use crate::security::Principal;
use events::Events;
use shoal_operators::sink::staging::check_run_id;
use shoal_planner::SiteCatalog;
use shoal_planner::explain::explain_stages;
use shoal_planner::pipeline::{CompiledOutput, Mode, Pipeline, SinkKind, compile_file};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How often a running pipeline reports progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// Runs pipelines on the cluster.
#[derive(Debug)]
pub struct Pipelines {
    sessions: Arc<Sessions>,
    executor: Arc<Executor>,
    training: Arc<Training>,
    workers: WorkerCalls,
    catalog: Arc<SiteCatalog>,
    progress: Arc<WorkerProgress>,
    /// Input files each site reads per wave of a resumable run; 0: as many as a site reads
    /// in parallel.
    wave_files: usize,
}

impl Pipelines {
    pub fn new(
        sessions: Arc<Sessions>,
        executor: Arc<Executor>,
        training: Arc<Training>,
        workers: WorkerCalls,
        catalog: Arc<SiteCatalog>,
        progress: Arc<WorkerProgress>,
        wave_files: usize,
    ) -> Self {
        Self {
            sessions,
            executor,
            training,
            workers,
            catalog,
            progress,
            wave_files,
        }
    }
}

impl Pipelines {
    /// Validates, explains or runs a pipeline, sending its events to `events`.
    pub async fn run(
        &self,
        request: PipelineRequest,
        principal: Principal,
        events: mpsc::Sender<PipelineEvent>,
    ) -> Result<()> {
        let events = Events::new(events, principal);
        let started = Instant::now();
        let (mode, run_id) = match request.mode {
            PipelineMode::Validate => (Mode::Validate, None),
            PipelineMode::Explain => (Mode::Explain, None),
            PipelineMode::Run => {
                let id = request
                    .run_id
                    .clone()
                    .unwrap_or_else(|| format!("run-{}", new_id()));
                check_run_id(&id).map_err(|message| Error::InvalidRunId { message })?;
                (Mode::Run { run_id: id.clone() }, Some(id))
            }
        };
        let ctx = self.sessions.session()?;
        let (pipeline, compiled) =
            compile_file(&request.text, &request.file, &request.params, &ctx, &mode).await?;
        for line in compiled.steps {
            events.send(PipelineEvent::Step { line }).await?;
        }
        for message in compiled.warnings {
            events.send(PipelineEvent::Warning { message }).await?;
        }
        for line in compiled.fitted {
            events.send(PipelineEvent::Fitted { line }).await?;
        }
        match request.mode {
            PipelineMode::Validate => {}
            PipelineMode::Explain => {
                for output in &compiled.outputs {
                    let plan = output.dataframe.clone().create_physical_plan().await?;
                    let mut text =
                        explain_stages(&plan, &self.catalog, &self.sessions.listed_models())?;
                    text.push_str(&self.movement(&pipeline, output));
                    events
                        .send(PipelineEvent::Explain {
                            output: output.sink.clone(),
                            text,
                        })
                        .await?;
                }
            }
            PipelineMode::Run => {
                let run_id = run_id.clone().unwrap_or_default();
                let partial = request.partial || pipeline.spec.pipeline.partial == Some(true);
                Asker::current()
                    .with_partial(partial)
                    .with_device_fallback(pipeline.spec.pipeline.device_fallback == Some(true))
                    .scope(async {
                        for output in &compiled.outputs {
                            self.run_output(&pipeline, output, &run_id, request.resume, &events)
                                .await?;
                        }
                        Ok::<_, Error>(())
                    })
                    .await?;
            }
        }
        events
            .send(PipelineEvent::Done {
                run_id,
                elapsed_ms: started.elapsed().as_millis() as u64,
            })
            .await
    }

    /// Rows in the pipeline's source tables, from the files the workers reported.
    fn source_rows(&self, pipeline: &Pipeline) -> u64 {
        pipeline
            .spec
            .source
            .iter()
            .filter_map(|(_, s)| pipeline.substitute(&s.table, "").ok())
            .filter_map(|t| self.catalog.table(&t))
            .map(|t| t.files.iter().map(|(_, f)| f.rows).sum::<u64>())
            .sum()
    }

    /// The explain's last lines: what the output reads and what crosses the network.
    fn movement(&self, pipeline: &Pipeline, output: &CompiledOutput) -> String {
        let rows = self.source_rows(pipeline);
        let back = match &output.kind {
            SinkKind::Train(_) => "statistics and model updates (a few KiB per site per round) \
                 return; rows stay on the sites"
                .to_string(),
            SinkKind::Files { path, target } => format!(
                "files written on the sites ({}) under {path}/run-<run id>/; one manifest row per file returns",
                match target {
                    shoal_operators::sink::staging::SinkTarget::OutputFolder =>
                        "each worker's output folder",
                    shoal_operators::sink::staging::SinkTarget::DataStore =>
                        "where each site's data lives",
                }
            ),
            SinkKind::Client if pipeline.spec.aggregate.is_empty() => {
                "every output row streams to the coordinator and on to the client".to_string()
            }
            SinkKind::Client => {
                "partial aggregates (one row per group per task) return; raw rows stay on the sites"
                    .to_string()
            }
        };
        format!("\nData movement: reads up to {rows} source rows on the sites; {back}\n")
    }
}
