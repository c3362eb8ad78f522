//! What a client can do about an error: its status code and whether a retry may help.
//!
//! Every shoal error type says both through [`ErrorExt`] (GreptimeDB's `ErrorExt::status_code`
//! and `retry_hint` are the model). The Flight SQL front door turns the code into a gRPC
//! status, which tells a client whether sending the statement again may help. (The
//! coordinator's own re-run after a lost worker does not read kinds: it probes the workers
//! an attempt used, see the engine's `execution::resilient`.) Errors travel
//! inside DataFusion errors (`External`, `Context`, `Shared` ...): [`status_of`] walks the
//! whole source chain and takes the first link that knows its kind, so no caller ever
//! classifies an error by its text. A variant that only wraps another error reports no kind
//! of its own and is declared `#[error("{0}")]` with `#[from]`, never `transparent`: a
//! transparent variant hides the wrapped error from `source()`, and with it its kind.

use datafusion::error::DataFusionError;
use std::error::Error as StdError;

/// The gRPC status codes shoal answers with (the subset that tells a client what to do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusCode {
    /// The statement or its arguments are wrong: fix them and send again.
    InvalidArgument,
    /// A named thing (model, table, prepared statement) does not exist.
    NotFound,
    /// A memory or size limit was hit: ask for less, or raise the limit.
    ResourceExhausted,
    /// A worker or the coordinator could not be reached: retrying later may work.
    Unavailable,
    /// A time limit passed.
    DeadlineExceeded,
    /// The caller may not do this.
    PermissionDenied,
    /// The caller did not say who it is.
    Unauthenticated,
    /// The statement was cancelled (by the client, or the client went away).
    Cancelled,
    /// The cluster is not in a state to run it (no workers, a file with no live holder).
    FailedPrecondition,
    /// A fault of shoal's (a bug, a broken install): nothing the client can fix.
    Internal,
}

impl StatusCode {
    /// Whether the same request may succeed if sent again unchanged.
    pub fn is_retryable(self) -> bool {
        matches!(self, StatusCode::Unavailable | StatusCode::DeadlineExceeded)
    }
}

/// An error that knows its kind.
pub trait ErrorExt: StdError {
    fn status_code(&self) -> StatusCode;

    /// Whether sending the same request again may succeed (by default: by its code).
    fn is_retryable(&self) -> bool {
        self.status_code().is_retryable()
    }
}

/// Recognises one link of an error chain: `Some(code)` when the link knows its kind.
pub type Classifier = fn(&(dyn StdError + 'static)) -> Option<StatusCode>;

/// The status of `error`: the first link of its source chain that `classifiers` (tried in
/// order, after DataFusion's own variants) recognise; [`StatusCode::Internal`] if none does.
pub fn status_of(error: &(dyn StdError + 'static), classifiers: &[Classifier]) -> StatusCode {
    chain(error)
        .find_map(|link| {
            datafusion_variant(link)
                .or_else(|| classifiers.iter().find_map(|classify| classify(link)))
        })
        .unwrap_or(StatusCode::Internal)
}

/// The kinds DataFusion's own variants carry (they survive datafusion-distributed's wire
/// format, so they also classify errors raised on a worker).
fn datafusion_variant(error: &(dyn StdError + 'static)) -> Option<StatusCode> {
    match error.downcast_ref::<DataFusionError>()? {
        DataFusionError::Plan(_)
        | DataFusionError::SQL(..)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_) => Some(StatusCode::InvalidArgument),
        DataFusionError::ResourcesExhausted(_) => Some(StatusCode::ResourceExhausted),
        _ => None,
    }
}

/// `error` and its sources, outermost first.
pub fn chain<'a>(
    error: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(error), |e: &&'a (dyn StdError + 'static)| {
        (*e).source()
    })
}

/// Classifies shoal-operators' errors.
pub fn operators_error(error: &(dyn StdError + 'static)) -> Option<StatusCode> {
    error.downcast_ref::<crate::Error>()?.own_status()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_link_that_knows_its_kind_decides() {
        let unknown = crate::Error::UnknownModel {
            name: "m".into(),
            known: String::new(),
        };
        let wrapped = DataFusionError::Context(
            "planning".into(),
            Box::new(DataFusionError::External(Box::new(unknown))),
        );
        assert_eq!(
            status_of(&wrapped, &[operators_error]),
            StatusCode::NotFound
        );
        let memory = DataFusionError::Shared(std::sync::Arc::new(
            DataFusionError::ResourcesExhausted("pool".into()),
        ));
        assert_eq!(status_of(&memory, &[]), StatusCode::ResourceExhausted);
        let plain = DataFusionError::Execution("boom".into());
        assert_eq!(status_of(&plain, &[operators_error]), StatusCode::Internal);
    }
}
