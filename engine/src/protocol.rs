//! The only thing coordinator and workers share: Flight actions on the coordinator's
//! endpoint and their JSON bodies. Query work itself travels over datafusion-distributed.

use shoal_operators::ModelInfo;
pub use shoal_planner::{SiteFile, SiteReport, SiteTableReport};

/// A worker announces itself and its tables; body: [`SiteReport`], reply: [`RegisterReply`].
pub const ACTION_REGISTER: &str = "shoal.register";
/// A worker is alive; body: [`Heartbeat`], reply: [`HeartbeatReply`].
pub const ACTION_HEARTBEAT: &str = "shoal.heartbeat";
/// Model bytes by content hash; body: [`FetchModel`], reply: the bytes in chunks.
pub const ACTION_FETCH_MODEL: &str = "shoal.fetch_model";
/// The bytes-moved report of a finished query; body: [`QueryReportRequest`].
pub const ACTION_QUERY_REPORT: &str = "shoal.query_report";
/// The registered sites; body: empty, reply: JSON list of [`SiteStatus`].
pub const ACTION_SITES: &str = "shoal.sites";

/// Size of each chunk of model bytes in a fetch reply.
pub const MODEL_CHUNK_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RegisterReply {
    pub models: Vec<ModelInfo>,
    pub heartbeat_interval_ms: u64,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Heartbeat {
    pub name: String,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct HeartbeatReply {
    /// False when the coordinator does not know the worker (it restarted): register again.
    pub known: bool,
    pub models: Vec<ModelInfo>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FetchModel {
    pub hash: String,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct QueryReportRequest {
    pub query_id: String,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SiteStatus {
    pub name: String,
    pub url: String,
    pub live: bool,
    pub tables: usize,
}

/// What a statement ticket carries: the SQL and the id its report is kept under.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StatementHandle {
    pub sql: String,
    pub query_id: String,
}
