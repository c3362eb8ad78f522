//! Command-line front end. `anyhow` lives only here, in the binary.

mod demo;
mod output;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use shoal_engine::client;
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

#[derive(Subcommand)]
enum Command {
    /// Embedded cluster (coordinator + workers on loopback) on generated TPC-H data, with
    /// predict queries, their stage placement and bytes moved.
    Demo(demo::DemoArgs),
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
    },
    /// Run a SQL statement on a coordinator over Flight SQL.
    Sql {
        #[arg(long, default_value = "http://127.0.0.1:50050")]
        coordinator: String,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        /// Do not print the bytes-moved report on stderr.
        #[arg(long)]
        quiet: bool,
        query: String,
    },
    /// List the coordinator's models (same as `shoal sql "SHOW MODELS"`).
    Models {
        #[arg(long, default_value = "http://127.0.0.1:50050")]
        coordinator: String,
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
        Command::Coordinator {
            listen,
            models,
            heartbeat_timeout,
        } => {
            let options = CoordinatorOptions {
                models_dir: models,
                heartbeat_timeout: Duration::from_secs_f64(heartbeat_timeout),
                ..Default::default()
            };
            let coordinator = Coordinator::new(options)?;
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            eprintln!(
                "coordinator listening on {} with {} model(s)",
                listener.local_addr()?,
                shoal_operators::ModelProvider::list(coordinator.models().as_ref()).len()
            );
            coordinator.serve(listener, shutdown_signal()).await?;
            Ok(())
        }
        Command::Worker {
            coordinator,
            listen,
            data,
            name,
        } => {
            let mut options = WorkerOptions::new(data, coordinator);
            options.listen = listen;
            options.name = name;
            let worker = WorkerProcess::start(options).await?;
            eprintln!("worker '{}' serving at {}", worker.name, worker.url);
            shutdown_signal().await;
            worker.stop().await;
            Ok(())
        }
        Command::Sql {
            coordinator,
            format,
            quiet,
            query,
        } => {
            let result = client::execute_sql(&coordinator, &query).await?;
            output::print(&result.schema, &result.batches, format)?;
            if !quiet
                && let Some(id) = result.query_id
                && let Ok(report) = client::query_report(&coordinator, &id).await
            {
                eprintln!("{}", report.summary());
            }
            Ok(())
        }
        Command::Models {
            coordinator,
            format,
        } => {
            let result = client::execute_sql(&coordinator, "SHOW MODELS").await?;
            output::print(&result.schema, &result.batches, format)
        }
    }
}

async fn shutdown_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
