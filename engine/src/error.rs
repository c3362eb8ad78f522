use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--data folder {path} does not exist or is not a folder")]
    MissingDataDir { path: PathBuf },

    #[error("--models folder {path}: {source}")]
    Models {
        path: PathBuf,
        source: Box<shoal_operators::Error>,
    },

    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("cannot connect to {url}: {message}")]
    Unreachable { url: String, message: String },

    #[error(
        "refusing to serve the {role} on {addr} without authentication: anyone who can reach it could run queries; {how}, listen on 127.0.0.1, or pass --insecure to accept the risk"
    )]
    Exposed {
        role: String,
        addr: String,
        how: String,
    },

    #[error("{0}")]
    Security(String),

    #[error("internal error: {0}")]
    Internal(String),

    /// A pipeline file that does not validate, or a run that failed (the text says where).
    #[error("{0}")]
    Pipeline(String),

    #[error("worker '{site}' ({url}) failed or is unreachable: {message}")]
    Worker {
        site: String,
        url: String,
        message: String,
    },

    #[error(
        "the statement made no progress for {seconds:.1} s (no rows scanned on any worker, no \
         result batch; --stall-timeout {limit} s) although every worker answers heartbeats: stopped"
    )]
    Stalled { seconds: f64, limit: f64 },

    #[error("worker '{site}' was lost mid-query {message}")]
    WorkerLost { site: String, message: String },

    #[error("the coordinator refused {action}: {message}")]
    Refused { action: String, message: String },

    #[error("cannot listen on {addr}: {message}")]
    Listen { addr: String, message: String },

    #[error("generating TPC-H data: {0}")]
    DataGen(String),

    #[error(transparent)]
    Planner(#[from] shoal_planner::Error),

    #[error(transparent)]
    Sql(#[from] shoal_sql::Error),

    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),

    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),

    #[error("flight: {0}")]
    Flight(#[from] arrow_flight::error::FlightError),

    #[error("{0}")]
    Rpc(Box<tonic::Status>),

    /// A statement the coordinator answered with an error: its message, as it said it.
    #[error("{message}")]
    Server { code: tonic::Code, message: String },
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Error::Rpc(Box::new(status))
    }
}

impl Error {
    /// As a DataFusion error, unwrapping one that already is.
    pub fn into_datafusion(self) -> datafusion::error::DataFusionError {
        match self {
            Error::DataFusion(e) => e,
            other => datafusion::error::DataFusionError::External(Box::new(other)),
        }
    }
}
