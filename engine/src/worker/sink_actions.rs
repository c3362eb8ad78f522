//! The worker's own Flight actions, for the coordinator: commit, abort and look up the
//! local Parquet output of a pipeline run; what the site sent for a statement. Served beside datafusion-distributed's worker
//! service on the same port, behind the same cluster-secret gate.

use crate::protocol::{
    ACTION_CANCEL_STATEMENT, ACTION_SENT, ACTION_SINK_ABORT, ACTION_SINK_COMMIT, ACTION_SINK_SEAL,
    ACTION_SINK_STATUS, ACTION_SINK_WAVES, SentRequest, SinkRun,
};
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use futures::stream::BoxStream;
use shoal_operators::sink::staging::{self, SiteManifest};
use std::path::PathBuf;
use tonic::{Request, Response, Status, Streaming};

#[derive(Debug, Clone)]
pub struct WorkerActions {
    pub output_root: PathBuf,
    pub sent: std::sync::Arc<super::sent_ledger::SentLedger>,
}

fn parse<T: serde::de::DeserializeOwned>(action: &Action) -> Result<T, Status> {
    serde_json::from_slice(&action.body)
        .map_err(|e| Status::invalid_argument(format!("malformed {} body: {e}", action.r#type)))
}

fn reply<T: serde::Serialize>(
    value: &T,
) -> Result<Response<BoxStream<'static, Result<arrow_flight::Result, Status>>>, Status> {
    let body = serde_json::to_vec(value).map_err(|e| Status::internal(e.to_string()))?;
    let item = arrow_flight::Result { body: body.into() };
    Ok(Response::new(Box::pin(futures::stream::iter([Ok(item)]))))
}

fn checked(run: &SinkRun) -> Result<(), Status> {
    staging::check_sink_path(&run.path)
        .and_then(|_| staging::check_run_id(&run.run_id))
        .map_err(Status::invalid_argument)
}

/// Runs file-system work off the async threads; its errors become internal statuses.
async fn on_disk<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::internal(e.to_string()))
}

fn unimplemented<T>() -> Result<T, Status> {
    Err(Status::unimplemented(
        "a worker serves only shoal's sink actions on Flight",
    ))
}

#[tonic::async_trait]
impl FlightService for WorkerActions {
    type HandshakeStream = BoxStream<'static, Result<HandshakeResponse, Status>>;
    type ListFlightsStream = BoxStream<'static, Result<FlightInfo, Status>>;
    type DoGetStream = BoxStream<'static, Result<FlightData, Status>>;
    type DoPutStream = BoxStream<'static, Result<PutResult, Status>>;
    type DoActionStream = BoxStream<'static, Result<arrow_flight::Result, Status>>;
    type ListActionsStream = BoxStream<'static, Result<ActionType, Status>>;
    type DoExchangeStream = BoxStream<'static, Result<FlightData, Status>>;

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let action = request.into_inner();
        let root = self.output_root.clone();
        match action.r#type.as_str() {
            ACTION_SENT => {
                let request: SentRequest = parse(&action)?;
                reply(&self.sent.sent(&request.statement))
            }
            ACTION_SINK_COMMIT => {
                let manifest: SiteManifest = parse(&action)?;
                checked(&SinkRun {
                    path: manifest.path.clone(),
                    run_id: manifest.run_id.clone(),
                })?;
                reply(&on_disk(move || staging::commit(&root, &manifest)).await?)
            }
            ACTION_SINK_ABORT => {
                let run: SinkRun = parse(&action)?;
                checked(&run)?;
                on_disk(move || staging::abort(&root, &run.path, &run.run_id)).await?;
                reply(&true)
            }
            ACTION_SINK_STATUS => {
                let run: SinkRun = parse(&action)?;
                checked(&run)?;
                reply(&on_disk(move || staging::committed(&root, &run.path, &run.run_id)).await?)
            }
            ACTION_SINK_WAVES => {
                let run: SinkRun = parse(&action)?;
                checked(&run)?;
                reply(
                    &on_disk(move || staging::committed_waves(&root, &run.path, &run.run_id))
                        .await?,
                )
            }
            ACTION_SINK_SEAL => {
                let run: SinkRun = parse(&action)?;
                checked(&run)?;
                reply(&on_disk(move || staging::seal(&root, &run.path, &run.run_id)).await?)
            }
            // The coordinator stopped a statement: its loops here stop at their next check.
            ACTION_CANCEL_STATEMENT => {
                let cancel: crate::protocol::CancelStatement = parse(&action)?;
                reply(&shoal_operators::cancel::cancel(&cancel.key))
            }
            other => Err(Status::invalid_argument(format!(
                "unknown worker action '{other}'"
            ))),
        }
    }

    async fn handshake(
        &self,
        _r: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        unimplemented()
    }
    async fn list_flights(
        &self,
        _r: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        unimplemented()
    }
    async fn get_flight_info(
        &self,
        _r: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        unimplemented()
    }
    async fn poll_flight_info(
        &self,
        _r: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        unimplemented()
    }
    async fn get_schema(
        &self,
        _r: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        unimplemented()
    }
    async fn do_get(&self, _r: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        unimplemented()
    }
    async fn do_put(
        &self,
        _r: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        unimplemented()
    }
    async fn list_actions(
        &self,
        _r: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        unimplemented()
    }
    async fn do_exchange(
        &self,
        _r: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        unimplemented()
    }
}
