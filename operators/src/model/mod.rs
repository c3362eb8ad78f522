//! Models: their signature as shoal sees it, loaded sessions, and where they come from.

pub mod dense;
mod directory;
pub mod feeds;
mod loaded;
pub mod metadata;
#[cfg(test)]
#[allow(clippy::expect_used)]
pub(crate) mod ort_reference;
mod session_pool;
mod signature;
pub mod tokenizer;
pub mod trees;

pub use directory::{DirectoryModels, RegisteredVersion, check_model_name, content_hash};
pub use loaded::{BATCH_ROWS_KEY, DEVICE_KEY, LoadedModel, MAX_BATCH_ROWS};
pub use session_pool::{SESSION_MEMORY_FACTOR, SessionPool};
pub use signature::{InputLayout, ModelSignature, OutputSpec, TensorElem, TensorSpec};
pub use tokenizer::ModelTokenizer;

use crate::error::Result;
use std::fmt::Debug;
use std::sync::Arc;

/// What a model registry lists: `SHOW MODELS` prints this.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ModelInfo {
    pub name: String,
    /// sha256 of the `.onnx` bytes, hex.
    pub hash: String,
    pub size_bytes: u64,
    pub inputs: String,
    pub outputs: String,
    /// The device kind the registry pins the model to (`cpu`, `cuda`, `cuda:N`); empty:
    /// none, the statement's device decides.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub device: String,
}

/// Yields loaded models by name.
///
/// The coordinator's provider reads a models directory; a worker's fetches model bytes from
/// the coordinator by content hash and keeps them in a local cache. `pinned_hash`, when given,
/// is the version the planner saw: a provider must return exactly that version or fail.
///
/// Errors: [`crate::Error::UnknownModel`] lists the known names;
/// [`crate::Error::InvalidModel`] names a model whose bytes are not ONNX. Calls may block
/// (a worker's provider fetches a missing model from the coordinator) and are made from the
/// inference pool, never from an IO runtime thread.
///
/// ```
/// use shoal_operators::{ModelProvider, model::DirectoryModels};
///
/// let models = DirectoryModels::load(std::path::Path::new("../tests/data/models"))?;
/// let risk = models.model("return_risk", None)?;
/// assert_eq!(risk.signature.feature_count(), 4);
/// let err = models.model("churn", None).unwrap_err().to_string();
/// assert!(err.contains("unknown model 'churn'") && err.contains("return_risk"));
/// # Ok::<(), shoal_operators::Error>(())
/// ```
pub trait ModelProvider: Debug + Send + Sync {
    fn model(&self, name: &str, pinned_hash: Option<&str>) -> Result<Arc<LoadedModel>>;

    /// Every model this provider can serve, sorted by name.
    fn list(&self) -> Vec<ModelInfo>;
}
