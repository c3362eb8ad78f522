//! Runs every `tests/slt/**/*.slt` file twice: on single-node DataFusion (one process) and
//! on a 3-worker embedded cluster. The same expected output must hold for both.
//!
//! `cargo test -p shoal-tests --test sqllogictests` runs them; add `-- --complete` to
//! rewrite the expected results from the single-process engine.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use shoal_engine::EmbeddedCluster;
use shoal_sql::ShoalStatement;
use shoal_tests::{local_context, start_cluster, to_rows};
use sqllogictest::{DBOutput, DefaultColumnType, Runner};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Debug)]
struct SltError(String);

impl std::fmt::Display for SltError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SltError {}

enum Engine {
    Local(SessionContext),
    Cluster(Arc<EmbeddedCluster>),
}

struct Db {
    engine: Engine,
    name: &'static str,
}

fn column_type(dt: &DataType) -> DefaultColumnType {
    match dt {
        d if d.is_integer() => DefaultColumnType::Integer,
        d if d.is_floating() || matches!(d, DataType::Decimal128(..)) => {
            DefaultColumnType::FloatingPoint
        }
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => DefaultColumnType::Text,
        _ => DefaultColumnType::Any,
    }
}

#[async_trait]
impl sqllogictest::AsyncDB for Db {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        let err = |e: String| SltError(e);
        let (schema, batches) = match &self.engine {
            Engine::Local(ctx) => {
                // The same parser and dispatch as the coordinator's; CREATE MODEL needs a
                // cluster (`onlyif cluster` in the files).
                let statement = ShoalStatement::parse(sql).map_err(|e| err(e.to_string()))?;
                if let ShoalStatement::Explain(inner) = &statement {
                    return local_explain(ctx, inner).await.map_err(err);
                }
                let df = statement
                    .dataframe(ctx, shoal_sql::statement::client_options())
                    .await
                    .map_err(|e| err(e.to_string()))?
                    .ok_or_else(|| err(format!("{} runs on the cluster only", statement.kind())))?;
                let schema = Arc::new(df.schema().as_arrow().clone());
                let batches = df
                    .execute_stream()
                    .await
                    .map_err(|e| err(e.to_string()))?
                    .try_collect::<Vec<_>>()
                    .await
                    .map_err(|e| err(e.to_string()))?;
                (schema, batches)
            }
            Engine::Cluster(cluster) => {
                let out = cluster.sql(sql).await.map_err(|e| err(e.to_string()))?;
                (out.schema, out.batches)
            }
        };
        if schema.fields().is_empty() {
            return Ok(DBOutput::StatementComplete(0));
        }
        Ok(DBOutput::Rows {
            types: schema
                .fields()
                .iter()
                .map(|f| column_type(f.data_type()))
                .collect(),
            rows: slt_rows(to_rows(&batches)),
        })
    }

    fn engine_name(&self) -> &str {
        self.name
    }

    async fn shutdown(&mut self) {}
}

/// shoal's EXPLAIN on one process: the same text the coordinator makes, for a plan that
/// reads no site (every table is local), one line per plan row.
async fn local_explain(
    ctx: &SessionContext,
    statement: &ShoalStatement,
) -> Result<DBOutput<DefaultColumnType>, String> {
    let df = match statement {
        ShoalStatement::Sql(_) | ShoalStatement::ShowModels => statement
            .dataframe(ctx, shoal_sql::statement::client_options())
            .await
            .map_err(|e| e.to_string())?
            .ok_or("not a query")?,
        other => return Err(format!("{} cannot be explained again", other.kind())),
    };
    let plan = df.create_physical_plan().await.map_err(|e| e.to_string())?;
    let catalog = shoal_planner::SiteCatalog::new(std::time::Duration::from_secs(5));
    let text =
        shoal_planner::explain::explain_stages(&plan, &catalog, &()).map_err(|e| e.to_string())?;
    Ok(DBOutput::Rows {
        types: vec![DefaultColumnType::Text],
        rows: slt_rows(text.lines().map(|l| vec![l.to_string()]).collect()),
    })
}

/// An empty cell written `(empty)`, as DataFusion's sqllogictests do: an empty line would
/// end the record.
fn slt_rows(rows: Vec<Vec<String>>) -> Vec<Vec<String>> {
    rows.into_iter()
        .map(|row| {
            row.into_iter()
                .map(|cell| {
                    if cell.is_empty() {
                        "(empty)".into()
                    } else {
                        cell
                    }
                })
                .collect()
        })
        .collect()
}

fn slt_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            slt_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "slt") {
            out.push(path);
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    // cargo-nextest lists a harness-less test binary with `--list --format terse`: the
    // whole suite is one test.
    if args.iter().any(|a| a == "--list") {
        if !args.iter().any(|a| a == "--ignored") {
            println!("sqllogictests: test");
        }
        return ExitCode::SUCCESS;
    }
    let complete = args.iter().any(|a| a == "--complete");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let mut files = Vec::new();
        slt_files(&shoal_tests::repo_root().join("tests/slt"), &mut files);
        files.sort();
        let local = local_context().await;
        let cluster = Arc::new(start_cluster().await);
        let mut failures = 0;
        let mut passed = 0;
        for file in &files {
            for (name, engine) in [
                ("single-process", Engine::Local(local.clone())),
                ("cluster", Engine::Cluster(cluster.clone())),
            ] {
                let is_local = name == "single-process";
                let mut runner = Runner::new(move || {
                    let engine = match &engine {
                        Engine::Local(ctx) => Engine::Local(ctx.clone()),
                        Engine::Cluster(c) => Engine::Cluster(c.clone()),
                    };
                    async move { Ok(Db { engine, name }) }
                });
                runner.add_label(name);
                let result = if complete && is_local {
                    runner
                        .update_test_file(
                            file,
                            " ",
                            sqllogictest::default_validator,
                            sqllogictest::default_normalizer,
                            sqllogictest::default_column_validator,
                        )
                        .await
                        .map_err(|e| e.to_string())
                } else {
                    runner.run_file_async(file).await.map_err(|e| e.to_string())
                };
                match result {
                    Ok(()) => {
                        passed += 1;
                        println!("ok   {} [{name}]", file.display());
                    }
                    Err(e) => {
                        failures += 1;
                        println!("FAIL {} [{name}]\n{e}", file.display());
                    }
                }
            }
        }
        println!("{passed} passed, {failures} failed");
        if failures == 0 && passed > 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    })
}
