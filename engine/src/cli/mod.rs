//! Command-line front end. `anyhow` lives only here, in the binary.

mod demo;
mod demo_training;
mod limits;
mod output;
mod pipeline;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use limits::StatementLimitArgs;
use shoal_engine::client;
use shoal_engine::health::{HealthServer, Readiness};
use shoal_engine::protocol::PipelineMode;
use shoal_engine::security::{
    AuthFile, CLUSTER_SECRET_ENV, Connector, ServerTls, client_tls, load_auth_file,
    read_secret_file,
};
use shoal_engine::worker::DataLocation;
use shoal_engine::{Coordinator, CoordinatorOptions, SitePolicy, WorkerOptions, WorkerProcess};
use shoal_sql::statement::StatementLimits;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "shoal",
    version,
    about = "Score data where it lies: SQL with ML functions over a cluster of data sites"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    inference: InferenceArgs,
    #[command(flatten)]
    limits: StatementLimitArgs,
}

/// This process's `shoal.inference.*` settings (for every command that runs models: a
/// worker, a coordinator, the embedded cluster of `demo` and `run`).
#[derive(clap::Args, Clone)]
struct InferenceArgs {
    /// Concurrent model runs in this process, each with its own ONNX Runtime session
    /// (shoal.inference.slots; default: one per core).
    #[arg(long, global = true, env = "SHOAL_INFERENCE_SLOTS", value_parser = clap::value_parser!(u32).range(1..=4096))]
    inference_slots: Option<u32>,
    /// Score tree ensembles with shoal's native evaluator (shoal.inference.native_trees);
    /// false: with ONNX Runtime.
    #[arg(long, global = true, default_value_t = true, action = clap::ArgAction::Set)]
    native_trees: bool,
    /// Score dense models (MatMul/Gemm chains, linear models) on the CPU with shoal's native
    /// evaluator (shoal.inference.native_dense); false: with ONNX Runtime.
    #[arg(long, global = true, default_value_t = true, action = clap::ArgAction::Set)]
    native_dense: bool,
}

impl InferenceArgs {
    fn apply(&self) {
        let options = shoal_operators::config::InferenceOptions {
            slots: self.inference_slots.map_or(0, |n| n as usize),
            native_trees: self.native_trees,
            native_dense: self.native_dense,
            ..shoal_operators::ShoalOptions::default().inference
        };
        // First thing the process does: nothing has read the settings yet.
        if shoal_operators::runtime::configure(options).is_err() {
            tracing::warn!("inference settings were read before the command line applied them");
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

/// TLS for an endpoint this process serves, and trust for the endpoints it calls.
#[derive(clap::Args, Clone, Default)]
struct TlsArgs {
    /// Serve TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA certificate (PEM) that signed the TLS endpoints this process connects to.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
}

impl TlsArgs {
    fn server(&self) -> Option<ServerTls> {
        Some(ServerTls {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
        })
    }
}

/// How a client reaches the coordinator. The token comes from SHOAL_TOKEN or a file, never
/// from an argument (arguments show in `ps`).
#[derive(clap::Args, Clone)]
struct ClientArgs {
    /// Coordinator URL: grpc://host:port, grpc+tls://host:port (or http://, https://).
    #[arg(long, default_value = "grpc://127.0.0.1:50050")]
    coordinator: String,
    /// File holding the bearer token (default: the SHOAL_TOKEN environment variable).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// CA certificate (PEM) that signed the coordinator's TLS certificate.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
}

impl ClientArgs {
    fn connector(&self) -> anyhow::Result<Connector> {
        let token = match &self.token_file {
            Some(path) => Some(read_secret_file(path)?),
            None => std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty()),
        };
        let tls = self.tls_ca.as_deref().map(client_tls).transpose()?;
        Ok(Connector::new(token.as_deref(), tls)?)
    }
}

/// The client's bearer token.
pub(crate) const TOKEN_ENV: &str = "SHOAL_TOKEN";

#[derive(Subcommand)]
enum Command {
    /// Embedded cluster (coordinator + workers on loopback) on generated TPC-H data, with
    /// predict queries, their stage placement and bytes moved.
    Demo(demo::DemoArgs),
    /// Generate TPC-H lineitem split over site folders (OUT/site-1, ...), as the demo does.
    Tpch {
        /// Scale factor (1.0 is 6M rows).
        #[arg(long, default_value_t = 0.1)]
        scale: f64,
        #[arg(long, default_value_t = 3)]
        sites: usize,
        #[arg(long, default_value_t = 2)]
        files_per_site: usize,
        #[arg(long)]
        out: PathBuf,
    },
    /// Run a coordinator: Flight SQL for clients, catalog and model registry for workers.
    Coordinator {
        #[arg(long, default_value = "127.0.0.1:50050")]
        listen: String,
        /// HOST[:PORT] clients and workers dial, when it is not the --listen address (which
        /// may be 0.0.0.0, or behind NAT); TLS certificates must name HOST.
        #[arg(long)]
        advertise: Option<String>,
        /// Serve plain-HTTP health endpoints for probes here: GET /healthz (live),
        /// GET /readyz (serving). They say nothing else.
        #[arg(long)]
        health_listen: Option<String>,
        /// Folder of <name>.onnx models to register.
        #[arg(long)]
        models: Option<PathBuf>,
        /// Silence after which a worker counts as down (e.g. 5s, 800ms; a bare number is
        /// seconds).
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        heartbeat_timeout: Duration,
        /// Time between a worker's heartbeats (told to each worker as it registers).
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        heartbeat_interval: Duration,
        /// Times a statement is planned again and re-run on the remaining holders of its
        /// files when a worker is lost mid-query.
        #[arg(long, default_value_t = 2)]
        task_retries: u32,
        /// Time without progress (no row scanned on any worker, no result batch) after
        /// which a statement fails.
        #[arg(long, default_value = "300s", value_parser = parse_duration)]
        stall_timeout: Duration,
        /// Input files each site reads per wave of a resumable pipeline run (0: the core
        /// count); smaller waves checkpoint more often.
        #[arg(long, default_value_t = 0)]
        wave_files: usize,
        /// Partitions each site's scan is split into (default: the coordinator's cores).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
        target_partitions: Option<u32>,
        /// TOML file with client tokens, users and the cluster secret (see README); also
        /// read: SHOAL_TOKENS (comma-separated tokens), SHOAL_CLUSTER_SECRET.
        #[arg(long)]
        auth_file: Option<PathBuf>,
        #[command(flatten)]
        tls: TlsArgs,
        /// Listen beyond loopback without client authentication.
        #[arg(long)]
        insecure: bool,
        /// Time a statement may run before it is stopped on every worker.
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        query_timeout: Duration,
        /// Rows a statement may return to a client.
        #[arg(long, default_value_t = 100_000_000)]
        max_result_rows: u64,
        /// Memory the coordinator's statements may hold, e.g. 512MiB or 4GiB (default: 70% of
        /// the machine's memory). Past it, they spill or fail with a resources-exhausted
        /// error; the coordinator keeps running.
        #[arg(long, value_parser = parse_bytes)]
        memory_limit: Option<usize>,
        /// Trials a CREATE MODEL search may run; a larger grid is refused naming its size.
        #[arg(long, default_value_t = shoal_sql::train::options::DEFAULT_MAX_SEARCH_TRIALS,
              value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000))]
        max_search_trials: usize,
    },
    /// Run a worker over a data folder or bucket prefix: DATA/<table>/ of Parquet, CSV,
    /// JSON or Arrow IPC files (Hive partition folders allowed).
    Worker {
        #[arg(long, default_value = "http://127.0.0.1:50050")]
        coordinator: String,
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// HOST[:PORT] the coordinator and other sites dial, when it is not the --listen
        /// address (which may be 0.0.0.0, or behind NAT); TLS certificates must name HOST.
        #[arg(long)]
        advertise: Option<String>,
        /// Serve plain-HTTP health endpoints for probes here: GET /healthz (live),
        /// GET /readyz (registered with the coordinator). They say nothing else.
        #[arg(long)]
        health_listen: Option<String>,
        /// A folder, or a bucket prefix: s3://bucket/prefix, gs://..., az://...,
        /// http(s)://... (credentials and endpoint from the store's standard environment
        /// variables: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...).
        #[arg(long)]
        data: String,
        /// Bound on each request to an object store; a stalled read fails naming the object
        /// after it and 3 retries.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        store_timeout: Duration,
        /// How often the data is listed again, so new, changed and removed files are served
        /// without a restart (0: never).
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        rescan_interval: Duration,
        /// Site name (lowercase letters, digits, '-'); defaults to worker-<port>.
        #[arg(long)]
        name: Option<String>,
        /// File holding this site's secret: from `shoal enroll`, the one listed for it in
        /// the coordinator's [[sites]], or the cluster_secret every site shares (default:
        /// SHOAL_CLUSTER_SECRET). The site runs plans only from a coordinator that knows it.
        #[arg(long, alias = "cluster-secret-file")]
        site_secret_file: Option<PathBuf>,
        #[command(flatten)]
        tls: TlsArgs,
        /// Listen beyond loopback without a site secret.
        #[arg(long)]
        insecure: bool,
        /// Where pipeline sinks write on this site (default: DATA/.shoal-output).
        #[arg(long)]
        output: Option<PathBuf>,
        /// Memory the worker's queries and models may hold, e.g. 512MiB or 4GiB (default:
        /// 70% of the machine's memory). Past it, queries spill or fail with a
        /// resources-exhausted error; the worker keeps running.
        #[arg(long, value_parser = parse_bytes)]
        memory_limit: Option<usize>,
        /// Time a stopping worker (Ctrl-C, SIGTERM) lets its running tasks finish.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        drain_timeout: Duration,
        /// Private folder (0700) for the models this worker fetches (default:
        /// ~/.cache/shoal/models/NAME).
        #[arg(long)]
        model_cache: Option<PathBuf>,
        /// The site's egress policy (TOML; see README "What leaves a site"). Without it,
        /// every table is aggregates-only with min_group_rows = 10.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Folder of the site's audit log (default: DATA/.shoal-audit).
        #[arg(long)]
        audit_log: Option<PathBuf>,
        /// Devices to score on: cpu, or GPUs as cuda:0,cuda:1 (default: the CPU and every
        /// NVIDIA GPU detected that works). A GPU named here that cannot be used (no such
        /// device, the CPU build of ONNX Runtime, a CUDA library missing) stops the worker
        /// from starting, with the reason.
        #[arg(long)]
        devices: Option<String>,
        /// Model runs at once on each GPU, each with its own ONNX Runtime session; the other
        /// batches wait for one.
        #[arg(long, default_value_t = 1, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=64))]
        gpu_streams: usize,
        /// GPU memory the sessions on one GPU may hold together, e.g. 8GiB (ONNX Runtime's
        /// arena limit, split between the streams); default: no limit.
        #[arg(long, value_parser = parse_bytes)]
        gpu_memory_limit: Option<usize>,
        /// Rows per batch a statement's scans read on this site when its models may run on
        /// a GPU (a pipeline node's batch_size still bounds each model run).
        #[arg(long, default_value_t = shoal_operators::device::GPU_BATCH_ROWS,
              value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=4_194_304))]
        gpu_batch_rows: usize,
    },
    /// Print a site's secret, derived from the coordinator's site_key: give it to that
    /// site's operator (it is the worker's --site-secret-file), and to nobody else.
    Enroll {
        /// The coordinator's auth file (its site_key).
        #[arg(long)]
        auth_file: PathBuf,
        /// The site's name, as its worker gives it with --name.
        #[arg(long)]
        site: String,
        /// Write the secret to this file (mode 0600) instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Summarise a site's audit log: what ran, what was refused, what left.
    Audit {
        /// The worker's data folder (its log is DATA/.shoal-audit).
        #[arg(long, required_unless_present = "audit_log")]
        data: Option<PathBuf>,
        /// The log folder, if the worker was given --audit-log.
        #[arg(long)]
        audit_log: Option<PathBuf>,
        /// Print every line as JSON instead of the summary.
        #[arg(long)]
        json: bool,
    },
    /// Run a SQL statement on a coordinator over Flight SQL.
    Sql {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        /// Do not print the bytes-moved report on stderr.
        #[arg(long)]
        quiet: bool,
        /// Answer from the sites that are up: files only down sites hold are skipped, and
        /// the report says which and what share of the rows (without it, a site that is
        /// down fails the statement).
        #[arg(long)]
        partial: bool,
        /// Where the sites run the statement's models: auto (a GPU the site has, else its
        /// CPU), cpu, cuda (a GPU required) or cuda:N (shoal.inference.device).
        #[arg(long)]
        device: Option<String>,
        /// A site without the GPU asked for scores on the CPU, and the report says so per
        /// site (without it the statement fails naming the reason).
        #[arg(long)]
        device_fallback: bool,
        query: String,
    },
    /// Run a pipeline file: on --coordinator, or an embedded cluster on the sample data.
    Run(pipeline::PipelineArgs),
    /// Show a pipeline's steps, stages, placement and data movement without running it.
    Explain(pipeline::PipelineArgs),
    /// Check a pipeline file (keys, inputs, cycles, tables, models, columns, types).
    Validate(pipeline::PipelineArgs),
    /// List the coordinator's models (same as `shoal sql "SHOW MODELS"`).
    Models {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// List the workers the coordinator knows: name, URL, live or down, tables.
    Sites {
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// The health endpoints, where asked for (`--health-listen`).
async fn start_health(
    listen: Option<&str>,
    readiness: &Readiness,
) -> anyhow::Result<Option<HealthServer>> {
    match listen {
        Some(addr) => Ok(Some(HealthServer::start(addr, readiness.clone()).await?)),
        None => Ok(None),
    }
}

pub fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SHOAL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    cli.inference.apply();
    let limits = cli.limits.limits();
    // Every thread that may plan, encode, decode or run a statement gets a stack that holds
    // the deepest statement the limits allow (DataFusion walks expressions recursively).
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(limits.thread_stack_bytes())
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, limits)) {
        Ok(()) => ExitCode::SUCCESS,
        // `shoal sql ... | head`: the reader has all it wanted.
        Err(e) if output::is_closed_stdout(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, limits: StatementLimits) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo(args) => demo::run(args).await,
        Command::Run(args) => pipeline::run(args, PipelineMode::Run).await,
        Command::Explain(args) => pipeline::run(args, PipelineMode::Explain).await,
        Command::Validate(args) => {
            pipeline::run(args, PipelineMode::Validate).await?;
            eprintln!("pipeline is valid");
            Ok(())
        }
        Command::Tpch {
            scale,
            sites,
            files_per_site,
            out,
        } => {
            anyhow::ensure!(
                sites >= 1 && files_per_site >= 1 && scale > 0.0,
                "--scale, --sites and --files-per-site must be positive"
            );
            let folders = tokio::task::spawn_blocking(move || {
                shoal_engine::tpch::generate_lineitem(&out, scale, sites, files_per_site)
            })
            .await??;
            for folder in folders {
                println!("{}", folder.display());
            }
            Ok(())
        }
        Command::Coordinator {
            listen,
            advertise,
            health_listen,
            models,
            heartbeat_timeout,
            heartbeat_interval,
            task_retries,
            stall_timeout,
            wave_files,
            target_partitions,
            auth_file,
            tls,
            insecure,
            query_timeout,
            max_result_rows,
            max_search_trials,
            memory_limit,
        } => {
            let auth = match &auth_file {
                Some(path) => load_auth_file(path)?,
                None => AuthFile::default(),
            }
            .with_environment()?;
            let options = CoordinatorOptions {
                models_dir: models,
                heartbeat_timeout,
                heartbeat_interval,
                task_retries,
                stall_timeout,
                wave_files,
                target_partitions: target_partitions.map(|n| n as usize),
                users: auth.user_pairs(),
                roles: auth.roles(),
                grants: auth.grants(),
                sites: auth.site_pairs(),
                tokens: auth.tokens,
                site_key: auth.site_key,
                cluster_secret: auth.cluster_secret,
                tls: tls.server(),
                tls_ca: tls.tls_ca.clone(),
                insecure,
                query_timeout,
                max_result_rows,
                statement_limits: limits,
                max_search_trials,
                memory_limit: memory_limit.or_else(shoal_engine::memory::default_memory_limit),
            };
            let coordinator = Coordinator::new(options)?;
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            let server_tls = tls.server();
            let scheme = if server_tls.is_some() {
                "grpc+tls"
            } else {
                "grpc"
            };
            let bound = listener.local_addr()?;
            // Workers are told the coordinator's address by their operators (--coordinator):
            // bound to every interface without --advertise, it only prints the bound one.
            let url = if advertise.is_none() && bound.ip().is_unspecified() {
                format!("{scheme}://{bound}")
            } else {
                shoal_engine::address::advertised_url(
                    scheme,
                    "coordinator",
                    advertise.as_deref(),
                    bound,
                    server_tls.as_ref(),
                )?
            };
            eprintln!(
                "coordinator serving Flight SQL at {url} with {} model(s){}",
                shoal_operators::ModelProvider::list(coordinator.models().as_ref()).len(),
                if coordinator.authenticator().requires_client_auth() {
                    "; clients must authenticate"
                } else {
                    ""
                }
            );
            let readiness = Readiness::default();
            let _health = start_health(health_listen.as_deref(), &readiness).await?;
            readiness.set(true);
            let stopping = async move {
                shutdown_signal().await;
                readiness.set(false);
                // Work holding a thread (a training pass, a slow model) stops at its next
                // check rather than keeping the process alive.
                shoal_operators::cancel::shut_down();
            };
            shoal_engine::coordinator::serve(coordinator, listener, stopping).await?;
            Ok(())
        }
        Command::Worker {
            coordinator,
            listen,
            advertise,
            health_listen,
            data,
            store_timeout,
            rescan_interval,
            name,
            site_secret_file,
            tls,
            insecure,
            output,
            memory_limit,
            drain_timeout,
            model_cache,
            policy,
            audit_log,
            devices,
            gpu_streams,
            gpu_memory_limit,
            gpu_batch_rows,
        } => {
            let mut options = WorkerOptions::new(DataLocation::parse(&data)?, coordinator);
            options.devices = devices
                .map(|list| shoal_operators::device::parse_list(&list))
                .transpose()?;
            options.gpu = shoal_operators::device::GpuOptions {
                streams: gpu_streams,
                memory_limit: gpu_memory_limit,
                batch_rows: gpu_batch_rows,
            };
            options.store_limits.timeout = store_timeout;
            options.rescan_interval = rescan_interval;
            if let Some(path) = &policy {
                options.policy = std::sync::Arc::new(SitePolicy::load(path)?);
            }
            options.audit_dir = audit_log;
            options.model_cache = model_cache;
            options.output_dir = output;
            if memory_limit.is_some() {
                options.memory_limit = memory_limit;
            }
            options.drain_timeout = drain_timeout;
            options.listen = listen;
            options.advertise = advertise;
            options.name = name;
            options.site_secret = match &site_secret_file {
                Some(path) => Some(read_secret_file(path)?),
                None => std::env::var(CLUSTER_SECRET_ENV)
                    .ok()
                    .filter(|s| !s.trim().is_empty()),
            };
            options.tls = tls.server();
            options.tls_ca = tls.tls_ca;
            options.insecure = insecure;
            let readiness = Readiness::default();
            let _health = start_health(health_listen.as_deref(), &readiness).await?;
            let worker = WorkerProcess::start(options).await?;
            readiness.set(true);
            eprintln!("worker '{}' serving at {}", worker.name, worker.url);
            shutdown_signal().await;
            readiness.set(false);
            worker.stop().await;
            Ok(())
        }
        Command::Enroll {
            auth_file,
            site,
            out,
        } => {
            let auth = load_auth_file(&auth_file)?;
            let key = auth.site_key.as_deref().with_context(|| {
                format!(
                    "{} has no site_key: add one (a long random string) to enroll sites",
                    auth_file.display()
                )
            })?;
            let secret = shoal_engine::security::identity::enroll(key, &site)?;
            match out {
                Some(path) => {
                    write_private(&path, &secret)?;
                    eprintln!("site '{site}': secret written to {}", path.display());
                }
                None => println!("{secret}"),
            }
            Ok(())
        }
        Command::Audit {
            data,
            audit_log,
            json,
        } => {
            let dir = match (audit_log, data) {
                (Some(dir), _) => dir,
                (None, Some(data)) => shoal_engine::worker::audit::default_dir(&data),
                (None, None) => anyhow::bail!("give --data DIR or --audit-log DIR"),
            };
            let records =
                shoal_engine::worker::audit::read_all(&dir).map_err(anyhow::Error::msg)?;
            if json {
                for record in &records {
                    println!("{}", serde_json::to_string(record)?);
                }
            } else {
                print!("{}", shoal_engine::worker::audit::summary(&records));
            }
            Ok(())
        }
        Command::Sql {
            client,
            format,
            quiet,
            partial,
            device,
            device_fallback,
            query,
        } => {
            let connector = client.connector()?;
            let asks = shoal_engine::protocol::StatementAsks {
                partial,
                device: device.unwrap_or_default(),
                device_fallback,
            };
            let result =
                client::execute_sql_as(&connector, &client.coordinator, &query, &asks).await?;
            output::print(&result.schema, &result.batches, format)?;
            if !quiet
                && let Some(id) = result.query_id
                && let Ok(report) = client::query_report(&connector, &client.coordinator, &id).await
            {
                eprintln!("{}", report.summary());
            }
            Ok(())
        }
        Command::Models { client, format } => {
            let connector = client.connector()?;
            let result =
                client::execute_sql(&connector, &client.coordinator, "SHOW MODELS").await?;
            output::print(&result.schema, &result.batches, format)
        }
        Command::Sites { client } => {
            let connector = client.connector()?;
            let reply = client::action(
                &connector,
                &client.coordinator,
                shoal_engine::protocol::ACTION_SITES,
                Vec::new(),
            )
            .await?;
            let sites: Vec<shoal_engine::protocol::SiteStatus> = serde_json::from_slice(&reply)?;
            for site in sites {
                println!(
                    "{}\t{}\t{}\t{} table(s)\t{}",
                    site.name,
                    site.url,
                    if site.live { "live" } else { "down" },
                    site.tables,
                    site.devices.join(",")
                );
            }
            Ok(())
        }
    }
}

/// Ctrl-C or SIGTERM (what `kill` and service managers send): both stop gracefully.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

/// `512MiB`, `4GiB`, `1.5GB`, `100000` (bytes).
/// The longest duration a flag takes: deadlines are `now + duration`, which must not
/// overflow.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// A duration: `1.5` (seconds), `300ms`, `5s`, `2m`, `1h`, `1h 30m` (humantime's syntax),
/// at most a year. Negative, infinite, NaN or longer values are refused rather than
/// panicking.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let duration = match trimmed.parse::<f64>() {
        Ok(seconds) => Duration::try_from_secs_f64(seconds)
            .map_err(|_| format!("'{text}' is not a duration: use e.g. 5s, 300ms or 1h"))?,
        Err(_) => humantime::parse_duration(trimmed)
            .map_err(|e| format!("'{text}' is not a duration ({e}): use e.g. 5s, 300ms or 1h"))?,
    };
    if duration > MAX_DURATION {
        return Err(format!("'{text}' is longer than a year"));
    }
    Ok(duration)
}

fn parse_bytes(text: &str) -> Result<usize, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a size such as 512MiB or 4GiB"))?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "unknown size unit '{other}' in '{text}': use B, KiB, MiB or GiB"
            ));
        }
    };
    Ok((number * scale) as usize)
}

/// Writes a secret to a new file only its owner can read (refusing to overwrite one).
fn write_private(path: &std::path::Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {} (it must not exist yet)", path.display()))?;
    writeln!(file, "{secret}").with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_and_bare_seconds_and_refuse_nonsense() {
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        for bad in ["-1", "NaN", "inf", "soon", "", "1e30", "400days"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
