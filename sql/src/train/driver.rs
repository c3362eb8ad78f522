//! Runs a `CREATE MODEL`: a statistics pass, then the federated rounds, each one SQL
//! aggregate over the training query, on whatever runs SQL (the cluster, or one process).
//!
//! ```text
//!  stats:  SELECT __shoal_linear_stats(f.., y)            -> means, std (and linear: solve)
//!  round r: SELECT __shoal_fedavg_round('<plan r>', f.., y) [, one per trial ...]
//!           sites: local SGD from the global weights -> clipped update
//!           here:  combine (min rows, weighted average, noise) -> next global weights
//!  final:  the same with epochs = 0: loss and held-out scores of the final weights
//! ```

use super::options::{DEFAULT_MAX_SEARCH_TRIALS, Hyper, ModelKind, TrainConfig};
use super::report::{RoundReport, TrainingReport, TrialReport};
use super::statement::CreateModel;
use crate::error::{Error, Result};
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use shoal_operators::train::combine::combine;
use shoal_operators::train::fedavg::{Contribution, FEDAVG_ROUND, RoundPlan, decode_all};
use shoal_operators::train::gram::Gram;
use shoal_operators::train::network::{Architecture, Objective, Scaling, SgdOptions};
use shoal_operators::train::onnx_export::{ExportedModel, to_onnx};
use shoal_operators::train::stats_udf::{LINEAR_STATS, decode_stats, merge_sites};
use std::collections::BTreeMap;
use std::time::Instant;

/// What a training run needs from the engine: the schema of a query and its rows.
#[async_trait::async_trait]
pub trait QueryRunner: Send + Sync {
    async fn schema(&self, sql: &str) -> Result<SchemaRef>;
    /// The result, and the bytes the coordinator received from the sites for it (0 when
    /// not distributed).
    async fn collect(&self, sql: &str) -> Result<(Vec<RecordBatch>, u64)>;
    /// Trials a search may run (the coordinator's `--max-search-trials`).
    fn max_search_trials(&self) -> usize {
        DEFAULT_MAX_SEARCH_TRIALS
    }
}

/// A trained model, ready to export and register.
#[derive(Debug, Clone)]
pub struct Trained {
    pub architecture: Architecture,
    pub weights: Vec<f64>,
    pub scaling: Scaling,
    pub report: TrainingReport,
}

impl Trained {
    /// The ONNX bytes of version `version`, with the report in its metadata.
    pub fn onnx(&self, version: u64) -> Vec<u8> {
        to_onnx(&ExportedModel {
            architecture: &self.architecture,
            weights: &self.weights,
            scaling: &self.scaling,
            metadata: vec![
                (
                    "shoal.kind".into(),
                    format!("{:?}", self.report.kind).to_lowercase(),
                ),
                ("shoal.features".into(), self.report.features.join(",")),
                ("shoal.label".into(), self.report.label.clone()),
                ("shoal.training".into(), self.report.to_json()),
            ],
            version: version as i64,
        })
    }
}

fn failed(name: &str, message: impl std::fmt::Display) -> Error {
    Error::Training {
        model: name.to_string(),
        message: message.to_string(),
    }
}

/// `"name"` with quotes doubled: columns keep their case and odd characters.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The single binary value of column `column` of a one-row result.
fn binary_cell(batches: &[RecordBatch], column: usize) -> Option<Vec<u8>> {
    let batch = batches.iter().find(|b| b.num_rows() > 0)?;
    let values = batch.column(column).as_binary_opt::<i32>()?;
    values.is_valid(0).then(|| values.value(0).to_vec())
}

/// Trains the model `statement` describes.
pub async fn train(statement: &CreateModel, runner: &dyn QueryRunner) -> Result<Trained> {
    let started = Instant::now();
    let name = &statement.name;
    let kind = ModelKind::parse(&statement.kind).map_err(|m| failed(name, m))?;
    let config =
        TrainConfig::from_options(kind, &statement.options).map_err(|m| failed(name, m))?;
    config
        .check_search_size(runner.max_search_trials())
        .map_err(|m| failed(name, m))?;
    let schema = runner.schema(&statement.query).await?;
    let (features, label) = split_columns(name, &schema, &statement.label)?;
    let source = format!("({}) AS __shoal_training", statement.query);
    let columns: Vec<String> = features
        .iter()
        .chain(std::iter::once(&label))
        .map(|c| quote_identifier(c))
        .collect();
    let arguments = columns.join(", ");

    // Statistics: means and deviations for scaling; the whole answer for linear regression.
    let (batches, stats_network) = runner
        .collect(&format!("SELECT {LINEAR_STATS}({arguments}) FROM {source}"))
        .await?;
    let parts = match binary_cell(&batches, 0) {
        Some(bytes) => decode_stats(&bytes)?,
        None => Vec::new(),
    };
    let mut rows_per_site: BTreeMap<String, u64> = BTreeMap::new();
    let mut stats_bytes: BTreeMap<String, u64> = BTreeMap::new();
    for p in &parts {
        *rows_per_site.entry(p.site.clone()).or_default() += p.gram.rows as u64;
        *stats_bytes.entry(p.site.clone()).or_default() += p.encoded_len() as u64;
    }
    // Sites below the minimum do not shape the model, not even through its scaling.
    let min_rows = config.privacy.min_site_rows;
    let kept: Vec<_> = parts
        .into_iter()
        .filter(|p| rows_per_site[&p.site] >= min_rows.max(1))
        .collect();
    let gram = merge_sites(&kept).ok_or_else(|| {
        failed(
            name,
            if rows_per_site.is_empty() {
                "the training query returned no rows".to_string()
            } else {
                format!("no site has at least min_site_rows = {min_rows} rows: {rows_per_site:?}")
            },
        )
    })?;
    let d = features.len();
    let mut report = TrainingReport {
        name: name.clone(),
        kind,
        features: features.clone(),
        label: label.clone(),
        query: statement.query.clone(),
        config: config.clone(),
        rows: gram.rows as u64,
        rows_per_site,
        statistics_bytes_per_site: stats_bytes,
        statistics_network_bytes: stats_network,
        trials: Vec::new(),
        best_trial: 0,
        linear_mse: None,
        training_seconds: 0.0,
        rows_per_second: 0.0,
    };
    if kind == ModelKind::Linear {
        let (w, b, mse) = gram
            .solve_ridge(config.base.l2)
            .map_err(|e| failed(name, e))?;
        report.linear_mse = Some(mse);
        report.training_seconds = started.elapsed().as_secs_f64();
        report.rows_per_second = report.rows as f64 / report.training_seconds.max(1e-9);
        let mut weights = w;
        weights.push(b);
        return Ok(Trained {
            architecture: Architecture {
                inputs: d,
                hidden: vec![],
                objective: Objective::Regression,
            },
            weights,
            scaling: Scaling::identity(d),
            report,
        });
    }
    federated(
        name, &config, &gram, &arguments, &source, runner, report, started,
    )
    .await
}

/// Label and feature columns of the training query; features must be numeric or boolean.
fn split_columns(name: &str, schema: &SchemaRef, label: &str) -> Result<(Vec<String>, String)> {
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let label = names
        .iter()
        .find(|n| **n == label)
        .or_else(|| names.iter().find(|n| n.eq_ignore_ascii_case(label)))
        .ok_or_else(|| {
            failed(
                name,
                format!(
                    "the label column '{label}' is not among the training query's columns: {}",
                    names.join(", ")
                ),
            )
        })?
        .to_string();
    let mut features = Vec::new();
    for field in schema.fields() {
        let usable = field.data_type().is_numeric() || field.data_type() == &DataType::Boolean;
        if !usable {
            return Err(failed(
                name,
                format!(
                    "column '{}' is {}: training takes numeric or boolean columns (encode text \
                     first, e.g. with one_hot or hash_bucket)",
                    field.name(),
                    field.data_type()
                ),
            ));
        }
        if field.name() != &label {
            features.push(field.name().clone());
        }
    }
    if features.is_empty() {
        return Err(failed(
            name,
            "the training query has no feature column besides the label",
        ));
    }
    shoal_operators::train::bounds::check_features("the training query", features.len())
        .map_err(|e| failed(name, e))?;
    Ok((features, label))
}

struct TrialState {
    hyper: Hyper,
    architecture: Architecture,
    weights: Vec<f64>,
    report: TrialReport,
}

#[allow(clippy::too_many_arguments)]
async fn federated(
    name: &str,
    config: &TrainConfig,
    gram: &Gram,
    arguments: &str,
    source: &str,
    runner: &dyn QueryRunner,
    mut report: TrainingReport,
    started: Instant,
) -> Result<Trained> {
    let d = gram.features();
    let (target_mean, target_std) = match config.objective {
        Objective::Regression => {
            let width = d + 1;
            let std = (gram.comoment[d * width + d] / gram.rows).max(0.0).sqrt();
            (gram.mean[d], if std > 0.0 { std } else { 1.0 })
        }
        Objective::Binary => (0.0, 1.0),
    };
    let scaling = Scaling {
        feature_mean: gram.mean[..d].to_vec(),
        feature_std: gram.feature_std(),
        target_mean,
        target_std,
    };
    let mut trials: Vec<TrialState> = config
        .trials()
        .into_iter()
        .enumerate()
        .map(|(i, hyper)| {
            let architecture = Architecture {
                inputs: d,
                hidden: if config.kind == ModelKind::Mlp {
                    vec![hyper.hidden]
                } else {
                    vec![]
                },
                objective: config.objective,
            };
            let weights = architecture.initial_params(config.seed.wrapping_add(i as u64));
            TrialState {
                report: TrialReport {
                    options: hyper.describe(&config.searched_keys()),
                    ..Default::default()
                },
                hyper,
                architecture,
                weights,
            }
        })
        .collect();
    let plan_for = |t: &TrialState, trial: usize, round: usize, epochs: usize| RoundPlan {
        architecture: t.architecture.clone(),
        weights: t.weights.clone(),
        scaling: scaling.clone(),
        sgd: SgdOptions {
            learning_rate: t.hyper.learning_rate,
            l2: t.hyper.l2,
            epochs,
            batch_size: t.hyper.batch_size,
            seed: config.seed ^ ((round as u64) << 20) ^ trial as u64,
        },
        clip_norm: config.privacy.clip_norm,
        min_rows: config.privacy.min_site_rows,
        holdout: config.holdout,
    };
    let max_rounds = trials.iter().map(|t| t.hyper.rounds).max().unwrap_or(0);
    let mut training_seconds = 0.0;
    let mut rows_trained = 0.0;
    // Rounds 1..=max train; one more evaluates the final weights of every trial.
    for round in 1..=max_rounds + 1 {
        let evaluating = round == max_rounds + 1;
        let live: Vec<usize> = (0..trials.len())
            .filter(|i| evaluating || round <= trials[*i].hyper.rounds)
            .collect();
        let calls: Vec<String> = live
            .iter()
            .map(|&i| {
                let epochs = if evaluating {
                    0
                } else {
                    trials[i].hyper.epochs
                };
                let plan = plan_for(&trials[i], i, round, epochs);
                let json = serde_json::to_string(&plan).map_err(|e| failed(name, e))?;
                Ok(format!(
                    "{FEDAVG_ROUND}({}, {arguments}) AS trial_{i}",
                    quote_literal(&json)
                ))
            })
            .collect::<Result<_>>()?;
        let round_started = Instant::now();
        let (batches, network_bytes) = runner
            .collect(&format!("SELECT {} FROM {source}", calls.join(", ")))
            .await?;
        let seconds = round_started.elapsed().as_secs_f64();
        for (column, &i) in live.iter().enumerate() {
            let contributions: Vec<Contribution> = match binary_cell(&batches, column) {
                Some(bytes) => decode_all(&bytes)?,
                None => Vec::new(),
            };
            let trial = &mut trials[i];
            let summary = if evaluating {
                // Only the scores: the weights stay as they are.
                let mut unchanged = trial.weights.clone();
                let mut no_updates = contributions.clone();
                no_updates.iter_mut().for_each(|c| c.update.clear());
                combine(&mut unchanged, &no_updates, &config.privacy)
            } else {
                combine(&mut trial.weights, &contributions, &config.privacy)
            }
            .map_err(|message| failed(name, message))?;
            if !evaluating {
                rows_trained += summary.sites.values().map(|s| s.train_rows).sum::<u64>() as f64
                    * trial.hyper.epochs as f64;
            }
            let round_report = RoundReport {
                round: round as u64,
                network_bytes,
                seconds,
                summary,
            };
            if evaluating {
                trial.report.final_round = Some(round_report);
            } else {
                trial.report.rounds.push(round_report);
            }
        }
        if !evaluating {
            training_seconds += seconds;
        }
    }
    for t in &trials {
        if t.weights.iter().any(|w| !w.is_finite()) {
            return Err(failed(
                name,
                format!(
                    "training diverged ({}): lower learning_rate or add l2",
                    if t.report.options.is_empty() {
                        "weights not finite"
                    } else {
                        &t.report.options
                    }
                ),
            ));
        }
    }
    // The best trial has the lowest held-out loss (training loss without a holdout).
    let score = |t: &TrialState| {
        let last = t.report.final_round.as_ref().map(|r| &r.summary);
        last.and_then(|s| s.holdout_loss.or(Some(s.train_loss)))
            .unwrap_or(f64::INFINITY)
    };
    let best = (0..trials.len())
        .min_by(|a, b| score(&trials[*a]).total_cmp(&score(&trials[*b])))
        .unwrap_or(0);
    report.best_trial = best;
    report.training_seconds = started.elapsed().as_secs_f64();
    report.rows_per_second = rows_trained / training_seconds.max(1e-9);
    report.trials = trials.iter().map(|t| t.report.clone()).collect();
    let chosen = trials.swap_remove(best);
    Ok(Trained {
        architecture: chosen.architecture,
        weights: chosen.weights,
        scaling,
        report,
    })
}
