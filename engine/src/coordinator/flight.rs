//! The coordinator's Flight endpoint: Flight SQL statements for clients, and shoal's
//! actions for workers (register, heartbeat, fetch a model) and for `shoal sql`.

use super::{Coordinator, query::uuid_like};
use crate::protocol::{
    ACTION_FETCH_MODEL, ACTION_HEARTBEAT, ACTION_QUERY_REPORT, ACTION_REGISTER, ACTION_SITES,
    FetchModel, Heartbeat, HeartbeatReply, MODEL_CHUNK_BYTES, QueryReportRequest, RegisterReply,
    SiteReport, SiteStatus, StatementHandle,
};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::server::FlightSqlService;
use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt, SqlInfo, TicketStatementQuery};
use arrow_flight::{Action, FlightDescriptor, FlightEndpoint, FlightInfo, Ticket};
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use shoal_operators::ModelProvider;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tonic::{Request, Response, Status};

#[derive(Debug, Clone)]
pub struct CoordinatorFlight {
    coordinator: Arc<Coordinator>,
}

impl CoordinatorFlight {
    pub fn new(coordinator: Arc<Coordinator>) -> Self {
        Self { coordinator }
    }
}

type ActionStream =
    Pin<Box<dyn futures::Stream<Item = Result<arrow_flight::Result, Status>> + Send + 'static>>;

fn json_reply<T: serde::Serialize>(value: &T) -> Result<Response<ActionStream>, Status> {
    let body = serde_json::to_vec(value).map_err(|e| Status::internal(e.to_string()))?;
    let item = arrow_flight::Result { body: body.into() };
    Ok(Response::new(Box::pin(futures::stream::iter([Ok(item)]))))
}

fn parse<T: serde::de::DeserializeOwned>(action: &Action) -> Result<T, Status> {
    serde_json::from_slice(&action.body).map_err(|e| {
        Status::invalid_argument(format!("action {}: malformed body: {e}", action.r#type))
    })
}

/// Planning errors are the client's (bad SQL, unknown model...); the rest are ours.
fn to_status(e: crate::Error) -> Status {
    let message = e.to_string();
    match e {
        crate::Error::DataFusion(datafusion::error::DataFusionError::Plan(_))
        | crate::Error::DataFusion(datafusion::error::DataFusionError::SQL(..)) => {
            Status::invalid_argument(message)
        }
        _ => Status::internal(message),
    }
}

#[tonic::async_trait]
impl FlightSqlService for CoordinatorFlight {
    type FlightService = CoordinatorFlight;

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let planned = self
            .coordinator
            .plan(&query.query)
            .await
            .map_err(to_status)?;
        let handle = StatementHandle {
            sql: query.query,
            query_id: uuid_like(),
        };
        let ticket = TicketStatementQuery {
            statement_handle: serde_json::to_vec(&handle)
                .map_err(|e| Status::internal(e.to_string()))?
                .into(),
        };
        let endpoint =
            FlightEndpoint::new().with_ticket(Ticket::new(ticket.as_any().encode_to_vec()));
        let info = FlightInfo::new()
            .try_with_schema(planned.schema().as_ref())
            .map_err(|e| Status::internal(e.to_string()))?
            .with_endpoint(endpoint)
            .with_descriptor(request.into_inner());
        Ok(Response::new(info))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let handle: StatementHandle = serde_json::from_slice(&ticket.statement_handle)
            .map_err(|e| Status::invalid_argument(format!("malformed statement ticket: {e}")))?;
        let started = Instant::now();
        let coordinator = self.coordinator.clone();
        // Planned again rather than kept from get_flight_info: the coordinator holds no
        // state for a client that never comes back for its ticket, and planning is cheap
        // next to execution.
        let planned = Arc::new(coordinator.plan(&handle.sql).await.map_err(to_status)?);
        let schema = planned.schema();
        let batches = coordinator.execute(&planned).map_err(to_status)?;
        let rows = Arc::new(AtomicU64::new(0));
        let counted = {
            let rows = rows.clone();
            let coordinator = coordinator.clone();
            batches
                .inspect_ok(move |b| {
                    rows.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                })
                .map_err(move |e| FlightError::ExternalError(Box::new(coordinator.name_worker(e))))
        };
        // After the last batch: read the metrics into the query's report.
        let finish = futures::stream::once(async move {
            coordinator
                .finish(
                    &handle.query_id,
                    &planned,
                    rows.load(Ordering::Relaxed),
                    started,
                )
                .await;
            None
        })
        .filter_map(|x: Option<Result<_, FlightError>>| async move { x });
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(counted.chain(finish))
            .map_err(|e| Status::internal(e.to_string()));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        let action = request.into_inner();
        let c = &self.coordinator;
        match action.r#type.as_str() {
            ACTION_REGISTER => {
                let report: SiteReport = parse(&action)?;
                let name = report.name.clone();
                c.catalog()
                    .register(report)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
                tracing::info!(worker = %name, "worker registered");
                json_reply(&RegisterReply {
                    models: c.models().list(),
                    heartbeat_interval_ms: c.options().heartbeat_interval.as_millis() as u64,
                })
            }
            ACTION_HEARTBEAT => {
                let beat: Heartbeat = parse(&action)?;
                json_reply(&HeartbeatReply {
                    known: c.catalog().heartbeat(&beat.name),
                    models: c.models().list(),
                })
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
                let report = c.report(&request.query_id).ok_or_else(|| {
                    Status::not_found(format!("no report for query {}", request.query_id))
                })?;
                json_reply(&report)
            }
            ACTION_SITES => {
                let sites: Vec<SiteStatus> = c
                    .catalog()
                    .sites()
                    .into_iter()
                    .map(|(name, url, live, tables)| SiteStatus {
                        name,
                        url: url.to_string(),
                        live,
                        tables,
                    })
                    .collect();
                json_reply(&sites)
            }
            other => Err(Status::invalid_argument(format!(
                "unknown action '{other}'"
            ))),
        }
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
