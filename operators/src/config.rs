//! `shoal.*`: every setting shoal adds to a DataFusion session, as one typed
//! [`ConfigExtension`] with documented keys (`SET`-able in a one-process session, listed in
//! `information_schema.df_settings`, and sent to the workers with every task by
//! datafusion-distributed).
//!
//! | key | type | default | what it does |
//! | --- | --- | --- | --- |
//! | `shoal.inference.slots` | integer | cores | concurrent model runs in a process (each with its own ONNX Runtime session); process-wide, fixed when the process first runs a model (`--inference-slots`) |
//! | `shoal.inference.native_trees` | bool | true | score tree ensembles with shoal's native evaluator; false: with ONNX Runtime |
//! | `shoal.inference.native_dense` | bool | true | score dense models (MatMul/Gemm chains, linear models) on the CPU with shoal's native evaluator (false: with ONNX Runtime) |
//! | `shoal.inference.device` | text | `auto` | where models run on each site: `auto` (a GPU the site declared, else the CPU), `cpu`, `cuda` (any of the site's GPUs, required) or `cuda:N` |
//! | `shoal.inference.device_fallback` | bool | false | a site that cannot give the GPU asked for scores on the CPU and the report says so per site; false: the statement fails naming the reason |
//! | `shoal.models.versions` | JSON | `{}` | model name -> content hash the statement was planned with (set by the coordinator) |
//! | `shoal.models.batch_rows` | JSON | `{}` | model name -> rows per model run (a pipeline model node's `batch_size`) |
//! | `shoal.models.devices` | JSON | `{}` | model name -> the device a pipeline model node asked for (`cpu`, `cuda`, `cuda:N`), over `shoal.inference.device` |
//! | `shoal.models.tensor_shapes` | JSON | `{}` | model name -> the per-row shapes of its tensor inputs, as the coordinator planned them (set by the coordinator: a tensor's shape tag does not survive plan serialisation) |
//! | `shoal.query.batch_rows` | integer | 0 | rows per batch the statement's scans read, where it builds large tensors per row (set by the coordinator; 0: the session's batch size) |
//! | `shoal.query.partial` | bool | false | answer from the sites that are up: files only down sites hold are skipped and the report says what was not read |
//!
//! DataFusion's `extensions_options!` makes one-level keys only; this implements
//! [`ExtensionOptions`] by hand for the `shoal.<area>.<name>` keys.

use datafusion::common::{Result, config_err};
use datafusion::config::{ConfigEntry, ConfigExtension, ConfigOptions, ExtensionOptions};
use std::any::Any;

#[derive(Debug, Clone, PartialEq)]
pub struct ShoalOptions {
    pub inference: InferenceOptions,
    pub models: ModelOptions,
    pub statement: StatementOptions,
    pub query: QueryOptions,
}

/// How a statement treats sites that are down.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryOptions {
    /// Answer from the live sites, skipping files only down sites hold (the statement's
    /// report gives the coverage); false: a missing site fails the statement.
    pub partial: bool,
    /// Rows per batch the statement's scans read (0: the session's `batch_size`): set by
    /// the coordinator where a row's tensor is large (an image is 600 KB at 224 x 224), so
    /// one batch's tensors stay bounded. A worker applies it, never raising its own size.
    pub batch_rows: usize,
}

/// Which statement a task belongs to, for stopping its long loops (see [`crate::cancel`]):
/// set by the coordinator per planned statement, sent to the workers with every task.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatementOptions {
    /// Random; empty when not planned by a coordinator.
    pub key: String,
    /// Milliseconds since the epoch after which the statement's work stops; 0: none.
    pub deadline_ms: u64,
    /// Who asked (the client's user, as the coordinator authenticated it): what a site
    /// writes in its audit log.
    pub user: String,
    /// sha256 of the statement's text, hex: ties a site's audit line to the statement
    /// without sending the text.
    pub digest: String,
}

impl StatementOptions {
    /// The statement's cancellation in this process.
    pub fn token(&self) -> crate::cancel::CancelToken {
        crate::cancel::CancelToken::for_statement(&self.key, self.deadline_ms)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct InferenceOptions {
    /// Concurrent model runs per process; 0 means one per core.
    pub slots: usize,
    /// Whether tree ensembles run on shoal's native evaluator.
    pub native_trees: bool,
    /// Whether dense models run on shoal's native evaluator where they run on the CPU.
    pub native_dense: bool,
    /// Where models run on each site.
    pub device: crate::device::DeviceRequest,
    /// Whether a site without the GPU asked for scores on the CPU (saying so) or fails.
    pub device_fallback: bool,
}

/// The model versions a statement pins (see [`crate::udf::model_pins`]); JSON objects, as
/// they travel as gRPC metadata with each task.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelOptions {
    pub versions: String,
    pub batch_rows: String,
    pub tensor_shapes: String,
    pub devices: String,
}

impl Default for ShoalOptions {
    fn default() -> Self {
        Self {
            inference: InferenceOptions {
                slots: 0,
                native_trees: true,
                // Off until it is faster than ONNX Runtime (issue 20): 0.2x-0.65x today.
                native_dense: true,
                device: crate::device::DeviceRequest::Auto,
                device_fallback: false,
            },
            models: ModelOptions::default(),
            statement: StatementOptions::default(),
            query: QueryOptions::default(),
        }
    }
}

impl ConfigExtension for ShoalOptions {
    const PREFIX: &'static str = "shoal";
}

impl ShoalOptions {
    /// The options in `config`, or the defaults when a session has none.
    pub fn from_config(config: &ConfigOptions) -> Self {
        config
            .extensions
            .get::<ShoalOptions>()
            .cloned()
            .unwrap_or_default()
    }
}

const SLOTS: &str = "inference.slots";
const NATIVE_TREES: &str = "inference.native_trees";
const NATIVE_DENSE: &str = "inference.native_dense";
const DEVICE: &str = "inference.device";
const DEVICE_FALLBACK: &str = "inference.device_fallback";
const VERSIONS: &str = "models.versions";
const BATCH_ROWS: &str = "models.batch_rows";
const TENSOR_SHAPES: &str = "models.tensor_shapes";
const MODEL_DEVICES: &str = "models.devices";
const STATEMENT_KEY: &str = "statement.key";
const STATEMENT_DEADLINE: &str = "statement.deadline_ms";
const STATEMENT_USER: &str = "statement.user";
const STATEMENT_DIGEST: &str = "statement.digest";
const QUERY_PARTIAL: &str = "query.partial";
const QUERY_BATCH_ROWS: &str = "query.batch_rows";

impl ExtensionOptions for ShoalOptions {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn cloned(&self) -> Box<dyn ExtensionOptions> {
        Box::new(self.clone())
    }

    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        match key {
            SLOTS => self.inference.slots = value.trim().parse().or_else(|_| {
                config_err!(
                    "shoal.{SLOTS} must be a count of model runs (0: one per core), not '{value}'"
                )
            })?,
            NATIVE_TREES => {
                self.inference.native_trees = value.trim().parse().or_else(|_| {
                    config_err!("shoal.{NATIVE_TREES} must be true or false, not '{value}'")
                })?
            }
            NATIVE_DENSE => {
                self.inference.native_dense = value.trim().parse().or_else(|_| {
                    config_err!("shoal.{NATIVE_DENSE} must be true or false, not '{value}'")
                })?
            }
            DEVICE => {
                self.inference.device = value
                    .parse()
                    .or_else(|e: crate::Error| config_err!("shoal.{DEVICE}: {e}"))?
            }
            DEVICE_FALLBACK => {
                self.inference.device_fallback = value.trim().parse().or_else(|_| {
                    config_err!("shoal.{DEVICE_FALLBACK} must be true or false, not '{value}'")
                })?
            }
            VERSIONS => self.models.versions = value.to_string(),
            BATCH_ROWS => self.models.batch_rows = value.to_string(),
            TENSOR_SHAPES => self.models.tensor_shapes = value.to_string(),
            MODEL_DEVICES => self.models.devices = value.to_string(),
            STATEMENT_KEY => self.statement.key = value.to_string(),
            STATEMENT_USER => self.statement.user = value.to_string(),
            STATEMENT_DIGEST => self.statement.digest = value.to_string(),
            QUERY_BATCH_ROWS => {
                self.query.batch_rows = value.trim().parse().or_else(|_| {
                    config_err!("shoal.{QUERY_BATCH_ROWS} must be a count of rows, not '{value}'")
                })?
            }
            QUERY_PARTIAL => {
                self.query.partial = value.trim().parse().or_else(|_| {
                    config_err!("shoal.{QUERY_PARTIAL} must be true or false, not '{value}'")
                })?
            }
            STATEMENT_DEADLINE => {
                self.statement.deadline_ms = value.trim().parse().or_else(|_| {
                    config_err!(
                        "shoal.{STATEMENT_DEADLINE} must be ms since the epoch, not '{value}'"
                    )
                })?
            }
            other => {
                return config_err!(
                    "unknown setting 'shoal.{other}'; shoal's settings: shoal.{SLOTS}, \
                     shoal.{NATIVE_TREES}, shoal.{NATIVE_DENSE}, shoal.{DEVICE}, shoal.{DEVICE_FALLBACK}, \
                     shoal.{VERSIONS}, shoal.{BATCH_ROWS}, shoal.{TENSOR_SHAPES}, \
                     shoal.{MODEL_DEVICES}, \
                     shoal.{STATEMENT_KEY}, shoal.{STATEMENT_DEADLINE}, shoal.{STATEMENT_USER}, \
                     shoal.{STATEMENT_DIGEST}, shoal.{QUERY_PARTIAL}, shoal.{QUERY_BATCH_ROWS}"
                );
            }
        }
        Ok(())
    }

    fn entries(&self) -> Vec<ConfigEntry> {
        let entry = |key: &str, value: String, description: &'static str| ConfigEntry {
            key: key.to_string(),
            value: Some(value),
            description,
        };
        vec![
            entry(
                SLOTS,
                self.inference.slots.to_string(),
                "Concurrent model runs per process (0: one per core); fixed when the process \
                 first runs a model",
            ),
            entry(
                NATIVE_TREES,
                self.inference.native_trees.to_string(),
                "Score tree ensembles with shoal's native evaluator (false: ONNX Runtime)",
            ),
            entry(
                NATIVE_DENSE,
                self.inference.native_dense.to_string(),
                "Score dense models (MatMul/Gemm chains) on the CPU with shoal's native \
                 evaluator (false: ONNX Runtime)",
            ),
            entry(
                DEVICE,
                self.inference.device.to_string(),
                "Where models run on each site: auto (a GPU the site declared, else the CPU), \
                 cpu, cuda (any of the site's GPUs) or cuda:N",
            ),
            entry(
                DEVICE_FALLBACK,
                self.inference.device_fallback.to_string(),
                "A site without the GPU asked for scores on the CPU and the report says so \
                 (false: the statement fails naming the reason)",
            ),
            entry(
                VERSIONS,
                self.models.versions.clone(),
                "JSON: model name -> content hash the statement was planned with",
            ),
            entry(
                BATCH_ROWS,
                self.models.batch_rows.clone(),
                "JSON: model name -> rows per model run",
            ),
            entry(
                TENSOR_SHAPES,
                self.models.tensor_shapes.clone(),
                "JSON: model name -> per-row shapes of its tensor inputs (set by the coordinator)",
            ),
            entry(
                MODEL_DEVICES,
                self.models.devices.clone(),
                "JSON: model name -> the device its pipeline model node asked for",
            ),
            entry(
                STATEMENT_KEY,
                self.statement.key.clone(),
                "The statement a task belongs to (set by the coordinator): its long loops stop \
                 when the coordinator cancels it",
            ),
            entry(
                STATEMENT_DEADLINE,
                self.statement.deadline_ms.to_string(),
                "When the statement's work stops (ms since the epoch; 0: never), from the \
                 coordinator's --query-timeout",
            ),
            entry(
                QUERY_BATCH_ROWS,
                self.query.batch_rows.to_string(),
                "Rows per batch the statement's scans read, where it builds large tensors per \
                 row (set by the coordinator; 0: the session's batch size)",
            ),
            entry(
                QUERY_PARTIAL,
                self.query.partial.to_string(),
                "Answer from the sites that are up: files only down sites hold are skipped and \
                 the report says what was not read (false: a missing site fails the statement)",
            ),
            entry(
                STATEMENT_USER,
                self.statement.user.clone(),
                "Who asked (set by the coordinator): written in each site's audit log",
            ),
            entry(
                STATEMENT_DIGEST,
                self.statement.digest.clone(),
                "sha256 of the statement's text (set by the coordinator): written in each \
                 site's audit log",
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn keys_are_set_typed_and_listed() {
        let mut config = ConfigOptions::new();
        config.extensions.insert(ShoalOptions::default());
        config.set("shoal.inference.native_trees", "false").unwrap();
        config.set("shoal.inference.native_dense", "false").unwrap();
        config.set("shoal.inference.slots", "3").unwrap();
        let options = ShoalOptions::from_config(&config);
        assert!(!options.inference.native_trees);
        assert!(!options.inference.native_dense);
        assert_eq!(options.inference.slots, 3);
        let err = config.set("shoal.inference.slots", "many").unwrap_err();
        assert!(err.to_string().contains("shoal.inference.slots"), "{err}");
        let err = config.set("shoal.infrence.slots", "1").unwrap_err();
        assert!(err.to_string().contains("unknown setting"), "{err}");
        let keys: Vec<String> = options.entries().into_iter().map(|e| e.key).collect();
        assert_eq!(keys.len(), 15);
        config.set("shoal.inference.device", "cuda:1").unwrap();
        config
            .set("shoal.inference.device_fallback", "true")
            .unwrap();
        let options = ShoalOptions::from_config(&config);
        assert_eq!(
            options.inference.device,
            crate::device::DeviceRequest::Cuda(Some(1))
        );
        assert!(options.inference.device_fallback);
        let err = config.set("shoal.inference.device", "tpu").unwrap_err();
        assert!(err.to_string().contains("'tpu' is not a device"), "{err}");
    }
}
