//! shoal's own actions on the coordinator's Flight endpoint: worker registration and
//! heartbeats, model fetches, query reports, the site list, and cancelling a statement.

use super::{Coordinator, json_reply, parse};
use crate::protocol::{
    ACTION_FETCH_MODEL, ACTION_HEARTBEAT, ACTION_LEAVE, ACTION_QUERY_REPORT, ACTION_REGISTER,
    ACTION_RUNNING, ACTION_SITES, FetchModel, Heartbeat, HeartbeatReply, Leave, MODEL_CHUNK_BYTES,
    QueryReportRequest, RegisterReply, SiteReport, SiteStatus, StatementHandle,
};
use crate::security::{Admission, Principal};
use arrow_flight::{
    Action, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, FlightInfo,
};
use prost::Message;
use std::pin::Pin;
use tonic::{Response, Status};

pub type ActionStream =
    Pin<Box<dyn futures::Stream<Item = Result<arrow_flight::Result, Status>> + Send + 'static>>;

/// Flight's standard cancel action (`CancelFlightInfo`).
pub const ACTION_CANCEL_FLIGHT_INFO: &str = "CancelFlightInfo";

/// Registering and heartbeating change the cluster: with a cluster secret configured, only
/// its holders may do them (a client cannot add a fake site).
fn require_cluster_member(c: &Coordinator, admission: Option<&Admission>) -> Result<(), Status> {
    if !c.authenticator().has_cluster_secret() {
        return Ok(());
    }
    match admission.map(|a| &a.principal) {
        Some(Principal::Cluster) => Ok(()),
        _ => Err(Status::permission_denied(
            "only workers holding the cluster secret may register or heartbeat",
        )),
    }
}

pub fn handle(
    c: &Coordinator,
    action: Action,
    admission: Option<&Admission>,
) -> Result<Response<ActionStream>, Status> {
    let principal = admission.map_or(Principal::Open, |a| a.principal.clone());
    match action.r#type.as_str() {
        ACTION_REGISTER => {
            require_cluster_member(c, admission)?;
            let report: SiteReport = parse(&action)?;
            let name = report.name.clone();
            c.catalog()
                .register(report)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            tracing::info!(worker = %name, "worker registered");
            json_reply(&RegisterReply {
                models: c.registry_listing(),
                heartbeat_interval_ms: c.options().heartbeat_interval.as_millis() as u64,
            })
        }
        ACTION_HEARTBEAT => {
            require_cluster_member(c, admission)?;
            let beat: Heartbeat = parse(&action)?;
            c.progress
                .note(&beat.name, beat.model_runs, beat.rows_scanned);
            json_reply(&HeartbeatReply {
                known: c.catalog().heartbeat(&beat.name, beat.active_scans),
                models: c.registry_listing(),
            })
        }
        ACTION_LEAVE => {
            require_cluster_member(c, admission)?;
            let leave: Leave = parse(&action)?;
            c.catalog().set_draining(&leave.name);
            tracing::info!(worker = %leave.name, "worker leaving: no new tasks for it");
            json_reply(&())
        }
        ACTION_FETCH_MODEL => {
            let fetch: FetchModel = parse(&action)?;
            let model = c.models().by_hash(&fetch.hash).ok_or_else(|| {
                Status::not_found(format!("no model with hash {} in the registry", fetch.hash))
            })?;
            let chunks: Vec<Result<arrow_flight::Result, Status>> = model
                .bytes
                .chunks(MODEL_CHUNK_BYTES)
                .map(|chunk| {
                    Ok(arrow_flight::Result {
                        body: bytes::Bytes::copy_from_slice(chunk),
                    })
                })
                .collect();
            Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
        }
        ACTION_QUERY_REPORT => {
            let request: QueryReportRequest = parse(&action)?;
            // Another client's report reads as missing: its existence is not revealed.
            let report = c.report(&request.query_id, &principal).ok_or_else(|| {
                let mut id = request.query_id.clone();
                id.truncate(64);
                Status::not_found(format!("no report of yours for query {id}"))
            })?;
            json_reply(&report)
        }
        ACTION_SITES => {
            let sites: Vec<SiteStatus> = c
                .catalog()
                .sites()
                .into_iter()
                .map(|(name, url, live, tables)| SiteStatus {
                    model_runs: c.progress.model_runs_of(&name),
                    name,
                    url: url.to_string(),
                    live,
                    tables,
                })
                .collect();
            json_reply(&sites)
        }
        ACTION_RUNNING => json_reply(&c.running_queries(&principal)),
        ACTION_CANCEL_FLIGHT_INFO => {
            let request = CancelFlightInfoRequest::decode(action.body).map_err(|e| {
                Status::invalid_argument(format!("malformed CancelFlightInfoRequest: {e}"))
            })?;
            let status = cancel(c, request.info.as_ref(), &principal);
            let body = CancelFlightInfoResult::new(status).encode_to_vec();
            let item = arrow_flight::Result { body: body.into() };
            Ok(Response::new(Box::pin(futures::stream::iter([Ok(item)]))))
        }
        other => Err(Status::invalid_argument(format!(
            "unknown action '{other}'"
        ))),
    }
}

/// Cancels the statements behind `info`'s tickets that `principal` runs (any for an admin).
/// A ticket this coordinator did not sign is ignored: its id is never looked up.
pub fn cancel(c: &Coordinator, info: Option<&FlightInfo>, principal: &Principal) -> CancelStatus {
    let ids: Vec<String> = info
        .into_iter()
        .flat_map(|info| info.endpoint.iter())
        .filter_map(|endpoint| endpoint.ticket.as_ref())
        .filter_map(|ticket| StatementHandle::from_ticket(&ticket.ticket))
        .filter(|handle| c.tickets.verify(handle).is_ok())
        .map(|handle| handle.query_id)
        .collect();
    if ids.is_empty() {
        return CancelStatus::NotCancellable;
    }
    let owner = principal.owner();
    let mut cancelled = false;
    for id in ids {
        cancelled |= c
            .executor
            .running()
            .cancel(&id, &owner, principal.is_admin());
    }
    if cancelled {
        CancelStatus::Cancelled
    } else {
        // Finished already, or not yet fetched: nothing runs to cancel.
        CancelStatus::NotCancellable
    }
}
