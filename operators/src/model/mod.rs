//! Models: their signature as shoal sees it, loaded sessions, and where they come from.

mod directory;
mod loaded;
mod session_pool;
mod signature;

pub use directory::{DirectoryModels, content_hash};
pub use loaded::LoadedModel;
pub use session_pool::SessionPool;
pub use signature::{InputLayout, ModelSignature, OutputSpec, TensorElem, TensorSpec};

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
}

/// Yields loaded models by name.
///
/// The coordinator's provider reads a models directory; a worker's fetches model bytes from
/// the coordinator by content hash and keeps them in a local cache. `pinned_hash`, when given,
/// is the version the planner saw: a provider must return exactly that version or fail.
///
/// Errors: [`crate::Error::UnknownModel`] lists the known names.
pub trait ModelProvider: Debug + Send + Sync {
    fn model(&self, name: &str, pinned_hash: Option<&str>) -> Result<Arc<LoadedModel>>;

    /// Every model this provider can serve, sorted by name.
    fn list(&self) -> Vec<ModelInfo>;
}
