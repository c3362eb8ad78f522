//! Resumable runs: a map-only output with a Parquet sink is written in waves (as many
//! pending input files per site as it reads in parallel, see [`shoal_planner::pipeline::waves`]). Each site's
//! part of a wave commits on its own, listing the input files it covered: these are the
//! run's checkpoints, kept on the workers, so they survive a crash of the coordinator. When
//! every input is covered, each worker seals its waves into the run's folder in one rename.
//!
//! `shoal run --resume RUN_ID` compiles the pipeline again, asks the workers which inputs
//! their committed waves cover, and runs only the rest. A wave cut short by a crash left only
//! staging, which is dropped and redone; a wave is never half committed on a site.

use super::Pipelines;
use super::events::Events;
use crate::coordinator::ids::new_id;
use crate::error::{Error, Result};
use crate::protocol::{
    ACTION_SINK_ABORT, ACTION_SINK_SEAL, ACTION_SINK_WAVES, PipelineEvent, SinkRun,
};
use datafusion::prelude::DataFrame;
use shoal_operators::sink::staging::{ManifestFile, SiteManifest, waves_path};
use shoal_planner::pipeline::waves::{InputFile, input_files, next_wave, not_read, wave_plan};
use shoal_planner::pipeline::{CompiledOutput, Pipeline};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

/// Bytes the waves scanned and sent to the coordinator (manifest rows).
#[derive(Debug, Default, Clone, Copy)]
struct Moved {
    scanned: u64,
    to_coordinator: u64,
}

impl Pipelines {
    pub(super) async fn run_output_in_waves(
        &self,
        pipeline: &Pipeline,
        output: &CompiledOutput,
        run: &SinkRun,
        resume: bool,
        events: &Events,
    ) -> Result<()> {
        let started = Instant::now();
        let name = output.sink.clone();
        let logical = output.dataframe.logical_plan().clone();
        let inputs = input_files(&logical)?;
        // Files only down sites hold: a partial run leaves them out (they are no wave's
        // input, so never marked covered); otherwise the first wave fails naming the site.
        let coverage = not_read(&logical)?;
        if !self.committed_manifests(run).await?.is_empty() {
            // The run reached its seal (every wave had committed): finish any seal a crash
            // interrupted; nothing is read or written again.
            let sealed = self.seal_everywhere(run).await?;
            let covered: BTreeSet<&str> = sealed
                .iter()
                .flat_map(|m| m.inputs.iter().map(String::as_str))
                .collect();
            let missing: Vec<&str> = inputs
                .iter()
                .filter(|f| !covered.contains(f.key.as_str()))
                .map(|f| f.path.as_str())
                .collect();
            if !missing.is_empty() {
                return Err(Error::RunIncomplete {
                    run_id: run.run_id.clone(),
                    missing: missing.len(),
                    examples: missing
                        .iter()
                        .take(3)
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            return self
                .send_output(
                    events,
                    (&name, run),
                    sealed,
                    true,
                    started,
                    (Moved::default(), None),
                )
                .await;
        }
        if !resume {
            // A fresh run: drop whatever an earlier attempt of this id staged or waved.
            self.workers.on_every_worker(ACTION_SINK_ABORT, run).await?;
        }
        let done = self.covered_inputs(run).await?;
        let mut pending: Vec<InputFile> = inputs
            .into_iter()
            .filter(|f| !done.contains(&f.key))
            .collect();
        if resume {
            events
                .send(PipelineEvent::Step {
                    line: format!(
                        "resuming run '{}': {} input file(s) already covered by committed waves, {} to go",
                        run.run_id,
                        done.len(),
                        pending.len()
                    ),
                })
                .await?;
        }
        let waves_dir = waves_path(&run.path, &run.run_id);
        let (state, _) = output.dataframe.clone().into_parts();
        // As many files per site as a site reads in parallel: waves cost a barrier each,
        // not parallelism.
        let per_site = match self.wave_files {
            0 => state.config().target_partitions(),
            n => n,
        };
        let mut moved = Moved::default();
        while !pending.is_empty() {
            let wave = next_wave(&pending, per_site);
            let wave_id = format!("wave-{}", wave[0].key);
            let plan = wave_plan(&logical, &wave, &waves_dir, &wave_id)?;
            let frame = self.sessions.pinned(DataFrame::new(state.clone(), plan))?;
            let task_ctx = Arc::new(frame.task_ctx());
            let physical = frame.create_physical_plan().await?;
            let resumable = |e: Error| Error::RunStopped {
                run_id: run.run_id.clone(),
                source: Box::new(e),
            };
            let (rows, manifest) = self
                .stream_output(pipeline, &name, physical.clone(), task_ctx, false, events)
                .await
                .map_err(resumable)?;
            let mut covered: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for file in &wave {
                covered
                    .entry(file.site.clone())
                    .or_default()
                    .push(file.key.clone());
            }
            let wave_run = SinkRun {
                path: waves_dir.clone(),
                run_id: wave_id,
                target: run.target,
            };
            self.commit(&wave_run, manifest, &covered)
                .await
                .map_err(resumable)?;
            let report = self
                .executor
                .reports()
                .of_plan(&new_id(), physical, rows, started)
                .await;
            moved.scanned += report.bytes_scanned;
            moved.to_coordinator += report.bytes_to_coordinator;
            pending.retain(|f| !wave.iter().any(|w| w.key == f.key));
        }
        let sealed = self.seal_everywhere(run).await?;
        self.send_output(
            events,
            (&name, run),
            sealed,
            false,
            started,
            (moved, coverage),
        )
        .await
    }

    /// The input keys the committed waves of `run` cover, over every live worker.
    async fn covered_inputs(&self, run: &SinkRun) -> Result<BTreeSet<String>> {
        let mut covered = BTreeSet::new();
        for reply in self
            .workers
            .ask_every_worker(ACTION_SINK_WAVES, run)
            .await?
        {
            let waves: Vec<SiteManifest> =
                serde_json::from_slice(&reply).map_err(|e| Error::Malformed {
                    what: format!("{ACTION_SINK_WAVES} reply"),
                    message: e.to_string(),
                })?;
            covered.extend(waves.into_iter().flat_map(|w| w.inputs));
        }
        Ok(covered)
    }

    /// Seals `run` on every live worker; the manifests of the workers that hold it.
    async fn seal_everywhere(&self, run: &SinkRun) -> Result<Vec<SiteManifest>> {
        let mut sealed = Vec::new();
        for reply in self.workers.ask_every_worker(ACTION_SINK_SEAL, run).await? {
            let manifest: Option<SiteManifest> =
                serde_json::from_slice(&reply).map_err(|e| Error::Malformed {
                    what: format!("{ACTION_SINK_SEAL} reply"),
                    message: e.to_string(),
                })?;
            sealed.extend(manifest);
        }
        Ok(sealed)
    }

    async fn send_output(
        &self,
        events: &Events,
        (name, run): (&str, &SinkRun),
        sealed: Vec<SiteManifest>,
        already_committed: bool,
        started: Instant,
        (moved, coverage): (Moved, Option<shoal_planner::Coverage>),
    ) -> Result<()> {
        let files: Vec<ManifestFile> = sealed.into_iter().flat_map(|m| m.files).collect();
        events
            .send(PipelineEvent::Output {
                output: name.to_string(),
                kind: run.target.kind_name().into(),
                rows: files.iter().map(|f| f.rows).sum(),
                files,
                already_committed,
                elapsed_ms: started.elapsed().as_millis() as u64,
                bytes_scanned: moved.scanned,
                bytes_to_coordinator: moved.to_coordinator,
                coverage,
            })
            .await
    }
}
