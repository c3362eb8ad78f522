//! Errors of the model runtime and the ML functions. Each variant names the model or
//! column involved and what was expected versus found.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "ONNX Runtime shared library not found (looked at: {tried}). Run `make setup` to install \
         it from the onnxruntime wheel, or point ORT_DYLIB_PATH at libonnxruntime.so"
    )]
    RuntimeLibraryNotFound { tried: String },

    #[error(
        "refusing to load ONNX Runtime from {path}: {why} (a library others can change would \
         run their code inside shoal); fix its permissions or run `make setup` again"
    )]
    RuntimeLibraryUnsafe { path: PathBuf, why: String },

    /// Work stopped because its statement's cancellation fired.
    #[error("{what} stopped: {reason}")]
    Stopped {
        what: String,
        reason: crate::cancel::Stopped,
    },

    #[error("failed to initialise ONNX Runtime from {path}: {message}")]
    RuntimeInit { path: PathBuf, message: String },

    #[error("unknown model '{name}'; known models: [{known}]")]
    UnknownModel { name: String, known: String },

    #[error("model '{name}' ({origin}) is not a valid ONNX model: {message}")]
    InvalidModel {
        name: String,
        origin: String,
        message: String,
    },

    #[error("model '{model}' is not supported by shoal: {reason}")]
    UnsupportedModel { model: String, reason: String },

    #[error("model '{model}' carries a tokenizer.json that does not load: {message}")]
    InvalidTokenizer { model: String, message: String },

    #[error(
        "{function}(text, '{model}', ...): model '{model}' has no tokenizer; put its \
         tokenizer.json next to it as {model}.tokenizer.json in the models folder"
    )]
    NoTokenizer { function: String, model: String },

    #[error("{function}('{model}', ...): model expects {expected} feature(s), got {found}")]
    FeatureCount {
        function: String,
        model: String,
        expected: usize,
        found: usize,
    },

    #[error(
        "{function}('{model}', ...): feature {position} ({column}) has type {found}; features must be numeric"
    )]
    FeatureType {
        function: String,
        model: String,
        position: usize,
        column: String,
        found: String,
    },

    /// `call` is `predict('m', ...)`, `argument` is `argument 1 (img)`.
    #[error("{call}: {argument} cannot feed input '{input}': {reason}")]
    TensorFeed {
        call: String,
        argument: String,
        input: String,
        reason: String,
    },

    #[error(
        "{function}('{model}', ...): feature {position} ({column}) has {nulls} null value(s) in a batch; \
         shoal does not impute: filter those rows out or COALESCE the feature"
    )]
    NullFeature {
        function: String,
        model: String,
        position: usize,
        column: String,
        nulls: usize,
    },

    #[error("{function}(...): the first argument must be the model name as a string literal")]
    ModelNameNotLiteral { function: String },

    #[error(
        "model '{model}' returns its probabilities as a ZipMap (sequence of maps); re-export it with \
         skl2onnx options={{'zipmap': False}} so they come as a float tensor [N, k]"
    )]
    ZipMapOutput { model: String },

    #[error(
        "model '{model}' has no probability output (a 2-D float tensor such as 'probabilities')"
    )]
    NoProbabilities { model: String },

    #[error("inference with model '{model}' failed on a batch of {rows} row(s): {message}")]
    Inference {
        model: String,
        rows: usize,
        message: String,
    },

    #[error("model '{model}' output '{output}': expected {expected}, found {found}")]
    OutputShape {
        model: String,
        output: String,
        expected: String,
        found: String,
    },

    #[error("model name '{name}' is not allowed: use letters, digits, '_' and '-' (at most 128)")]
    InvalidModelName { name: String },

    #[error(
        "cannot register model '{model}': this registry has no folder (start the coordinator \
         with --models DIR)"
    )]
    NoRegistryFolder { model: String },

    #[error(
        "model '{model}' changed during the query: planned with {pinned}, which the registry \
         no longer has; it has {current}"
    )]
    PinnedVersionGone {
        model: String,
        pinned: String,
        current: String,
    },

    #[error(
        "model '{model}' ({bytes} bytes in memory) does not fit in the worker's memory limit \
         (--memory-limit {limit} bytes): {detail}"
    )]
    ModelTooLarge {
        model: String,
        bytes: usize,
        /// The worker's limit (`--memory-limit`).
        limit: usize,
        /// What the memory pool said (its largest consumers).
        detail: String,
    },

    #[error("fetching model {hash} from {source_url}: {message}")]
    ModelFetch {
        hash: String,
        source_url: String,
        message: String,
        /// Whether the coordinator could not be reached (a retry may work) rather than
        /// answering wrongly.
        unreachable: bool,
    },

    #[error(
        "model '{model}' is pinned by the statement at {hash} but was not loaded on this node \
         before the task ran"
    )]
    ModelNotLoaded { model: String, hash: String },

    #[error("loading model {hash} stopped before it finished: {message}")]
    ModelLoad { hash: String, message: String },

    #[error("'{text}' is not a device: {why}")]
    InvalidDevice { text: String, why: String },

    #[error(
        "cannot score on {device}: {reason} (SET shoal.inference.device_fallback = true scores \
         on the CPU instead, and the report says so)"
    )]
    DeviceUnavailable { device: String, reason: String },

    #[error("model '{model}' ran out of memory on {device} ({limit}): {message}")]
    DeviceOutOfMemory {
        model: String,
        device: String,
        limit: String,
        message: String,
    },

    #[error("ONNX Runtime is not available: {message}")]
    RuntimeUnavailable { message: String },

    #[error("cannot start the inference pool: {message}")]
    InferencePool { message: String },

    #[error("the statement's {key} is not a JSON object of models: {message}")]
    ModelPins { key: String, message: String },

    #[error("{0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),

    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl From<Error> for datafusion::error::DataFusionError {
    /// Memory errors become DataFusion's resources-exhausted variant: datafusion-distributed
    /// carries DataFusion's variants across the network but only the text of an external
    /// error, and a worker's "model too large" must reach the client as RESOURCE_EXHAUSTED.
    fn from(e: Error) -> Self {
        use crate::status::{ErrorExt, StatusCode};
        match e.status_code() {
            StatusCode::ResourceExhausted => {
                datafusion::error::DataFusionError::ResourcesExhausted(e.to_string())
            }
            _ => datafusion::error::DataFusionError::External(Box::new(e)),
        }
    }
}

impl crate::status::ErrorExt for Error {
    fn status_code(&self) -> crate::status::StatusCode {
        crate::status::status_of(self, &[crate::status::operators_error])
    }
}

impl Error {
    /// A model whose `bytes` `pool` cannot hold beside everything else (`detail`: what the
    /// pool said, its largest consumers).
    pub fn model_too_large(
        model: &str,
        bytes: usize,
        pool: &dyn datafusion::execution::memory_pool::MemoryPool,
        detail: impl std::fmt::Display,
    ) -> Self {
        use datafusion::execution::memory_pool::MemoryLimit;
        Error::ModelTooLarge {
            model: model.to_string(),
            bytes,
            limit: match pool.memory_limit() {
                MemoryLimit::Finite(limit) => limit,
                MemoryLimit::Infinite | MemoryLimit::Unknown => usize::MAX,
            },
            detail: detail.to_string(),
        }
    }

    /// This error's own kind; `None` for one that only wraps another (then the wrapped
    /// error's kind decides).
    pub fn own_status(&self) -> Option<crate::status::StatusCode> {
        use crate::status::StatusCode;
        Some(match self {
            Error::UnknownModel { .. } => StatusCode::NotFound,
            Error::InvalidModelName { .. }
            | Error::UnsupportedModel { .. }
            | Error::FeatureCount { .. }
            | Error::FeatureType { .. }
            | Error::TensorFeed { .. }
            | Error::NullFeature { .. }
            | Error::ModelNameNotLiteral { .. }
            | Error::ZipMapOutput { .. }
            | Error::NoProbabilities { .. }
            | Error::InvalidDevice { .. } => StatusCode::InvalidArgument,
            Error::ModelTooLarge { .. } | Error::DeviceOutOfMemory { .. } => {
                StatusCode::ResourceExhausted
            }
            Error::ModelFetch {
                unreachable: true, ..
            } => StatusCode::Unavailable,
            Error::NoRegistryFolder { .. }
            | Error::PinnedVersionGone { .. }
            | Error::InvalidModel { .. }
            | Error::InvalidTokenizer { .. }
            | Error::NoTokenizer { .. }
            | Error::DeviceUnavailable { .. } => StatusCode::FailedPrecondition,
            Error::Stopped {
                reason: crate::cancel::Stopped::DeadlinePassed,
                ..
            } => StatusCode::DeadlineExceeded,
            Error::Stopped { .. } => StatusCode::Cancelled,
            Error::RuntimeLibraryNotFound { .. }
            | Error::RuntimeLibraryUnsafe { .. }
            | Error::RuntimeInit { .. }
            | Error::RuntimeUnavailable { .. }
            | Error::InferencePool { .. }
            | Error::ModelPins { .. }
            | Error::ModelNotLoaded { .. }
            | Error::ModelLoad { .. }
            | Error::ModelFetch { .. }
            | Error::Inference { .. }
            | Error::OutputShape { .. }
            | Error::Io { .. } => StatusCode::Internal,
            Error::Arrow(_) => return None,
        })
    }
}
