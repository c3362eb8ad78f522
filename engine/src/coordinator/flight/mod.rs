//! The coordinator's Flight endpoint: Flight SQL for clients (statements, prepared
//! statements, metadata calls, cancel) and shoal's actions for workers and `shoal sql`.
//! Credentials are checked before any of this runs (see [`crate::security::Guarded`]).

mod actions;
mod catalog_calls;
mod parameters;
mod tickets;

pub use tickets::TicketKey;

use super::Coordinator;
use super::execution::{bounded, flight_status};
use super::ids::new_id;
use crate::protocol::{StatementAsks, StatementHandle};
use crate::security::{Admission, Principal};
use crate::security::{Guarded, check_cluster_secret, check_exposure, server_tls};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::SqlInfoDataBuilder;
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionCancelQueryRequest, ActionCancelQueryResult, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, CommandGetCatalogs,
    CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables,
    CommandPreparedStatementQuery, CommandPreparedStatementUpdate, CommandStatementQuery,
    CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse,
    IpcMessage, SchemaAsIpc, Ticket,
};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

#[derive(Debug, Clone)]
pub struct CoordinatorFlight {
    coordinator: Arc<Coordinator>,
}

impl CoordinatorFlight {
    pub fn new(coordinator: Arc<Coordinator>) -> Self {
        Self { coordinator }
    }
}

/// Serves Flight SQL (and the worker actions) until `shutdown` resolves. Refuses to serve
/// beyond loopback without client authentication unless `insecure` is set.
pub async fn serve(
    coordinator: Arc<Coordinator>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> crate::Result<()> {
    let addr = listener.local_addr().map_err(|e| crate::Error::Listen {
        addr: "coordinator".into(),
        message: e.to_string(),
    })?;
    check_exposure(
        "coordinator",
        addr,
        coordinator.auth.requires_client_auth(),
        coordinator.options.insecure,
    )?;
    let sites = coordinator.auth.sites();
    if sites.configured() && !sites.per_site() && !addr.ip().is_loopback() {
        tracing::warn!(
            "every site shares one cluster_secret: any site can act as any other; give each \
             its own (site_key and shoal enroll, or [[sites]])"
        );
    }
    if coordinator.auth.requires_client_auth() {
        check_cluster_secret(
            addr,
            coordinator.auth.sites().configured(),
            coordinator.options.insecure,
        )?;
    }
    // Pings find clients and peers whose link was cut, so their streams end.
    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(crate::security::KEEP_ALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(crate::security::KEEP_ALIVE_TIMEOUT));
    if let Some(tls) = &coordinator.options.tls {
        builder = builder
            .tls_config(server_tls(tls)?)
            .map_err(|e| crate::Error::Security(format!("coordinator TLS: {e}")))?;
    }
    let auth = coordinator.auth.clone();
    let service = arrow_flight::flight_service_server::FlightServiceServer::new(
        CoordinatorFlight::new(coordinator),
    )
    .max_decoding_message_size(64 << 20)
    .max_encoding_message_size(64 << 20);
    builder
        .add_service(Guarded::coordinator(service, auth))
        .serve_with_incoming_shutdown(crate::accept::accept_nodelay(listener), shutdown)
        .await
        .map_err(|e| crate::Error::Listen {
            addr: "coordinator".into(),
            message: e.to_string(),
        })
}

type DoGetStream = <CoordinatorFlight as FlightService>::DoGetStream;

fn json_reply<T: serde::Serialize>(value: &T) -> Result<Response<actions::ActionStream>, Status> {
    let body = serde_json::to_vec(value).map_err(|e| Status::internal(e.to_string()))?;
    let item = arrow_flight::Result { body: body.into() };
    Ok(Response::new(Box::pin(futures::stream::iter([Ok(item)]))))
}

fn parse<T: serde::de::DeserializeOwned>(action: &Action) -> Result<T, Status> {
    serde_json::from_slice(&action.body).map_err(|e| {
        Status::invalid_argument(format!("action {}: malformed body: {e}", action.r#type))
    })
}

/// A FlightInfo whose one ticket is `ticket`, answering `descriptor`.
fn flight_info(
    schema: &Schema,
    ticket: Vec<u8>,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let endpoint = FlightEndpoint::new().with_ticket(Ticket::new(ticket));
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(e.to_string()))?
        .with_endpoint(endpoint)
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

/// The FlightInfo of a metadata command: its ticket is the command itself, which the
/// matching `do_get_*` answers.
fn command_info(
    command: &impl ProstMessageExt,
    schema: &Schema,
    request: Request<FlightDescriptor>,
) -> Result<Response<FlightInfo>, Status> {
    flight_info(
        schema,
        command.as_any().encode_to_vec(),
        request.into_inner(),
    )
}

fn one_batch(batch: crate::Result<RecordBatch>) -> Result<Response<DoGetStream>, Status> {
    let batch = batch.map_err(crate::Error::to_status)?;
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(batch.schema())
        .build(futures::stream::once(async move { Ok(batch) }))
        .map_err(flight_status);
    Ok(Response::new(Box::pin(stream)))
}

/// Who sent `request`, as the guard admitted it. A request the guard did not see (a test
/// calling the service directly) is the open principal, as on an unauthenticated endpoint.
fn principal_of<T>(request: &Request<T>) -> Principal {
    request
        .extensions()
        .get::<Admission>()
        .map_or(Principal::Open, |a| a.principal.clone())
}

/// Header a client sends to be answered from the sites that are up (see
/// [`StatementHandle::partial`]); ADBC sets it with the connection option
/// `adbc.flight.sql.rpc.call_header.shoal-partial`, `shoal sql` with `--partial`.
pub const PARTIAL_HEADER: &str = "shoal-partial";
/// Header setting the statement's `shoal.inference.device` (auto, cpu, cuda, cuda:N).
pub const DEVICE_HEADER: &str = "shoal-device";
/// Header setting the statement's `shoal.inference.device_fallback` (true: a site without
/// the GPU asked for scores on the CPU and the report says so).
pub const DEVICE_FALLBACK_HEADER: &str = "shoal-device-fallback";

/// What the client asks of the statement in `request`'s headers; a device that is not
/// one is refused naming the header.
fn asks_of<T>(request: &Request<T>) -> Result<StatementAsks, Status> {
    let header = |name: &str| {
        request
            .metadata()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let yes = |name: &str| header(name).is_some_and(|v| matches!(v, "true" | "1"));
    let device = match header(DEVICE_HEADER).filter(|v| !v.is_empty()) {
        Some(text) => text
            .parse::<shoal_operators::device::DeviceRequest>()
            .map_err(|e| Status::invalid_argument(format!("header {DEVICE_HEADER}: {e}")))?
            .to_string(),
        None => String::new(),
    };
    Ok(StatementAsks {
        partial: yes(PARTIAL_HEADER),
        device,
        device_fallback: yes(DEVICE_FALLBACK_HEADER),
    })
}

fn schema_bytes(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: datafusion::arrow::error::ArrowError| Status::internal(e.to_string()))?;
    Ok(bytes)
}

impl CoordinatorFlight {
    /// Plans a statement (checking it) and hands back a ticket that carries it, signed
    /// for `principal`.
    async fn statement_info(
        &self,
        handle: StatementHandle,
        principal: &Principal,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let parameters = parameters::decode(handle.parameters.as_deref())?;
        let planned = self
            .coordinator
            .plan_as(&handle.sql, parameters, principal, &handle.asks)
            .await
            .map_err(crate::Error::to_status)?;
        let handle = self.coordinator.tickets.seal(handle, principal);
        flight_info(&planned.schema(), handle.to_ticket(), descriptor)
    }

    /// Runs a statement and streams its batches, bounded by the query timeout, the result
    /// limit and cancellation. When the client goes away, tonic drops this stream, which
    /// drops the plan's streams and with them the work on every worker.
    async fn stream_statement(
        &self,
        handle: StatementHandle,
        principal: &Principal,
    ) -> Result<DoGetStream, Status> {
        // Only a ticket this coordinator issued to this principal runs: the id in it is
        // then ours, never a client's.
        self.coordinator.tickets.open(&handle, principal)?;
        let started = Instant::now();
        let coordinator = self.coordinator.clone();
        let parameters = parameters::decode(handle.parameters.as_deref())?;
        // Planned again rather than kept from get_flight_info: the coordinator holds no
        // state for a client that never comes back for its ticket.
        let planned = Arc::new(
            coordinator
                .plan_as(&handle.sql, parameters.clone(), principal, &handle.asks)
                .await
                .map_err(crate::Error::to_status)?,
        );
        let schema = planned.schema();
        // A worker lost before the first batch is sent makes the statement re-run on the
        // remaining holders of the data.
        let executor = coordinator.executor.clone();
        let (batches, attempts) = executor.execute_resilient(
            planned,
            coordinator.replan_as(&handle.sql, parameters, principal, &handle.asks),
        );
        let (running, cancel) = executor
            .running()
            .start(&handle.query_id, &handle.owner, principal.is_admin())
            .map_err(|e| crate::Error::Quota(e.to_string()).to_status())?;
        let rows = Arc::new(AtomicU64::new(0));
        let limits = executor.limits();
        let bounded = bounded(
            handle.query_id.clone(),
            batches,
            cancel,
            limits,
            rows.clone(),
        );
        // After the last batch: read the metrics into the query's report.
        let finish = futures::stream::once(async move {
            drop(running);
            executor
                .reports()
                .finish(
                    &handle.query_id,
                    Some(&handle.owner),
                    &attempts,
                    rows.load(Ordering::Relaxed),
                    started,
                )
                .await;
        })
        .filter_map(|()| async { None });
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(bounded.chain(finish))
            .map_err(flight_status);
        Ok(Box::pin(stream))
    }
}

#[tonic::async_trait]
impl FlightSqlService for CoordinatorFlight {
    type FlightService = CoordinatorFlight;

    /// The guard has checked the Basic credentials and issued a token; hand it back the way
    /// Flight clients read it (the `authorization` header, and the payload).
    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let token = request
            .extensions()
            .get::<Admission>()
            .and_then(|a| a.issued_token.clone())
            .ok_or_else(|| {
                Status::unauthenticated(
                    "log in with 'authorization: Basic <base64 user:password>' on the handshake",
                )
            })?;
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into(),
        };
        let mut response: Response<Pin<Box<dyn Stream<Item = _> + Send>>> =
            Response::new(Box::pin(futures::stream::iter([Ok(reply)])));
        let header = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|e| Status::internal(e.to_string()))?;
        response.metadata_mut().insert("authorization", header);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let handle = StatementHandle {
            sql: query.query,
            query_id: new_id(),
            parameters: None,
            owner: String::new(),
            asks: asks_of(&request)?,
            mac: String::new(),
        };
        let principal = principal_of(&request);
        self.statement_info(handle, &principal, request.into_inner())
            .await
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let handle =
            StatementHandle::decode(&ticket.statement_handle).map_err(Status::invalid_argument)?;
        let principal = principal_of(&request);
        Ok(Response::new(
            self.stream_statement(handle, &principal).await?,
        ))
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let principal = principal_of(&request);
        let (dataset, parameters) = self
            .coordinator
            .describe(&query.query)
            .await
            .map_err(crate::Error::to_status)?;
        let handle = self
            .coordinator
            .prepared
            .create(query.query, &principal)
            .map_err(crate::Error::to_status)?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into_bytes().into(),
            dataset_schema: schema_bytes(&dataset)?,
            parameter_schema: schema_bytes(&parameters)?,
        })
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let handle = prepared_handle(&query.prepared_statement_handle)?;
        let principal = principal_of(&request);
        let row = parameters::receive(request.into_inner()).await?;
        if !self.coordinator.prepared.bind(&handle, row, &principal) {
            return Err(unknown_prepared(&handle));
        }
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(query.prepared_statement_handle),
        })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let handle = prepared_handle(&cmd.prepared_statement_handle)?;
        let principal = principal_of(&request);
        let prepared = self
            .coordinator
            .prepared
            .get(&handle, &principal)
            .ok_or_else(|| unknown_prepared(&handle))?;
        let statement = StatementHandle {
            sql: prepared.sql,
            query_id: new_id(),
            parameters: prepared
                .parameters
                .as_ref()
                .map(parameters::encode)
                .transpose()?,
            owner: String::new(),
            asks: asks_of(&request)?,
            mac: String::new(),
        };
        self.statement_info(statement, &principal, request.into_inner())
            .await
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let handle = prepared_handle(&query.prepared_statement_handle)?;
        self.coordinator
            .prepared
            .close(&handle, &principal_of(&request));
        Ok(())
    }

    async fn do_put_statement_update(
        &self,
        _ticket: CommandStatementUpdate,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(read_only_refusal())
    }

    async fn do_put_prepared_statement_update(
        &self,
        _query: CommandPreparedStatementUpdate,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(read_only_refusal())
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        command_info(&query, &query.into_builder().schema(), request)
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        one_batch(catalog_calls::catalogs(&self.coordinator, query))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        command_info(&query, &query.clone().into_builder().schema(), request)
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        one_batch(catalog_calls::schemas(&self.coordinator, query))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        command_info(&query, &query.clone().into_builder().schema(), request)
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        one_batch(catalog_calls::tables(&self.coordinator, query).await)
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        command_info(&query, &query.into_builder().schema(), request)
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        one_batch(catalog_calls::table_types(query))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        command_info(&query, SqlInfoDataBuilder::schema(), request)
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        one_batch(catalog_calls::sql_info(query))
    }

    async fn do_action_cancel_query(
        &self,
        query: ActionCancelQueryRequest,
        request: Request<Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        let info = FlightInfo::decode(query.info)
            .map_err(|e| Status::invalid_argument(format!("malformed FlightInfo: {e}")))?;
        let status = actions::cancel(&self.coordinator, Some(&info), &principal_of(&request));
        // The deprecated CancelQuery result enum numbers its values like CancelStatus.
        Ok(ActionCancelQueryResult {
            result: status as i32,
        })
    }

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        let admission = request.extensions().get::<Admission>().cloned();
        let principal = principal_of(&request);
        let action = request.into_inner();
        if action.r#type == crate::protocol::ACTION_PIPELINE {
            return pipeline_action(self.coordinator.clone(), &action, principal);
        }
        actions::handle(&self.coordinator, action, admission.as_ref()).await
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// Runs a pipeline inside the response stream itself: its events stream back as JSON
/// results, and an error ends the stream with its status. No task outlives the stream: a
/// client that hangs up drops it, and with it the run (its query, and the sink staging it
/// aborts).
fn pipeline_action(
    coordinator: Arc<Coordinator>,
    action: &Action,
    principal: Principal,
) -> Result<Response<<CoordinatorFlight as FlightService>::DoActionStream>, Status> {
    let request: crate::protocol::PipelineRequest = parse(action)?;
    let (events_tx, events_rx) = tokio::sync::mpsc::channel(64);
    let run: futures::future::BoxFuture<'static, crate::Result<()>> =
        Box::pin(async move { coordinator.pipeline(request, &principal, events_tx).await });
    let state = PipelineStream {
        run: Some(run),
        outcome: None,
        events: events_rx,
    };
    Ok(Response::new(Box::pin(futures::stream::unfold(
        state,
        PipelineStream::next,
    ))))
}

/// A running pipeline and what it has sent but the client has not read.
struct PipelineStream {
    /// The run, until it finishes.
    run: Option<futures::future::BoxFuture<'static, crate::Result<()>>>,
    /// How the run ended, sent after its last event.
    outcome: Option<crate::Result<()>>,
    events: tokio::sync::mpsc::Receiver<crate::protocol::PipelineEvent>,
}

impl PipelineStream {
    async fn next(mut self) -> Option<(Result<arrow_flight::Result, Status>, Self)> {
        loop {
            let event = match self.run.as_mut() {
                Some(run) => tokio::select! {
                    biased;
                    event = self.events.recv() => event,
                    outcome = run => {
                        self.run = None;
                        self.outcome = Some(outcome);
                        continue;
                    }
                },
                // Finished: what it sent before ending, then its outcome.
                None => self.events.recv().await,
            };
            if let Some(event) = event {
                let item = serde_json::to_vec(&event)
                    .map(|body| arrow_flight::Result { body: body.into() })
                    .map_err(|e| Status::internal(e.to_string()));
                return Some((item, self));
            }
            if let Some(run) = self.run.as_mut() {
                // Every sender is gone but the run goes on: only its outcome is left.
                self.outcome = Some(run.await);
                self.run = None;
            }
            return match self.outcome.take()? {
                Ok(()) => None,
                Err(e) => Some((Err(e.to_status()), self)),
            };
        }
    }
}

fn prepared_handle(bytes: &[u8]) -> Result<String, Status> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| Status::invalid_argument("malformed prepared statement handle"))
}

fn unknown_prepared(handle: &str) -> Status {
    Status::not_found(format!(
        "prepared statement {handle} is not open (closed, or forgotten after the coordinator restarted); prepare it again"
    ))
}

fn read_only_refusal() -> Status {
    Status::permission_denied(
        "shoal's Flight SQL endpoint is read-only: updates, inserts and DDL are refused",
    )
}
