//! What a training run reports: stored as the model version's metadata (JSON beside the
//! `.onnx`, and inside it), and returned by `CREATE MODEL` as a table.

use super::options::{ModelKind, TrainConfig};
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};
use shoal_operators::train::combine::RoundSummary;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoundReport {
    pub round: u64,
    /// Bytes the coordinator received for the round's query (every trial in it).
    pub network_bytes: u64,
    pub seconds: f64,
    pub summary: RoundSummary,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrialReport {
    /// The searched options of this trial ("" without a search).
    pub options: String,
    pub rounds: Vec<RoundReport>,
    /// The evaluation of the final weights.
    pub final_round: Option<RoundReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingReport {
    pub name: String,
    pub kind: ModelKind,
    pub features: Vec<String>,
    pub label: String,
    pub query: String,
    pub config: TrainConfig,
    pub rows: u64,
    pub rows_per_site: BTreeMap<String, u64>,
    /// Bytes of statistics each site sent in the first pass.
    pub statistics_bytes_per_site: BTreeMap<String, u64>,
    pub statistics_network_bytes: u64,
    pub trials: Vec<TrialReport>,
    pub best_trial: usize,
    /// Linear regression: mean squared error on the training rows.
    pub linear_mse: Option<f64>,
    pub training_seconds: f64,
    /// Rows processed by local SGD per second of round time (rows × epochs), or rows
    /// summarised per second for linear regression.
    pub rows_per_second: f64,
}

impl TrainingReport {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}

/// The table `CREATE MODEL` returns: one row per step of a training (statistics, each
/// round, the final evaluation), or one per trial of a search.
pub fn result_schema(search: bool) -> SchemaRef {
    let f = |name: &str, dt: DataType, nullable: bool| Field::new(name, dt, nullable);
    let mut fields = vec![
        f("model", DataType::Utf8, false),
        f("version", DataType::UInt64, true),
    ];
    if search {
        fields.extend([
            f("trial", DataType::UInt64, false),
            f("options", DataType::Utf8, false),
            f("train_loss", DataType::Float64, true),
            f("holdout_loss", DataType::Float64, true),
            f("holdout_accuracy", DataType::Float64, true),
            f("best", DataType::Boolean, false),
        ]);
    } else {
        fields.extend([
            f("step", DataType::Utf8, false),
            f("round", DataType::UInt64, true),
            f("train_loss", DataType::Float64, true),
            f("holdout_loss", DataType::Float64, true),
            f("holdout_accuracy", DataType::Float64, true),
            f("sites", DataType::UInt64, false),
            f("bytes_per_site", DataType::Utf8, false),
            f("network_bytes", DataType::UInt64, false),
        ]);
    }
    Arc::new(Schema::new(fields))
}

fn bytes_text(per_site: &BTreeMap<String, u64>) -> String {
    per_site
        .iter()
        .map(|(site, bytes)| format!("{site}={bytes}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The result rows of a finished training registered as `versioned_name` / `version`.
pub fn result_batch(
    report: &TrainingReport,
    version: u64,
) -> datafusion::error::Result<RecordBatch> {
    let search = report.config.search.is_some();
    let schema = result_schema(search);
    let name = report.name.clone();
    let columns: Vec<ArrayRef> = if search {
        let n = report.trials.len();
        let last = |t: &TrialReport| t.final_round.as_ref().map(|r| r.summary.clone());
        vec![
            Arc::new(StringArray::from(vec![name; n])) as ArrayRef,
            Arc::new(UInt64Array::from(
                (0..n)
                    .map(|i| (i == report.best_trial).then_some(version))
                    .collect::<Vec<_>>(),
            )),
            Arc::new(UInt64Array::from_iter_values(0..n as u64)),
            Arc::new(StringArray::from_iter_values(
                report.trials.iter().map(|t| t.options.clone()),
            )),
            Arc::new(Float64Array::from_iter(
                report.trials.iter().map(|t| last(t).map(|s| s.train_loss)),
            )),
            Arc::new(Float64Array::from_iter(
                report
                    .trials
                    .iter()
                    .map(|t| last(t).and_then(|s| s.holdout_loss)),
            )),
            Arc::new(Float64Array::from_iter(
                report
                    .trials
                    .iter()
                    .map(|t| last(t).and_then(|s| s.holdout_accuracy)),
            )),
            Arc::new(BooleanArray::from_iter(
                (0..n).map(|i| Some(i == report.best_trial)),
            )),
        ]
    } else {
        let mut step = vec!["statistics".to_string()];
        let mut round = vec![None];
        let mut train_loss = vec![None];
        let mut holdout_loss = vec![None];
        let mut holdout_accuracy = vec![None];
        let mut sites = vec![report.statistics_bytes_per_site.len() as u64];
        let mut bytes = vec![bytes_text(&report.statistics_bytes_per_site)];
        let mut network = vec![report.statistics_network_bytes];
        if let Some(mse) = report.linear_mse {
            step.push("solved".into());
            round.push(None);
            train_loss.push(Some(mse));
            holdout_loss.push(None);
            holdout_accuracy.push(None);
            sites.push(report.rows_per_site.len() as u64);
            bytes.push(String::new());
            network.push(0);
        }
        for trial in report.trials.iter().take(1) {
            for r in trial.rounds.iter().chain(trial.final_round.as_ref()) {
                let is_final = Some(r) == trial.final_round.as_ref();
                step.push(if is_final { "final" } else { "round" }.into());
                round.push((!is_final).then_some(r.round));
                train_loss.push(Some(r.summary.train_loss));
                holdout_loss.push(r.summary.holdout_loss);
                holdout_accuracy.push(r.summary.holdout_accuracy);
                sites.push(
                    r.summary
                        .sites
                        .values()
                        .filter(|s| s.contributed || is_final)
                        .count() as u64,
                );
                let per_site = r
                    .summary
                    .sites
                    .iter()
                    .map(|(k, s)| (k.clone(), s.bytes_sent))
                    .collect();
                bytes.push(bytes_text(&per_site));
                network.push(r.network_bytes);
            }
        }
        let n = step.len();
        vec![
            Arc::new(StringArray::from(vec![name; n])) as ArrayRef,
            Arc::new(UInt64Array::from(vec![Some(version); n])),
            Arc::new(StringArray::from(step)),
            Arc::new(UInt64Array::from(round)),
            Arc::new(Float64Array::from(train_loss)),
            Arc::new(Float64Array::from(holdout_loss)),
            Arc::new(Float64Array::from(holdout_accuracy)),
            Arc::new(UInt64Array::from(sites)),
            Arc::new(StringArray::from(bytes)),
            Arc::new(UInt64Array::from(network)),
        ]
    };
    RecordBatch::try_new(schema, columns).map_err(Into::into)
}
