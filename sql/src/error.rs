use shoal_operators::status::{Classifier, ErrorExt, StatusCode, operators_error, status_of};
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("data folder {path} does not exist or is not a folder")]
    MissingDataDir { path: PathBuf },

    #[error("reading data folder {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },

    /// A statement that does not parse: what was expected, and where the token found is.
    #[error("{message} at line {line}, column {column}")]
    Statement {
        message: String,
        line: u64,
        column: u64,
    },

    /// A statement over one of the coordinator's limits (size, tokens, nesting).
    #[error("{message}")]
    Limit { message: String },

    /// A client's statement calls a function only the coordinator's own plans may call.
    #[error("function '{name}' is internal to shoal and cannot be called from a statement")]
    Internal { name: String },

    #[error("{0}")]
    Model(#[from] shoal_operators::Error),

    #[error("training model '{model}': {message}")]
    Training { model: String, message: String },

    #[error("{0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
}

impl Error {
    /// This error's own kind; `None` for one that wraps another.
    pub fn own_status(&self) -> Option<StatusCode> {
        match self {
            Error::MissingDataDir { .. } => Some(StatusCode::FailedPrecondition),
            Error::DataDir { .. } => Some(StatusCode::Internal),
            // The options, label or training rows the statement names are wrong.
            Error::Statement { .. } | Error::Training { .. } => Some(StatusCode::InvalidArgument),
            Error::Limit { .. } => Some(StatusCode::ResourceExhausted),
            Error::Internal { .. } => Some(StatusCode::PermissionDenied),
            Error::Model(_) | Error::DataFusion(_) => None,
        }
    }
}

/// Classifies shoal-sql's errors.
pub fn sql_error(error: &(dyn std::error::Error + 'static)) -> Option<StatusCode> {
    error.downcast_ref::<Error>()?.own_status()
}

/// The classifiers of the errors this crate and those below it raise.
pub const CLASSIFIERS: [Classifier; 2] = [sql_error, operators_error];

impl ErrorExt for Error {
    fn status_code(&self) -> StatusCode {
        status_of(self, &CLASSIFIERS)
    }
}
