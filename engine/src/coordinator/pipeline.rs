//! Pipelines on the coordinator: validate, explain or run a pipeline file, streaming events
//! (steps, warnings, fitted statistics, progress, result rows, manifests) to the caller.
//!
//! A `local_parquet` sink runs in three steps: abort any staging a previous attempt with the
//! same run id left, run the query (each worker writes its files to a hidden staging folder
//! and returns manifest rows), then commit on every worker that wrote (one rename each). A
//! failure or cancel at any point aborts the run on every worker, so nothing partial is
//! visible. A run id that is already committed is not run again: its manifests are returned.

use super::Coordinator;
use super::flight::to_status;
use super::limits::{StreamLimits, bounded};
use super::query::uuid_like;
use crate::client;
use crate::error::{Error, Result};
use crate::protocol::{ACTION_SINK_ABORT, ACTION_SINK_COMMIT, ACTION_SINK_STATUS, SinkRun};
use arrow_flight::error::FlightError;
use base64::Engine;
use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::UInt64Type;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use futures::StreamExt;
use shoal_operators::sink::staging::{ManifestFile, SiteManifest, check_run_id};
use shoal_planner::explain::explain_stages;
use shoal_planner::pipeline::{CompiledOutput, Mode, Pipeline, SinkKind, compile_file, waves};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How often a running pipeline reports progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum PipelineMode {
    Validate,
    Explain,
    Run,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PipelineRequest {
    /// Name shown in errors (the path the client read).
    pub file: String,
    pub text: String,
    /// `--set name=value` overrides.
    #[serde(default)]
    pub params: Vec<(String, String)>,
    pub mode: PipelineMode,
    /// Names the run's output folders; a committed run id is never written twice.
    #[serde(default)]
    pub run_id: Option<String>,
    /// Finish `run_id` from its committed waves instead of starting it over.
    #[serde(default)]
    pub resume: bool,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PipelineEvent {
    /// What one node does.
    Step {
        line: String,
    },
    Warning {
        message: String,
    },
    /// A statistic or vocabulary a pre-pass fitted.
    Fitted {
        line: String,
    },
    /// Stages and placement of one output.
    Explain {
        output: String,
        text: String,
    },
    /// Rows the workers' scans produced for this output so far, of `rows_total` in the
    /// pipeline's source tables.
    Progress {
        output: String,
        rows_done: u64,
        rows_total: u64,
        elapsed_ms: u64,
    },
    /// Result rows of a client sink: one Arrow IPC stream (schema + batch), base64.
    Rows {
        output: String,
        ipc: String,
    },
    /// An output finished.
    Output {
        output: String,
        kind: String,
        rows: u64,
        files: Vec<ManifestFile>,
        already_committed: bool,
        elapsed_ms: u64,
        bytes_scanned: u64,
        bytes_to_coordinator: u64,
    },
    Done {
        run_id: Option<String>,
        elapsed_ms: u64,
    },
}

impl PipelineEvent {
    /// The batch a `Rows` event carries.
    pub fn decode_rows(ipc: &str) -> Result<Vec<RecordBatch>> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(ipc)
            .map_err(|e| Error::Malformed {
                what: "rows event".into(),
                message: e.to_string(),
            })?;
        let reader = datafusion::arrow::ipc::reader::StreamReader::try_new(bytes.as_slice(), None)?;
        Ok(reader.collect::<std::result::Result<Vec<_>, _>>()?)
    }
}

pub(super) fn encode_rows(batch: &RecordBatch) -> Result<String> {
    let mut buf = Vec::new();
    let mut writer = StreamWriter::try_new(&mut buf, &batch.schema())?;
    writer.write(batch)?;
    writer.finish()?;
    drop(writer);
    Ok(base64::engine::general_purpose::STANDARD.encode(buf))
}

pub(super) struct Events(mpsc::Sender<PipelineEvent>);

impl Events {
    /// Sends; a caller that went away stops the run.
    pub(super) async fn send(&self, event: PipelineEvent) -> Result<()> {
        self.0.send(event).await.map_err(|_| Error::ClientGone)
    }
}

impl Coordinator {
    /// Validates, explains or runs a pipeline, sending its events to `events`.
    pub async fn pipeline(
        self: &Arc<Self>,
        request: PipelineRequest,
        events: mpsc::Sender<PipelineEvent>,
    ) -> Result<()> {
        let events = Events(events);
        let started = Instant::now();
        let (mode, run_id) = match request.mode {
            PipelineMode::Validate => (Mode::Validate, None),
            PipelineMode::Explain => (Mode::Explain, None),
            PipelineMode::Run => {
                let id = request
                    .run_id
                    .clone()
                    .unwrap_or_else(|| format!("run-{}", uuid_like()));
                check_run_id(&id).map_err(|message| Error::InvalidRunId { message })?;
                (Mode::Run { run_id: id.clone() }, Some(id))
            }
        };
        let ctx = self.session()?;
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
                    let mut text = explain_stages(&plan, &self.catalog)?;
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
                for output in &compiled.outputs {
                    self.run_output(&pipeline, output, &run_id, request.resume, &events)
                        .await?;
                }
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
            SinkKind::LocalParquet { path } => format!(
                "files written on the sites under {path}/run-<run id>/; one manifest row per file returns"
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

    async fn run_output(
        self: &Arc<Self>,
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
        if let SinkKind::LocalParquet { path } = &output.kind
            && waves::is_map_only(output.dataframe.logical_plan())
        {
            let run = SinkRun {
                path: path.clone(),
                run_id: run_id.to_string(),
            };
            return self
                .run_output_in_waves(pipeline, output, &run, resume, events)
                .await;
        }
        let kind = match &output.kind {
            SinkKind::Client | SinkKind::Train(_) => "client",
            SinkKind::LocalParquet { .. } => "local_parquet",
        };
        let run = match &output.kind {
            SinkKind::LocalParquet { path } => {
                let run = SinkRun {
                    path: path.clone(),
                    run_id: run_id.to_string(),
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
                        })
                        .await;
                }
                self.on_every_worker(ACTION_SINK_ABORT, &run).await?;
                Some(run)
            }
            SinkKind::Client | SinkKind::Train(_) => None,
        };
        let frame = self.pinned(output.dataframe.clone())?;
        let task_ctx = Arc::new(frame.task_ctx());
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
                if let Err(abort) = self.on_every_worker(ACTION_SINK_ABORT, run).await {
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
        let report = self.report_plan(&uuid_like(), plan, rows, started).await;
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
            })
            .await
    }

    /// Runs one output's plan, sending its rows (client sinks) or gathering its manifest
    /// rows (sinks), with a progress event every [`PROGRESS_EVERY`]. The stream is bounded
    /// like a Flight SQL statement's (query timeout, result-row limit) and listed among the
    /// running queries while it runs.
    pub(super) async fn stream_output(
        self: &Arc<Self>,
        pipeline: &Pipeline,
        name: &str,
        plan: Arc<dyn ExecutionPlan>,
        task_ctx: Arc<datafusion::execution::TaskContext>,
        send_rows: bool,
        events: &Events,
    ) -> Result<(u64, Vec<RecordBatch>)> {
        let started = Instant::now();
        let total = self.source_rows(pipeline);
        let scanned_at_start = self.rows_scanned_total();
        let query_id = format!("pipeline-{}", uuid_like());
        let (_running, cancel) = self.running.start(&query_id);
        let limits = StreamLimits {
            timeout: self.options.query_timeout,
            max_rows: self.options.max_result_rows,
        };
        let stream = bounded(
            query_id,
            execute_stream(plan, task_ctx)?,
            cancel,
            limits,
            Arc::new(AtomicU64::new(0)),
            |e| to_status(Error::from_datafusion(e)),
        );
        tokio::pin!(stream);
        let mut ticker = tokio::time::interval(PROGRESS_EVERY);
        ticker.tick().await;
        let mut rows = 0u64;
        let mut manifest = Vec::new();
        loop {
            tokio::select! {
                next = stream.next() => match next {
                    None => break,
                    Some(Err(FlightError::Tonic(status))) => return Err(Error::Rpc(status)),
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(batch)) => {
                        rows += batch.num_rows() as u64;
                        if !send_rows {
                            manifest.push(batch);
                        } else if batch.num_rows() > 0 {
                            events.send(PipelineEvent::Rows { output: name.into(), ipc: encode_rows(&batch)? }).await?;
                        }
                    }
                },
                _ = ticker.tick() => {
                    events.send(PipelineEvent::Progress {
                        output: name.into(),
                        rows_done: self.rows_scanned_total().saturating_sub(scanned_at_start).min(total),
                        rows_total: total,
                        elapsed_ms: started.elapsed().as_millis() as u64,
                    }).await?;
                }
            }
        }
        Ok((rows, manifest))
    }

    /// Commits the sink's files on each worker that wrote some; aborts everywhere if any
    /// commit fails.
    pub(super) async fn commit(
        &self,
        run: &SinkRun,
        manifest: Vec<RecordBatch>,
        inputs: &BTreeMap<String, Vec<String>>,
    ) -> Result<Vec<ManifestFile>> {
        let mut per_site: BTreeMap<String, Vec<ManifestFile>> = BTreeMap::new();
        // A site that read inputs but wrote no rows commits too: it covered those inputs.
        for site in inputs.keys() {
            per_site.entry(site.clone()).or_default();
        }
        for batch in &manifest {
            let text = |i: usize| batch.column(i).as_string::<i32>().clone();
            let (site, file, sha) = (text(0), text(1), text(4));
            let rows = batch.column(2).as_primitive::<UInt64Type>();
            let bytes = batch.column(3).as_primitive::<UInt64Type>();
            for r in 0..batch.num_rows() {
                per_site
                    .entry(site.value(r).to_string())
                    .or_default()
                    .push(ManifestFile {
                        site: site.value(r).to_string(),
                        file: file.value(r).to_string(),
                        rows: rows.value(r),
                        bytes: bytes.value(r),
                        sha256: sha.value(r).to_string(),
                    });
            }
        }
        let mut committed = Vec::new();
        for (site, files) in per_site {
            let site_manifest = SiteManifest {
                run_id: run.run_id.clone(),
                path: run.path.clone(),
                files,
                inputs: inputs.get(&site).cloned().unwrap_or_default(),
            };
            let outcome = async {
                let url = self.catalog.url_of(&site)?;
                let body = serde_json::to_vec(&site_manifest).map_err(|e| Error::Malformed {
                    what: "site manifest".into(),
                    message: e.to_string(),
                })?;
                client::action(
                    self.channels.connector(),
                    url.as_str(),
                    ACTION_SINK_COMMIT,
                    body,
                )
                .await
            }
            .await;
            if let Err(e) = outcome {
                // Workers not yet committed drop their staging; the error names the site.
                let _ = self.on_every_worker(ACTION_SINK_ABORT, run).await;
                return Err(Error::SinkAction {
                    action: ACTION_SINK_COMMIT.into(),
                    run_id: run.run_id.clone(),
                    worker: site,
                    source: Box::new(e),
                });
            }
            committed.extend(site_manifest.files);
        }
        Ok(committed)
    }

    /// The manifests of `run` already committed on live workers.
    pub(super) async fn committed_manifests(&self, run: &SinkRun) -> Result<Vec<SiteManifest>> {
        let mut found = Vec::new();
        for reply in self.ask_every_worker(ACTION_SINK_STATUS, run).await? {
            found.extend(
                serde_json::from_slice::<Option<SiteManifest>>(&reply).map_err(|e| {
                    Error::Malformed {
                        what: format!("{ACTION_SINK_STATUS} reply"),
                        message: e.to_string(),
                    }
                })?,
            );
        }
        Ok(found)
    }

    pub(super) async fn on_every_worker(&self, action: &str, run: &SinkRun) -> Result<()> {
        self.ask_every_worker(action, run).await.map(|_| ())
    }

    /// Sends `action` about `run` to every live worker; their replies, in site order.
    pub(super) async fn ask_every_worker(
        &self,
        action: &str,
        run: &SinkRun,
    ) -> Result<Vec<Vec<u8>>> {
        let body = serde_json::to_vec(run).map_err(|e| Error::Malformed {
            what: "sink run".into(),
            message: e.to_string(),
        })?;
        let mut replies = Vec::new();
        for (site, url) in self.catalog.live_sites() {
            let reply = client::action(
                self.channels.connector(),
                url.as_str(),
                action,
                body.clone(),
            )
            .await
            .map_err(|e| Error::SinkAction {
                action: action.to_string(),
                run_id: run.run_id.clone(),
                worker: site.clone(),
                source: Box::new(e),
            })?;
            replies.push(reply);
        }
        Ok(replies)
    }
}
