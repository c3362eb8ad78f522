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
}

impl From<Error> for datafusion::error::DataFusionError {
    fn from(e: Error) -> Self {
        datafusion::error::DataFusionError::External(Box::new(e))
    }
}
