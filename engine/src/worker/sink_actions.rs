//! The worker's own Flight actions, for the coordinator: commit, abort and look up the
//! Parquet output of a pipeline run (in the output folder, or in the site's data store);
//! what the site sent for a statement. Served beside datafusion-distributed's worker
//! service on the same port, behind the same cluster-secret gate.

use crate::protocol::{
    ACTION_CANCEL_STATEMENT, ACTION_SENT, ACTION_SINK_ABORT, ACTION_SINK_COMMIT,
    ACTION_SINK_ROLLBACK, ACTION_SINK_SEAL, ACTION_SINK_STATUS, ACTION_SINK_WAVES, SentRequest,
    SinkCommit, SinkRun, StatementAtSite,
};
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use futures::stream::BoxStream;
use object_store::ObjectStore;
use shoal_operators::sink::staging::{self, SinkTarget};
use shoal_operators::sink::store_commit;
use std::path::PathBuf;
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};

#[derive(Debug, Clone)]
pub struct WorkerActions {
    pub output_root: PathBuf,
    /// The site's data, where `object_store` sinks commit.
    pub data_store: Arc<dyn ObjectStore>,
    /// A run committed into the data is a table: list it before the commit returns.
    pub relist: super::relisting::RelistNow,
    pub sent: Arc<super::sent_ledger::SentLedger>,
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

/// Store work's errors become internal statuses naming the object.
async fn in_store<T>(work: impl Future<Output = std::io::Result<T>>) -> Result<T, Status> {
    work.await.map_err(|e| Status::internal(e.to_string()))
}

fn unimplemented<T>() -> Result<T, Status> {
    Err(Status::unimplemented(
        "a worker serves only shoal's sink actions on Flight",
    ))
}

impl WorkerActions {
    /// A run committed into the site's data is a table once the coordinator has the new
    /// listing; a wave's commit (hidden until the seal) is not.
    async fn relisted_after(&self, run: &SinkRun) {
        if !staging::is_waves_path(&run.path) {
            self.relist.relist().await;
        }
    }
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
                reply(&StatementAtSite {
                    sent: self.sent.sent(&request.statement),
                    device_fallbacks: shoal_operators::device::fallbacks_of(&request.statement),
                })
            }
            ACTION_SINK_COMMIT => {
                let SinkCommit { target, manifest } = parse(&action)?;
                let run = SinkRun {
                    path: manifest.path.clone(),
                    run_id: manifest.run_id.clone(),
                    target,
                };
                checked(&run)?;
                let committed = match target {
                    SinkTarget::OutputFolder => {
                        on_disk(move || staging::commit(&root, &manifest)).await?
                    }
                    SinkTarget::DataStore => {
                        let committed =
                            in_store(store_commit::commit(self.data_store.as_ref(), &manifest))
                                .await?;
                        self.relisted_after(&run).await;
                        committed
                    }
                };
                reply(&committed)
            }
            ACTION_SINK_ABORT => {
                let run: SinkRun = parse(&action)?;
                checked(&run)?;
                // An object_store sink stages in the output folder too: both are cleared.
                let (path, run_id) = (run.path.clone(), run.run_id.clone());
                on_disk(move || staging::abort(&root, &path, &run_id)).await?;
                if run.target == SinkTarget::DataStore {
                    in_store(store_commit::abort(
                        self.data_store.as_ref(),
                        &run.path,
                        &run.run_id,
                    ))
                    .await?;
                }
                reply(&true)
            }
            ACTION_SINK_ROLLBACK => {
                let run: SinkRun = parse(&action)?;
                checked(&run)?;
                match run.target {
                    SinkTarget::OutputFolder => {
                        let (path, run_id) = (run.path.clone(), run.run_id.clone());
                        on_disk(move || staging::rollback(&root, &path, &run_id)).await?
                    }
                    SinkTarget::DataStore => {
                        in_store(store_commit::rollback(
                            self.data_store.as_ref(),
                            &run.path,
                            &run.run_id,
                        ))
                        .await?;
                        self.relisted_after(&run).await;
                    }
                }
                reply(&true)
            }
            ACTION_SINK_STATUS => {
                let run: SinkRun = parse(&action)?;
                checked(&run)?;
                reply(&match run.target {
                    SinkTarget::OutputFolder => {
                        on_disk(move || staging::committed(&root, &run.path, &run.run_id)).await?
                    }
                    SinkTarget::DataStore => {
                        in_store(store_commit::committed(
                            self.data_store.as_ref(),
                            &run.path,
                            &run.run_id,
                        ))
                        .await?
                    }
                })
            }
            ACTION_SINK_WAVES => {
                let run: SinkRun = parse(&action)?;
                checked(&run)?;
                reply(&match run.target {
                    SinkTarget::OutputFolder => {
                        on_disk(move || staging::committed_waves(&root, &run.path, &run.run_id))
                            .await?
                    }
                    SinkTarget::DataStore => {
                        in_store(store_commit::committed_waves(
                            self.data_store.as_ref(),
                            &run.path,
                            &run.run_id,
                        ))
                        .await?
                    }
                })
            }
            ACTION_SINK_SEAL => {
                let run: SinkRun = parse(&action)?;
                checked(&run)?;
                let sealed = match run.target {
                    SinkTarget::OutputFolder => {
                        let (path, run_id) = (run.path.clone(), run.run_id.clone());
                        on_disk(move || staging::seal(&root, &path, &run_id)).await?
                    }
                    SinkTarget::DataStore => {
                        let sealed = in_store(store_commit::seal(
                            self.data_store.as_ref(),
                            &run.path,
                            &run.run_id,
                        ))
                        .await?;
                        self.relisted_after(&run).await;
                        sealed
                    }
                };
                reply(&sealed)
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
