//! The engine's errors. Each variant says what failed with the fields that explain it, and
//! knows its kind ([`ErrorExt::status_code`]): the Flight SQL front door answers with that
//! status ([`Error::to_status`]), and the coordinator re-runs a statement only when a worker
//! was lost. Kinds are read from the types in an error's source chain (shoal's errors,
//! DataFusion's variants, gRPC status codes, I/O error kinds), never from message text.

use datafusion::error::DataFusionError;
use shoal_operators::status::{
    Classifier, ErrorExt, StatusCode, chain, operators_error, status_of,
};
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--data folder {path} does not exist or is not a folder")]
    MissingDataDir { path: PathBuf },

    #[error("--data {location}: {message}")]
    DataLocation { location: String, message: String },

    #[error("--models folder {path}: {source}")]
    Models {
        path: PathBuf,
        source: Box<shoal_operators::Error>,
    },

    /// A device the worker was told to use (`--devices`) that it cannot: it refuses to start.
    #[error("--devices: {message}")]
    Devices { message: String },

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

    /// Credentials, certificates or TLS settings that cannot be used.
    #[error("{0}")]
    Security(String),

    /// A message between shoal's processes that does not decode or encode.
    #[error("{what}: {message}")]
    Malformed { what: String, message: String },

    #[error("starting the heartbeat thread: {source}")]
    HeartbeatThread { source: std::io::Error },

    /// The client of a pipeline stopped listening: its run is cancelled.
    #[error("the client stopped listening; pipeline cancelled")]
    ClientGone,

    /// A pipeline file that does not validate (rustc-style diagnostics).
    #[error("{0}")]
    PipelineInvalid(#[from] shoal_planner::pipeline::PipelineError),

    /// A run id that cannot name an output folder.
    #[error("{message}")]
    InvalidRunId { message: String },

    /// A resumable run stopped; its committed waves are kept.
    #[error(
        "run '{run_id}' stopped: {source}. The waves committed so far are kept: finish it with \
         `shoal run --resume {run_id}`"
    )]
    RunStopped { run_id: String, source: Box<Error> },

    #[error(
        "run '{run_id}' is committed, but none of the live workers holds the output of {missing} \
         input file(s) [{examples}]: a worker holding part of it is down"
    )]
    RunIncomplete {
        run_id: String,
        missing: usize,
        examples: String,
    },

    /// A sink action on one worker (commit, abort, status, waves, seal) failed.
    #[error("{action} of run '{run_id}' on worker '{worker}' failed: {source}")]
    SinkAction {
        action: String,
        run_id: String,
        worker: String,
        source: Box<Error>,
    },

    #[error(
        "the statement made no progress for {seconds:.1} s (no rows scanned on any worker, no \
         result batch; --stall-timeout {limit} s) although every worker answers heartbeats: stopped"
    )]
    Stalled { seconds: f64, limit: f64 },

    #[error("worker '{worker}' ({url}) was lost mid-query {cause}")]
    WorkerLost {
        worker: String,
        url: String,
        cause: String,
    },

    /// A per-client quota (running statements, prepared statements) is used up.
    #[error("{0}")]
    Quota(String),

    /// The caller may not do this (another client's work, a shipped model's name).
    #[error("{0}")]
    Forbidden(String),

    #[error("the coordinator refused {action}: {message}")]
    Refused { action: String, message: String },

    #[error("cannot listen on {addr}: {message}")]
    Listen { addr: String, message: String },

    #[error("generating sample data: {0}")]
    DataGen(String),

    #[error("{0}")]
    Planner(#[from] shoal_planner::Error),

    #[error("{0}")]
    Sql(#[from] shoal_sql::Error),

    #[error("{0}")]
    DataFusion(#[from] DataFusionError),

    #[error("{0}")]
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
    pub fn into_datafusion(self) -> DataFusionError {
        match self {
            Error::DataFusion(e) => e,
            other => DataFusionError::External(Box::new(other)),
        }
    }

    /// From a DataFusion error, unwrapping the engine error it carries, if it carries one.
    pub fn from_datafusion(error: DataFusionError) -> Self {
        match error {
            DataFusionError::External(inner) => match inner.downcast::<Error>() {
                Ok(ours) => *ours,
                Err(inner) => Error::DataFusion(DataFusionError::External(inner)),
            },
            other => Error::DataFusion(other),
        }
    }

    /// This error's own kind; `None` for one that wraps another (its source decides).
    pub fn own_status(&self) -> Option<StatusCode> {
        Some(match self {
            Error::InvalidRunId { .. } | Error::PipelineInvalid(_) => StatusCode::InvalidArgument,
            Error::Unreachable { .. } | Error::WorkerLost { .. } => StatusCode::Unavailable,
            Error::Stalled { .. } => StatusCode::DeadlineExceeded,
            Error::ClientGone => StatusCode::Cancelled,
            Error::Quota(_) => StatusCode::ResourceExhausted,
            Error::Forbidden(_) => StatusCode::PermissionDenied,
            Error::RunIncomplete { .. }
            | Error::MissingDataDir { .. }
            | Error::DataLocation { .. }
            | Error::Models { .. }
            | Error::Devices { .. }
            | Error::Exposed { .. }
            | Error::Security(_)
            | Error::Refused { .. }
            | Error::Listen { .. } => StatusCode::FailedPrecondition,
            Error::Io { .. }
            | Error::Malformed { .. }
            | Error::HeartbeatThread { .. }
            | Error::DataGen(_) => StatusCode::Internal,
            Error::Rpc(status) => from_grpc(status.code()),
            Error::Server { code, .. } => from_grpc(*code),
            Error::RunStopped { .. }
            | Error::SinkAction { .. }
            | Error::Planner(_)
            | Error::Sql(_)
            | Error::DataFusion(_)
            | Error::Arrow(_)
            | Error::Flight(_) => return None,
        })
    }

    /// The gRPC status a client gets for this error: its kind's code and its message.
    pub fn to_status(self) -> tonic::Status {
        let code = self.status_code();
        match self {
            Error::Rpc(status) => *status,
            // A GPU's memory is not the worker's --memory-limit: its error says which.
            other
                if code == StatusCode::ResourceExhausted
                    && ran_out_of_memory(&other)
                    && !other.to_string().contains(" ran out of memory on cuda:") =>
            {
                tonic::Status::resource_exhausted(format!(
                    "a worker ran out of memory (its --memory-limit); the operators that can \
                     spill did, this one could not: {other}"
                ))
            }
            other => tonic::Status::new(to_grpc(code), client_message(&other.to_string())),
        }
    }
}

/// What a client reads of an error: a site's refusal as the site wrote it, and anything
/// else without the `External error: ` prefixes DataFusion adds to the errors shoal raises
/// inside it (a table not granted, a model not found, ...).
fn client_message(message: &str) -> String {
    if let Some(refusal) = shoal_planner::policy::refusal_text(message) {
        return refusal.to_string();
    }
    let mut message = message;
    while let Some(rest) = message.strip_prefix("External error: ") {
        message = rest;
    }
    message.to_string()
}

impl ErrorExt for Error {
    fn status_code(&self) -> StatusCode {
        status_of(self, &CLASSIFIERS)
    }
}

/// Every classifier of the errors an engine error may carry, most specific first.
pub const CLASSIFIERS: [Classifier; 8] = [
    site_refusal,
    device_unavailable,
    engine_error,
    shoal_planner::error::planner_error,
    shoal_sql::error::sql_error,
    operators_error,
    grpc_status,
    connection_error,
];

/// A site's policy refused the work: here as the refusal itself, or as its text when it
/// crossed the network from a worker (datafusion-distributed sends errors as text).
fn site_refusal(error: &(dyn std::error::Error + 'static)) -> Option<StatusCode> {
    let refused = error
        .downcast_ref::<shoal_planner::policy::Refusal>()
        .is_some()
        || shoal_planner::policy::is_refusal_message(&error.to_string());
    refused.then_some(StatusCode::PermissionDenied)
}

/// A site could not give the device a statement required: as its text when it crossed the
/// network from a worker, so the client still reads FAILED_PRECONDITION.
fn device_unavailable(error: &(dyn std::error::Error + 'static)) -> Option<StatusCode> {
    shoal_operators::device::is_unavailable_message(&error.to_string())
        .then_some(StatusCode::FailedPrecondition)
}

fn engine_error(error: &(dyn std::error::Error + 'static)) -> Option<StatusCode> {
    error.downcast_ref::<Error>()?.own_status()
}

/// A raw gRPC status in the chain (one datafusion-distributed did not decode as a
/// DataFusion error: it came from the connection or the server's guard, not the work).
fn grpc_status(error: &(dyn std::error::Error + 'static)) -> Option<StatusCode> {
    grpc_status_of(error).map(|status| from_grpc(status.code()))
}

/// The gRPC status one link of an error chain is: a raw `tonic::Status`, or Flight's
/// wrapping of one.
pub fn grpc_status_of<'a>(
    link: &'a (dyn std::error::Error + 'static),
) -> Option<&'a tonic::Status> {
    if let Some(status) = link.downcast_ref::<tonic::Status>() {
        return Some(status);
    }
    match link.downcast_ref::<arrow_flight::error::FlightError>()? {
        arrow_flight::error::FlightError::Tonic(status) => Some(status),
        _ => None,
    }
}

fn connection_error(error: &(dyn std::error::Error + 'static)) -> Option<StatusCode> {
    is_connection_kind(error.downcast_ref::<std::io::Error>()?.kind())
        .then_some(StatusCode::Unavailable)
}

fn is_connection_kind(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        kind,
        ConnectionRefused
            | ConnectionReset
            | ConnectionAborted
            | BrokenPipe
            | NotConnected
            | UnexpectedEof
            | HostUnreachable
            | NetworkUnreachable
    )
}

/// Whether `error` came from a connection rather than from the work: a raw gRPC status of
/// a failed transport (datafusion-distributed decodes every error a worker's work raises
/// into a DataFusion error, so a raw one is the connection's), or an I/O error of a
/// connection. What a killed or cut-off worker leaves its peers with.
pub fn is_transport_error(error: &(dyn std::error::Error + 'static)) -> bool {
    chain(error)
        .find_map(|link| {
            if let Some(status) = grpc_status_of(link) {
                return Some(matches!(
                    status.code(),
                    tonic::Code::Unavailable
                        | tonic::Code::Unknown
                        | tonic::Code::Internal
                        | tonic::Code::Cancelled
                        | tonic::Code::Aborted
                ));
            }
            let io = link.downcast_ref::<std::io::Error>()?;
            is_connection_kind(io.kind()).then_some(true)
        })
        .unwrap_or(false)
}

/// Whether a DataFusion memory pool refused a reservation somewhere in the chain.
fn ran_out_of_memory(error: &(dyn std::error::Error + 'static)) -> bool {
    chain(error).any(|link| {
        matches!(
            link.downcast_ref::<DataFusionError>(),
            Some(DataFusionError::ResourcesExhausted(_))
        )
    })
}

pub fn to_grpc(code: StatusCode) -> tonic::Code {
    match code {
        StatusCode::InvalidArgument => tonic::Code::InvalidArgument,
        StatusCode::NotFound => tonic::Code::NotFound,
        StatusCode::ResourceExhausted => tonic::Code::ResourceExhausted,
        StatusCode::Unavailable => tonic::Code::Unavailable,
        StatusCode::DeadlineExceeded => tonic::Code::DeadlineExceeded,
        StatusCode::PermissionDenied => tonic::Code::PermissionDenied,
        StatusCode::Unauthenticated => tonic::Code::Unauthenticated,
        StatusCode::Cancelled => tonic::Code::Cancelled,
        StatusCode::FailedPrecondition => tonic::Code::FailedPrecondition,
        StatusCode::Internal => tonic::Code::Internal,
    }
}

pub fn from_grpc(code: tonic::Code) -> StatusCode {
    match code {
        tonic::Code::InvalidArgument | tonic::Code::OutOfRange | tonic::Code::Unimplemented => {
            StatusCode::InvalidArgument
        }
        tonic::Code::NotFound => StatusCode::NotFound,
        tonic::Code::ResourceExhausted => StatusCode::ResourceExhausted,
        tonic::Code::Unavailable => StatusCode::Unavailable,
        tonic::Code::DeadlineExceeded => StatusCode::DeadlineExceeded,
        tonic::Code::PermissionDenied => StatusCode::PermissionDenied,
        tonic::Code::Unauthenticated => StatusCode::Unauthenticated,
        tonic::Code::Cancelled => StatusCode::Cancelled,
        tonic::Code::FailedPrecondition | tonic::Code::Aborted | tonic::Code::AlreadyExists => {
            StatusCode::FailedPrecondition
        }
        tonic::Code::Ok | tonic::Code::Unknown | tonic::Code::Internal | tonic::Code::DataLoss => {
            StatusCode::Internal
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_connections_are_transport_errors_and_query_errors_are_not() {
        let broken = DataFusionError::External(Box::new(tonic::Status::unknown(
            "h2 protocol error: error reading a body from connection",
        )));
        assert!(is_transport_error(&broken));
        let refused =
            DataFusionError::IoError(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(is_transport_error(&refused));
        // The same words in a query error do not make it one.
        let model = DataFusionError::Execution("connection reset: unavailable".into());
        assert!(!is_transport_error(&model));
        let denied = DataFusionError::External(Box::new(tonic::Status::permission_denied("no")));
        assert!(!is_transport_error(&denied));
    }

    #[test]
    fn client_mistakes_and_limits_get_their_codes() {
        let unknown = Error::DataFusion(DataFusionError::External(Box::new(
            shoal_operators::Error::UnknownModel {
                name: "m".into(),
                known: String::new(),
            },
        )));
        assert_eq!(unknown.to_status().code(), tonic::Code::NotFound);
        let too_large: DataFusionError = shoal_operators::Error::ModelTooLarge {
            model: "m".into(),
            bytes: 10,
            limit: 8,
            detail: "pool".into(),
        }
        .into();
        let status = Error::DataFusion(too_large).to_status();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(
            status.message().contains("model 'm'"),
            "{}",
            status.message()
        );
        let name = Error::Sql(shoal_sql::Error::Model(
            shoal_operators::Error::InvalidModelName {
                name: "../x".into(),
            },
        ));
        assert_eq!(name.to_status().code(), tonic::Code::InvalidArgument);
        // A site's "no such GPU", as the text it crosses the network as.
        let no_gpu = shoal_operators::Error::DeviceUnavailable {
            device: "cuda".into(),
            reason: "no NVIDIA GPU on this machine".into(),
        };
        let remote = Error::DataFusion(DataFusionError::Execution(format!(
            "External error: {no_gpu}"
        )));
        assert_eq!(remote.to_status().code(), tonic::Code::FailedPrecondition);
        let lost = Error::WorkerLost {
            worker: "w1".into(),
            url: "http://127.0.0.1:1".into(),
            cause: "(no heartbeat)".into(),
        };
        assert!(lost.is_retryable());
        let plan = Error::DataFusion(DataFusionError::Plan("no column x".into()));
        assert_eq!(plan.to_status().code(), tonic::Code::InvalidArgument);
    }
}
