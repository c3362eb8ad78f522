//! The only thing coordinator and workers share: Flight actions on the coordinator's
//! endpoint and their JSON bodies. Query work itself travels over datafusion-distributed.

use datafusion::arrow::array::RecordBatch;
use shoal_operators::ModelInfo;
use shoal_operators::sink::staging::ManifestFile;
pub use shoal_planner::{SiteFile, SiteReport, SiteTableReport};

/// A worker announces itself and its tables; body: [`SiteReport`], reply: [`RegisterReply`].
pub const ACTION_REGISTER: &str = "shoal.register";
/// A worker is alive; body: [`Heartbeat`], reply: [`HeartbeatReply`].
pub const ACTION_HEARTBEAT: &str = "shoal.heartbeat";
/// A worker stops gracefully: no new tasks for it; body: [`Leave`], reply: empty.
pub const ACTION_LEAVE: &str = "shoal.leave";
/// Model bytes by content hash; body: [`FetchModel`], reply: the bytes in chunks.
pub const ACTION_FETCH_MODEL: &str = "shoal.fetch_model";
/// The bytes-moved report of a finished query; body: [`QueryReportRequest`].
pub const ACTION_QUERY_REPORT: &str = "shoal.query_report";
/// The registered sites; body: empty, reply: JSON list of [`SiteStatus`].
pub const ACTION_SITES: &str = "shoal.sites";
/// A site's passes to the other sites; body: [`Peers`], reply: JSON list of
/// [`crate::security::PeerPass`].
pub const ACTION_PEERS: &str = "shoal.peers";

/// Pipeline actions on the coordinator: body [`PipelineRequest`], reply: a stream of JSON
/// [`PipelineEvent`]s, one per result message.
pub const ACTION_PIPELINE: &str = "shoal.pipeline";
/// Worker actions (the coordinator calls them on each worker that wrote a sink's files).
/// Commit: body [`SinkCommit`], reply the committed manifest. Abort: body [`SinkRun`].
/// Status: body [`SinkRun`], reply the committed manifest or null.
pub const ACTION_SINK_COMMIT: &str = "shoal.sink_commit";
pub const ACTION_SINK_ABORT: &str = "shoal.sink_abort";
pub const ACTION_SINK_STATUS: &str = "shoal.sink_status";
/// Resumable runs. Waves: body [`SinkRun`], reply the list of the run's committed wave
/// manifests on the worker (it drops waves that never committed). Seal: body [`SinkRun`],
/// reply the run's manifest once its waves are one committed run, or null.
pub const ACTION_SINK_WAVES: &str = "shoal.sink_waves";
pub const ACTION_SINK_SEAL: &str = "shoal.sink_seal";
/// Takes back a run this site committed in an attempt whose commit failed on another site
/// (all or nothing across sites); body [`SinkRun`].
pub const ACTION_SINK_ROLLBACK: &str = "shoal.sink_rollback";
/// Stops a statement's long loops on a worker; body: [`CancelStatement`].
pub const ACTION_CANCEL_STATEMENT: &str = "shoal.cancel";

/// Coordinator -> worker: what the site did for a statement that ended: the bytes it sent,
/// by recipient, and why it scored on the CPU where asked for a GPU; reply:
/// [`StatementAtSite`].
pub const ACTION_SENT: &str = "shoal.sent";

/// A site's answer to [`ACTION_SENT`].
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct StatementAtSite {
    /// Arrow bytes by recipient (`coordinator`, a peer site, `next stage`).
    #[serde(default)]
    pub sent: std::collections::BTreeMap<String, u64>,
    /// Why the statement's models ran on this site's CPU though it asked for a GPU.
    #[serde(default)]
    pub device_fallbacks: Vec<String>,
}

impl StatementAtSite {
    /// Recipients a site may report bytes for, and reasons it may give, in a statement's
    /// report; a reason's characters. The rest of a hostile site's answer is dropped.
    const MOST_RECIPIENTS: usize = 64;
    const MOST_REASONS: usize = 8;
    const REASON_CHARS: usize = 512;

    /// This answer cut to what a statement's report shows.
    pub fn bounded(mut self) -> Self {
        self.sent = std::mem::take(&mut self.sent)
            .into_iter()
            .take(Self::MOST_RECIPIENTS)
            .collect();
        self.device_fallbacks.truncate(Self::MOST_REASONS);
        for reason in &mut self.device_fallbacks {
            if let Some((cut, _)) = reason.char_indices().nth(Self::REASON_CHARS) {
                reason.truncate(cut);
                reason.push('…');
            }
        }
        self
    }
}

/// Which statement's sent bytes to report (its `shoal.statement.key`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SentRequest {
    pub statement: String,
}

/// Which statement to stop (its `shoal.statement.key`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CancelStatement {
    pub key: String,
}

/// One run of a sink on the sites: where (`target`), under which folder and id.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SinkRun {
    pub path: String,
    pub run_id: String,
    #[serde(default)]
    pub target: shoal_operators::sink::staging::SinkTarget,
}

/// What a site commits: its manifest, in the sink's target.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SinkCommit {
    pub target: shoal_operators::sink::staging::SinkTarget,
    pub manifest: shoal_operators::sink::staging::SiteManifest,
}

// Pipelines: what `shoal run` sends on ACTION_PIPELINE and the events it gets back.

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum PipelineMode {
    Validate,
    Explain,
    Run,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PipelineRequest {
    /// Name shown in errors (the path the client read).
    pub file: String,
    pub text: String,
    /// `--set name=value` overrides.
    #[serde(default)]
    pub params: Vec<(String, String)>,
    pub mode: PipelineMode,
    /// Names the run's output folders; a committed run id is never written twice.
    #[serde(default)]
    pub run_id: Option<String>,
    /// Finish `run_id` from its committed waves instead of starting it over.
    #[serde(default)]
    pub resume: bool,
    /// Run over the sites that are up (`shoal run --partial`; or `[pipeline] partial`).
    #[serde(default)]
    pub partial: bool,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PipelineEvent {
    /// What one node does.
    Step {
        line: String,
    },
    Warning {
        message: String,
    },
    /// A statistic or vocabulary a pre-pass fitted.
    Fitted {
        line: String,
    },
    /// Stages and placement of one output.
    Explain {
        output: String,
        text: String,
    },
    /// Rows the workers' scans produced for this output so far, of `rows_total` in the
    /// pipeline's source tables.
    Progress {
        output: String,
        rows_done: u64,
        rows_total: u64,
        elapsed_ms: u64,
    },
    /// Result rows of a client sink: one Arrow IPC stream (schema + batch), base64.
    Rows {
        output: String,
        ipc: String,
    },
    /// An output finished.
    Output {
        output: String,
        kind: String,
        rows: u64,
        files: Vec<ManifestFile>,
        already_committed: bool,
        elapsed_ms: u64,
        bytes_scanned: u64,
        bytes_to_coordinator: u64,
        /// What a partial run did not read (files only down sites hold).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        coverage: Option<shoal_planner::Coverage>,
    },
    Done {
        run_id: Option<String>,
        elapsed_ms: u64,
    },
}

impl PipelineEvent {
    /// The batch a `Rows` event carries.
    pub fn decode_rows(ipc: &str) -> crate::Result<Vec<RecordBatch>> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(ipc)
            .map_err(|e| crate::Error::Malformed {
                what: "rows event".into(),
                message: e.to_string(),
            })?;
        let reader = datafusion::arrow::ipc::reader::StreamReader::try_new(bytes.as_slice(), None)?;
        Ok(reader.collect::<Result<Vec<_>, _>>()?)
    }
}

/// Size of each chunk of model bytes in a fetch reply.
pub const MODEL_CHUNK_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RegisterReply {
    pub models: Vec<ModelInfo>,
    pub heartbeat_interval_ms: u64,
    /// Credentials for fetching task outputs from the other sites.
    #[serde(default)]
    pub peers: Vec<crate::security::PeerPass>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Peers {
    /// The site asking (it must be the credential's).
    pub name: String,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Heartbeat {
    pub name: String,
    /// Model runs the worker's process has started ([`shoal_operators::model_runs`]).
    #[serde(default)]
    pub model_runs: u64,
    /// Rows the worker's scans have produced since it started (progress of long runs).
    #[serde(default)]
    pub rows_scanned: u64,
    /// Scan partitions streaming now (the worker's load).
    #[serde(default)]
    pub active_scans: u64,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Leave {
    pub name: String,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct HeartbeatReply {
    /// False when the coordinator does not know the worker (it restarted): register again.
    pub known: bool,
    pub models: Vec<ModelInfo>,
    /// The peer credentials as of now (sites join and leave).
    #[serde(default)]
    pub peers: Vec<crate::security::PeerPass>,
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
    /// As of the worker's last heartbeat.
    pub model_runs: u64,
    /// What the site scores on: `cpu`, then its GPUs (`cuda:0`, ...).
    #[serde(default)]
    pub devices: Vec<String>,
}

/// Queries running on the coordinator; body: empty, reply: JSON list of query ids.
pub const ACTION_RUNNING: &str = "shoal.running";

/// What a client asks of a statement beyond its text, in request headers (ADBC sets them
/// with `adbc.flight.sql.rpc.call_header.<name>`; `shoal sql` with its flags).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StatementAsks {
    /// `shoal-partial: true`: answer from the sites that are up; files only down sites hold
    /// are skipped and the report says what was not read. Off by default: a missing site
    /// fails the statement.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
    /// `shoal-device: cuda`: `shoal.inference.device` for the statement (auto, cpu, cuda,
    /// cuda:N); empty: the default, auto.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub device: String,
    /// `shoal-device-fallback: true`: `shoal.inference.device_fallback` for the statement.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub device_fallback: bool,
}

/// What a statement ticket carries: the SQL, its bound parameters and the id its report is
/// kept under. The coordinator keeps no state between planning and fetching a statement.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StatementHandle {
    pub sql: String,
    pub query_id: String,
    /// Parameter values of a prepared statement: one row, as an Arrow IPC stream (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<String>,
    /// Who the coordinator issued the ticket to ([`crate::security::Principal::owner`]).
    #[serde(default)]
    pub owner: String,
    /// What the client asked of the statement in its request headers.
    #[serde(flatten)]
    pub asks: StatementAsks,
    /// The coordinator's HMAC of the fields above (hex): a ticket it did not issue, or one
    /// changed by the client, is refused.
    #[serde(default)]
    pub mac: String,
}

impl StatementHandle {
    pub fn encode(&self) -> Vec<u8> {
        // A struct of strings always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("malformed statement handle: {e}"))
    }

    /// The Flight ticket that carries this handle (a Flight SQL `TicketStatementQuery`).
    pub fn to_ticket(&self) -> Vec<u8> {
        use arrow_flight::sql::ProstMessageExt;
        use prost::Message;
        arrow_flight::sql::TicketStatementQuery {
            statement_handle: self.encode().into(),
        }
        .as_any()
        .encode_to_vec()
    }

    /// The handle in a ticket made by [`StatementHandle::to_ticket`]; `None` for any other.
    pub fn from_ticket(ticket: &[u8]) -> Option<Self> {
        use prost::Message;
        let any = arrow_flight::sql::Any::decode(ticket).ok()?;
        let statement: arrow_flight::sql::TicketStatementQuery = any.unpack().ok()??;
        Self::decode(&statement.statement_handle).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sites_answer_about_a_statement_is_cut_to_what_a_report_shows() {
        let said = StatementAtSite {
            sent: (0..1000).map(|i| (format!("peer-{i:04}"), 1)).collect(),
            device_fallbacks: vec!["é".repeat(10_000); 100],
        }
        .bounded();
        assert_eq!(said.sent.len(), 64);
        assert_eq!(said.device_fallbacks.len(), 8);
        assert_eq!(said.device_fallbacks[0].chars().count(), 513);
    }
}
