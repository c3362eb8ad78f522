//! The pipeline file as written: serde types with the span of every value that can be wrong.
//!
//! ```toml
//! [params]                     # defaults, overridden by `--set name=value`; used as ${name}
//! since = "1995-01-01"
//!
//! [source.items]               # a table, with an optional projection and filter
//! table = "lineitem"
//! columns = ["l_quantity", "l_shipmode", "l_shipdate"]
//! filter = "l_shipdate >= DATE '${since}'"
//!
//! [features.prepared]          # SQL expressions and named feature operations
//! input = "items"
//! columns = { big = "l_quantity > 40" }
//! ops = [{ op = "standard_scale", column = "l_quantity", output = "qty_z" }]
//!
//! [model.risk]                 # predict / predict_proba on the features
//! input = "prepared"
//! model = "return_risk"
//! features = ["l_quantity", "l_extendedprice", "l_discount", "l_tax"]
//! predict_proba = "risk"
//!
//! [aggregate.by_mode]          # GROUP BY with named aggregates
//! input = "risk"
//! group_by = ["l_shipmode"]
//! values = { avg_risk = "avg(risk)", n = "count(*)" }
//!
//! [sink.out]                   # client (streamed back), local_parquet or object_store (on the sites)
//! input = "by_mode"
//! kind = "client"
//!
//! [train.readmit]              # trains and registers model 'readmit' (as CREATE MODEL)
//! input = "prepared"
//! kind = "logistic"
//! label = "readmitted"
//! options = { rounds = 20, holdout = 0.2 }
//! ```
//! Joins (`[join.x] left, right, on, how`) and unions (`[union.x] inputs`) combine nodes.
//! `[pipeline] partial = true` runs over the sites that are up and reports what was not read.

use super::ordered::OrderedMap;
use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    #[serde(default)]
    pub pipeline: Header,
    #[serde(default)]
    pub params: OrderedMap<Spanned<toml::Value>>,
    #[serde(default)]
    pub source: OrderedMap<SourceNode>,
    #[serde(default)]
    pub features: OrderedMap<FeaturesNode>,
    #[serde(default)]
    pub model: OrderedMap<ModelNode>,
    #[serde(default)]
    pub join: OrderedMap<JoinNode>,
    #[serde(default)]
    pub union: OrderedMap<UnionNode>,
    #[serde(default)]
    pub aggregate: OrderedMap<AggregateNode>,
    #[serde(default)]
    pub sink: OrderedMap<SinkNode>,
    #[serde(default)]
    pub train: OrderedMap<TrainNode>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub name: Option<String>,
    pub description: Option<String>,
    /// Run over the sites that are up: files only down sites hold are skipped and each
    /// output reports what was not read (as `shoal sql --partial`). Off by default.
    pub partial: Option<bool>,
    /// A site without the GPU a model node asks for (`device = "cuda"`) scores on the CPU
    /// and the output's report says so per site; off by default: the run fails naming why.
    pub device_fallback: Option<bool>,
}

pub type Text = Spanned<String>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceNode {
    pub table: Text,
    pub columns: Option<Vec<Text>>,
    pub filter: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeaturesNode {
    pub input: Text,
    /// Input columns passed through (default: all of them).
    pub keep: Option<Vec<Text>>,
    /// New columns: name = SQL expression over the input columns.
    #[serde(default)]
    pub columns: OrderedMap<Text>,
    /// Named feature operations, applied after `columns`.
    #[serde(default)]
    pub ops: Vec<Spanned<FeatureOp>>,
}

/// One feature operation; which keys apply depends on `op` (checked in validation).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureOp {
    pub op: Text,
    pub column: Text,
    /// Name of the new column (default: `<column>_<op>`).
    pub output: Option<Text>,
    pub mean: Option<Spanned<f64>>,
    pub std: Option<Spanned<f64>>,
    pub min: Option<Spanned<f64>>,
    pub max: Option<Spanned<f64>>,
    pub value: Option<Spanned<f64>>,
    pub strategy: Option<Text>,
    pub vocabulary: Option<Spanned<Vec<String>>>,
    pub max_categories: Option<Spanned<u64>>,
    pub boundaries: Option<Spanned<Vec<f64>>>,
    pub buckets: Option<Spanned<u64>>,
    pub lower: Option<Spanned<f64>>,
    pub upper: Option<Spanned<f64>>,
    pub part: Option<Text>,
    pub n: Option<Spanned<u64>>,
    pub pattern: Option<Text>,
    pub group: Option<Spanned<u64>>,
    /// `image`: the tensor's size, channel order, per-channel normalisation and fit.
    pub height: Option<Spanned<u64>>,
    pub width: Option<Spanned<u64>>,
    pub layout: Option<Text>,
    pub channel_mean: Option<Spanned<Vec<f64>>>,
    pub channel_std: Option<Spanned<Vec<f64>>>,
    pub fit: Option<Text>,
    /// `audio`: the waveform's rate (Hz) and length (seconds).
    pub sample_rate: Option<Spanned<u64>>,
    pub seconds: Option<Spanned<f64>>,
    /// `audio`: a log-mel spectrogram instead of the waveform when `n_mels` is given
    /// (`n_fft`, `hop_length`, `mel_scale` = "log10" or "whisper").
    pub n_fft: Option<Spanned<u64>>,
    pub hop_length: Option<Spanned<u64>>,
    pub n_mels: Option<Spanned<u64>>,
    pub mel_scale: Option<Text>,
    /// `tokenize`: the model whose tokenizer is used, and the tokens per row (truncated or
    /// padded to it).
    pub model: Option<Text>,
    pub max_tokens: Option<Spanned<u64>>,
    /// `image`, `audio`: a file that does not decode fails the run (default: its tensor is null and
    /// the model skips that row).
    pub strict: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelNode {
    pub input: Text,
    pub model: Text,
    /// Feature columns or SQL expressions, in the order the model takes them.
    pub features: Spanned<Vec<Text>>,
    /// Output column for `predict` (the label or value).
    pub predict: Option<Text>,
    /// Output column for `predict_proba` (positive class, or every class).
    pub predict_proba: Option<Text>,
    /// Rows per model run (default: one run per Arrow batch).
    pub batch_size: Option<Spanned<u64>>,
    /// `auto` (default: the statement's `shoal.inference.device`), `cpu`, `cuda` (any of a
    /// site's GPUs) or `cuda:N`.
    pub device: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinNode {
    pub left: Text,
    pub right: Text,
    /// Columns present on both sides, equal in joined rows.
    pub on: Spanned<Vec<Text>>,
    /// inner (default), left, right, full.
    pub how: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnionNode {
    pub inputs: Spanned<Vec<Text>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateNode {
    pub input: Text,
    #[serde(default)]
    pub group_by: Vec<Text>,
    /// name = aggregate SQL expression, e.g. `avg(risk)`.
    pub values: OrderedMap<Text>,
    /// Output order: column names, each optionally followed by ` desc`.
    #[serde(default)]
    pub order_by: Vec<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkNode {
    pub input: Text,
    /// `client` (default), `local_parquet` or `object_store`.
    pub kind: Option<Text>,
    /// local_parquet: folder under each worker's output folder; object_store: the name of
    /// the table folder, beside the site's data, its runs become.
    pub path: Option<Text>,
}

/// Trains a model named after the node on its input's rows, where they are: the TOML form
/// of `CREATE MODEL name OPTIONS (...) AS TRAIN kind PREDICTING label FROM (...)`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainNode {
    pub input: Text,
    /// `linear`, `logistic` or `mlp`.
    pub kind: Text,
    pub label: Text,
    /// Feature columns (default: every input column but the label).
    pub features: Option<Spanned<Vec<Text>>>,
    /// Training options: numbers, strings, or lists of numbers for a search.
    #[serde(default)]
    pub options: OrderedMap<Spanned<toml::Value>>,
}
