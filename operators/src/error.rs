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

    #[error("model store: {0}")]
    Store(String),

    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),

    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl From<Error> for datafusion::error::DataFusionError {
    fn from(e: Error) -> Self {
        datafusion::error::DataFusionError::External(Box::new(e))
    }
}
