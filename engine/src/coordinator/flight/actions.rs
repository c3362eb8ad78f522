//! shoal's own actions on the coordinator's Flight endpoint: worker registration and
//! heartbeats, model fetches, query reports, the site list, and cancelling a statement.

use super::{Coordinator, json_reply, parse};
use crate::protocol::{
    ACTION_FETCH_MODEL, ACTION_HEARTBEAT, ACTION_LEAVE, ACTION_PEERS, ACTION_QUERY_REPORT,
    ACTION_REGISTER, ACTION_RUNNING, ACTION_SITES, FetchModel, Heartbeat, HeartbeatReply, Leave,
    MODEL_CHUNK_BYTES, Peers, QueryReportRequest, RegisterReply, SiteReport, SiteStatus,
    StatementHandle,
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

/// Registering, heartbeating and leaving change the cluster: with the sites' secrets
/// configured, only site `site` itself may do them for `site` (a client cannot add a fake
/// site, and one site cannot pose as another).
fn require_site(c: &Coordinator, admission: Option<&Admission>, site: &str) -> Result<(), Status> {
    if !c.authenticator().sites().configured() {
        return Ok(());
    }
    match admission.map(|a| &a.principal) {
        Some(Principal::Site { name }) if name == site => Ok(()),
        Some(Principal::Site { name }) => {
            tracing::warn!(credential = %name, claimed = %site, "a site tried to act as another");
            Err(Status::permission_denied(format!(
                "the credential is site '{name}''s: it cannot register, heartbeat or leave as \
                 site '{site}'"
            )))
        }
        _ => Err(Status::permission_denied(format!(
            "only site '{site}', with its own credential, may register, heartbeat or leave as \
             '{site}'"
        ))),
    }
}

/// What a site's credential may do at the coordinator: join, stay, leave, fetch models
/// and its passes to its peers.
const SITE_ACTIONS: [&str; 5] = [
    ACTION_REGISTER,
    ACTION_HEARTBEAT,
    ACTION_LEAVE,
    ACTION_FETCH_MODEL,
    ACTION_PEERS,
];

pub async fn handle(
    c: &Coordinator,
    action: Action,
    admission: Option<&Admission>,
) -> Result<Response<ActionStream>, Status> {
    let principal = admission.map_or(Principal::Open, |a| a.principal.clone());
    if matches!(principal, Principal::Site { .. })
        && !SITE_ACTIONS.contains(&action.r#type.as_str())
    {
        return Err(Status::permission_denied(format!(
            "a site's credential may not call '{}'",
            action.r#type
        )));
    }
    match action.r#type.as_str() {
        ACTION_REGISTER => {
            let report: SiteReport = parse(&action)?;
            require_site(c, admission, &report.name)?;
            c.check_reachable(&report.name, &report.url)
                .await
                .map_err(|e| Status::failed_precondition(e.to_string()))?;
            let name = report.name.clone();
            c.catalog()
                .register(report)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            tracing::info!(worker = %name, "worker registered");
            json_reply(&RegisterReply {
                models: c.registry_listing(),
                heartbeat_interval_ms: c.options().heartbeat_interval.as_millis() as u64,
                peers: c.peer_passes(&name),
            })
        }
        ACTION_HEARTBEAT => {
            let beat: Heartbeat = parse(&action)?;
            require_site(c, admission, &beat.name)?;
            c.progress
                .note(&beat.name, beat.model_runs, beat.rows_scanned);
            json_reply(&HeartbeatReply {
                known: c.catalog().heartbeat(&beat.name, beat.active_scans),
                models: c.registry_listing(),
                peers: c.peer_passes(&beat.name),
            })
        }
        ACTION_PEERS => {
            let peers: Peers = parse(&action)?;
            require_site(c, admission, &peers.name)?;
            json_reply(&c.peer_passes(&peers.name))
        }
        ACTION_LEAVE => {
            let leave: Leave = parse(&action)?;
            require_site(c, admission, &leave.name)?;
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
                    devices: c.catalog().devices_of(&name),
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
