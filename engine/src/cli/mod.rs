//! Command-line front end. `anyhow` lives only here, in the binary.

mod demo;
mod demo_training;
mod output;
mod pipeline;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use shoal_engine::client;
use shoal_engine::protocol::PipelineMode;
use shoal_engine::security::{
    AuthFile, CLUSTER_SECRET_ENV, Connector, ServerTls, client_tls, load_auth_file,
    read_secret_file,
};
use shoal_engine::{Coordinator, CoordinatorOptions, WorkerOptions, WorkerProcess};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "shoal",
    version,
    about = "Score Parquet where it lies: SQL with ML functions over a cluster of data sites"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
        /// Folder of <name>.onnx models to register.
        #[arg(long)]
        models: Option<PathBuf>,
        /// Seconds of silence after which a worker counts as down.
        #[arg(long, default_value_t = 5.0)]
        heartbeat_timeout: f64,
        /// Seconds between a worker's heartbeats (told to each worker as it registers).
        #[arg(long, default_value_t = 1.0)]
        heartbeat_interval: f64,
        /// Times a statement is planned again and re-run on the remaining holders of its
        /// files when a worker is lost mid-query.
        #[arg(long, default_value_t = 2)]
        task_retries: u32,
        /// Seconds without progress (no row scanned on any worker, no result batch) after
        /// which a statement fails.
        #[arg(long, default_value_t = 300.0)]
        stall_timeout: f64,
        /// Input files each site reads per wave of a resumable pipeline run (0: the core
        /// count); smaller waves checkpoint more often.
        #[arg(long, default_value_t = 0)]
        wave_files: usize,
        /// TOML file with client tokens, users and the cluster secret (see README); also
        /// read: SHOAL_TOKENS (comma-separated tokens), SHOAL_CLUSTER_SECRET.
        #[arg(long)]
        auth_file: Option<PathBuf>,
        #[command(flatten)]
        tls: TlsArgs,
        /// Listen beyond loopback without client authentication.
        #[arg(long)]
        insecure: bool,
        /// Seconds a statement may run before it is stopped on every worker.
        #[arg(long, default_value_t = 3600.0)]
        query_timeout: f64,
        /// Rows a statement may return to a client.
        #[arg(long, default_value_t = 100_000_000)]
        max_result_rows: u64,
    },
    /// Run a worker over a data folder holding DIR/<table>/*.parquet.
    Worker {
        #[arg(long, default_value = "http://127.0.0.1:50050")]
        coordinator: String,
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        #[arg(long)]
        data: PathBuf,
        /// Site name (lowercase letters, digits, '-'); defaults to worker-<port>.
        #[arg(long)]
        name: Option<String>,
        /// File holding the cluster secret (default: SHOAL_CLUSTER_SECRET).
        #[arg(long)]
        cluster_secret_file: Option<PathBuf>,
        #[command(flatten)]
        tls: TlsArgs,
        /// Listen beyond loopback without a cluster secret.
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
        /// Seconds a stopping worker (Ctrl-C, SIGTERM) lets its running tasks finish.
        #[arg(long, default_value_t = 30.0)]
        drain_timeout: f64,
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

pub fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SHOAL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
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
            models,
            heartbeat_timeout,
            heartbeat_interval,
            task_retries,
            stall_timeout,
            wave_files,
            auth_file,
            tls,
            insecure,
            query_timeout,
            max_result_rows,
        } => {
            let auth = match &auth_file {
                Some(path) => load_auth_file(path)?,
                None => AuthFile::default(),
            }
            .with_environment()?;
            let options = CoordinatorOptions {
                models_dir: models,
                heartbeat_timeout: Duration::from_secs_f64(heartbeat_timeout),
                heartbeat_interval: Duration::from_secs_f64(heartbeat_interval),
                task_retries,
                stall_timeout: Duration::from_secs_f64(stall_timeout),
                wave_files,
                users: auth.user_pairs(),
                tokens: auth.tokens,
                cluster_secret: auth.cluster_secret,
                tls: tls.server(),
                tls_ca: tls.tls_ca.clone(),
                insecure,
                query_timeout: Duration::from_secs_f64(query_timeout),
                max_result_rows,
            };
            let coordinator = Coordinator::new(options)?;
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            let scheme = if tls.server().is_some() {
                "grpc+tls"
            } else {
                "grpc"
            };
            eprintln!(
                "coordinator serving Flight SQL at {scheme}://{} with {} model(s){}",
                listener.local_addr()?,
                shoal_operators::ModelProvider::list(coordinator.models().as_ref()).len(),
                if coordinator.authenticator().requires_client_auth() {
                    "; clients must authenticate"
                } else {
                    ""
                }
            );
            shoal_engine::coordinator::serve(coordinator, listener, shutdown_signal()).await?;
            Ok(())
        }
        Command::Worker {
            coordinator,
            listen,
            data,
            name,
            cluster_secret_file,
            tls,
            insecure,
            output,
            memory_limit,
            drain_timeout,
        } => {
            let mut options = WorkerOptions::new(data, coordinator);
            options.output_dir = output;
            if memory_limit.is_some() {
                options.memory_limit = memory_limit;
            }
            options.drain_timeout = Duration::from_secs_f64(drain_timeout);
            options.listen = listen;
            options.name = name;
            options.cluster_secret = match &cluster_secret_file {
                Some(path) => Some(read_secret_file(path)?),
                None => std::env::var(CLUSTER_SECRET_ENV)
                    .ok()
                    .filter(|s| !s.trim().is_empty()),
            };
            options.tls = tls.server();
            options.tls_ca = tls.tls_ca;
            options.insecure = insecure;
            let worker = WorkerProcess::start(options).await?;
            eprintln!("worker '{}' serving at {}", worker.name, worker.url);
            shutdown_signal().await;
            worker.stop().await;
            Ok(())
        }
        Command::Sql {
            client,
            format,
            quiet,
            query,
        } => {
            let connector = client.connector()?;
            let result = client::execute_sql(&connector, &client.coordinator, &query).await?;
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
                    "{}\t{}\t{}\t{} table(s)",
                    site.name,
                    site.url,
                    if site.live { "live" } else { "down" },
                    site.tables
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
