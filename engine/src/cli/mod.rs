//! Command-line front end. `anyhow` lives only here, in the binary.

mod demo;
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
                users: auth.user_pairs(),
                tokens: auth.tokens,
                cluster_secret: auth.cluster_secret,
                tls: tls.server(),
                tls_ca: tls.tls_ca.clone(),
                insecure,
                query_timeout: Duration::from_secs_f64(query_timeout),
                max_result_rows,
                ..Default::default()
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
            coordinator.serve(listener, shutdown_signal()).await?;
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
        } => {
            let mut options = WorkerOptions::new(data, coordinator);
            options.output_dir = output;
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
    }
}

async fn shutdown_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
