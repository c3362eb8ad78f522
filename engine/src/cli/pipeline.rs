//! `shoal run | explain | validate pipeline.toml`: against a coordinator (`--coordinator`),
//! or an embedded cluster on the sample data when none is given. Progress goes to stderr
//! (bars when it is a terminal), results to stdout.

use super::output;
use super::{Format, TOKEN_ENV};
use anyhow::Context;
use datafusion::arrow::array::RecordBatch;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use shoal_engine::client;
use shoal_engine::protocol::{ACTION_PIPELINE, PipelineEvent, PipelineMode, PipelineRequest};
use shoal_engine::security::{Connector, Principal, client_tls, read_secret_file};
use shoal_engine::{CoordinatorOptions, EmbeddedCluster};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub struct PipelineArgs {
    /// The pipeline file (TOML).
    file: PathBuf,
    /// Coordinator URL (grpc://host:port); without it an embedded cluster runs on the
    /// sample data (generated into --data).
    #[arg(long)]
    coordinator: Option<String>,
    /// Parameter overrides, NAME=VALUE (repeatable); the file declares them under [params].
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
    /// Run id naming the output folders; a committed run id is not written again.
    #[arg(long, conflicts_with = "resume")]
    run_id: Option<String>,
    /// Run over the sites that are up: files only down sites hold are skipped and each
    /// output says what was not read (also `[pipeline] partial = true` in the file).
    #[arg(long)]
    partial: bool,
    /// Finish run RUN_ID after a crash: only the input files no committed wave covers are
    /// read again (outputs that only map rows: features, predict, filters, a local sink).
    #[arg(long, value_name = "RUN_ID")]
    resume: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// File holding the bearer token (default: SHOAL_TOKEN).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// CA certificate (PEM) that signed the coordinator's TLS certificate.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// Embedded cluster only: where the sample data goes, its scale and the models folder.
    #[arg(long, default_value = "demo-data")]
    data: PathBuf,
    #[arg(long, default_value_t = 0.1)]
    scale: f64,
    #[arg(long)]
    models: Option<PathBuf>,
}

pub async fn run(args: PipelineArgs, mode: PipelineMode) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading pipeline file {}", args.file.display()))?;
    let params = args
        .set
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                .with_context(|| format!("--set {kv}: expected NAME=VALUE"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let request = PipelineRequest {
        file: args.file.display().to_string(),
        text,
        params,
        mode,
        run_id: args.resume.clone().or_else(|| args.run_id.clone()),
        resume: args.resume.is_some(),
        partial: args.partial,
    };
    let mut printer = Printer::new(args.format);
    match &args.coordinator {
        Some(url) => {
            let token = match &args.token_file {
                Some(path) => Some(read_secret_file(path)?),
                None => std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty()),
            };
            let tls = args.tls_ca.as_deref().map(client_tls).transpose()?;
            let connector = Connector::new(token.as_deref(), tls)?;
            let body = serde_json::to_vec(&request)?;
            client::action_stream(&connector, url, ACTION_PIPELINE, body, |bytes| {
                let event: PipelineEvent =
                    serde_json::from_slice(bytes).map_err(|e| shoal_engine::Error::Malformed {
                        what: "pipeline event".into(),
                        message: e.to_string(),
                    })?;
                printer
                    .event(event)
                    .map_err(|e| shoal_engine::Error::Malformed {
                        what: "a pipeline event's rows".into(),
                        message: e.to_string(),
                    })
            })
            .await?;
        }
        None => {
            // Models trained by a pipeline are registered in DATA/models, where the next
            // embedded run (e.g. an A/B pipeline using them) finds them.
            let (data, scale) = (args.data.clone(), args.scale);
            let sites = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<PathBuf>> {
                let sites = shoal_engine::tpch::generate_lineitem(&data, scale, 3, 2)?;
                shoal_engine::visits::generate_visits(
                    &sites,
                    super::demo::DEMO_VISITS_PER_SITE,
                    2,
                )?;
                Ok(sites)
            })
            .await??;
            let models = match &args.models {
                Some(m) => m.clone(),
                None => {
                    super::demo::registry_in(&args.data, &super::demo::default_models()?, false)?
                }
            };
            let options = CoordinatorOptions {
                models_dir: Some(models),
                ..Default::default()
            };
            let cluster = EmbeddedCluster::start_with_policy(
                options,
                &sites,
                shoal_engine::demo_site_policy(),
            )
            .await?;
            eprintln!(
                "embedded cluster: {} workers on TPC-H lineitem at scale {scale} and visits in {}",
                cluster.workers.len(),
                args.data.display()
            );
            let (tx, mut rx) = tokio::sync::mpsc::channel(64);
            let coordinator = cluster.coordinator.clone();
            // Both on this task: if printing fails, the receiver is dropped and the run
            // stops at its next event.
            let print = async {
                while let Some(event) = rx.recv().await {
                    printer.event(event)?;
                }
                anyhow::Ok(())
            };
            let (outcome, printed) =
                tokio::join!(coordinator.pipeline(request, &Principal::Open, tx), print);
            cluster.stop().await;
            printed?;
            outcome?;
        }
    }
    Ok(())
}

/// Turns events into terminal output.
struct Printer {
    format: Format,
    rows: HashMap<String, Vec<RecordBatch>>,
    bars: MultiProgress,
    bar: HashMap<String, ProgressBar>,
    interactive: bool,
}

impl Printer {
    fn new(format: Format) -> Self {
        let interactive = std::io::stderr().is_terminal();
        let target = if interactive {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Self {
            format,
            rows: HashMap::new(),
            bars: MultiProgress::with_draw_target(target),
            bar: HashMap::new(),
            interactive,
        }
    }

    fn bar(&mut self, output: &str, total: u64) -> &ProgressBar {
        let bars = &self.bars;
        self.bar.entry(output.to_string()).or_insert_with(|| {
            let bar = bars.add(ProgressBar::new(total));
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {human_pos}/{human_len} rows scanned, {per_sec}, ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(format!("{output}: scan+score on the workers"));
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        })
    }

    fn event(&mut self, event: PipelineEvent) -> anyhow::Result<()> {
        match event {
            PipelineEvent::Step { line } => eprintln!("  {line}"),
            PipelineEvent::Warning { message } => eprintln!("warning: {message}"),
            PipelineEvent::Fitted { line } => eprintln!("  fitted {line}"),
            PipelineEvent::Explain { output, text } => println!("== output '{output}'\n{text}"),
            PipelineEvent::Progress {
                output,
                rows_done,
                rows_total,
                ..
            } => {
                if self.interactive {
                    let bar = self.bar(&output, rows_total);
                    bar.set_length(rows_total);
                    bar.set_position(rows_done);
                }
            }
            PipelineEvent::Rows { output, ipc } => {
                let batches = PipelineEvent::decode_rows(&ipc)?;
                self.rows.entry(output).or_default().extend(batches);
            }
            PipelineEvent::Output {
                output,
                kind,
                rows,
                files,
                already_committed,
                elapsed_ms,
                bytes_scanned,
                bytes_to_coordinator,
                coverage,
            } => {
                if let Some(bar) = self.bar.remove(&output) {
                    bar.finish_and_clear();
                }
                println!("== output '{output}' ({kind}): {rows} rows");
                // A train output's rows are its training table.
                if kind == "client" || kind == "train" {
                    let batches = self.rows.remove(&output).unwrap_or_default();
                    if let Some(first) = batches.first() {
                        output::print(&first.schema(), &batches, self.format)?;
                    }
                } else {
                    if already_committed {
                        println!("run already committed: nothing was rewritten");
                    }
                    for f in &files {
                        println!(
                            "{}  {}  {} rows  {} bytes  sha256 {}",
                            f.site, f.file, f.rows, f.bytes, f.sha256
                        );
                    }
                }
                eprintln!(
                    "output '{output}': {rows} rows in {:.2}s; {} scanned on the sites, {} to the coordinator",
                    elapsed_ms as f64 / 1000.0,
                    human_bytes(bytes_scanned),
                    human_bytes(bytes_to_coordinator)
                );
                if let Some(coverage) = coverage {
                    eprintln!("output '{output}': {}", coverage.summary());
                }
            }
            PipelineEvent::Done { run_id, elapsed_ms } => {
                let id = run_id.map(|r| format!("run {r} ")).unwrap_or_default();
                eprintln!("{id}done in {:.2}s", elapsed_ms as f64 / 1000.0);
            }
        }
        Ok(())
    }
}

fn human_bytes(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}
