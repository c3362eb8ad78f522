pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "worker name '{name}' is not valid: use 1-63 lowercase letters, digits or '-' (and not 'cluster')"
    )]
    InvalidSiteName { name: String },

    #[error(
        "table '{table}': worker '{site}' reports a schema that differs from worker '{other}': {detail}"
    )]
    SchemaMismatch {
        table: String,
        site: String,
        other: String,
        detail: String,
    },

    #[error("{user} may not read table '{table}': it is not among the tables granted to them")]
    NotGranted { user: String, table: String },

    #[error(
        "worker '{site}' registers at {url}, where live worker '{other}' already serves; give \
         each worker its own address"
    )]
    AddressTaken {
        url: String,
        site: String,
        other: String,
    },

    #[error(
        "table '{table}': {files} file(s) [{examples}] are held only by worker '{site}' ({url}), silent for \
         {silent_ms} ms (heartbeat timeout {timeout_ms} ms); no live worker can serve them, so the query \
         cannot be answered"
    )]
    SiteDown {
        table: String,
        site: String,
        url: String,
        files: usize,
        examples: String,
        silent_ms: u64,
        timeout_ms: u64,
    },

    #[error("table '{table}': file {file} on worker '{site}' is not readable Parquet: {message}")]
    BadFile {
        table: String,
        site: String,
        file: String,
        message: String,
    },

    #[error("no workers are registered with the coordinator")]
    NoWorkers,

    #[error("unknown worker '{site}'")]
    UnknownSite { site: String },

    #[error("invalid worker url '{url}': {message}")]
    InvalidUrl { url: String, message: String },

    #[error("site '{site}' reports devices the coordinator cannot accept: {message}")]
    InvalidDevices { site: String, message: String },
}

impl From<Error> for datafusion::error::DataFusionError {
    fn from(e: Error) -> Self {
        datafusion::error::DataFusionError::External(Box::new(e))
    }
}

impl Error {
    /// This error's kind.
    pub fn own_status(&self) -> Option<shoal_operators::StatusCode> {
        use shoal_operators::StatusCode;
        Some(match self {
            Error::InvalidSiteName { .. }
            | Error::InvalidUrl { .. }
            | Error::InvalidDevices { .. } => StatusCode::InvalidArgument,
            Error::UnknownSite { .. } => StatusCode::NotFound,
            Error::NotGranted { .. } => StatusCode::PermissionDenied,
            // Retrying cannot help until a worker comes back or is fixed.
            Error::SchemaMismatch { .. } | Error::BadFile { .. } | Error::AddressTaken { .. } => {
                StatusCode::FailedPrecondition
            }
            Error::SiteDown { .. } | Error::NoWorkers => StatusCode::Unavailable,
        })
    }
}

/// Classifies shoal-planner's errors.
pub fn planner_error(
    error: &(dyn std::error::Error + 'static),
) -> Option<shoal_operators::StatusCode> {
    error.downcast_ref::<Error>()?.own_status()
}

impl shoal_operators::ErrorExt for Error {
    fn status_code(&self) -> shoal_operators::StatusCode {
        self.own_status()
            .unwrap_or(shoal_operators::StatusCode::Internal)
    }
}
