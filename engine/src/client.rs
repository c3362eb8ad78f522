//! Client side of the coordinator's Flight endpoint: shoal's actions, and Flight SQL
//! statements for `shoal sql`.

use crate::error::{Error, Result};
use crate::protocol::{ACTION_QUERY_REPORT, QueryReportRequest, StatementAsks, StatementHandle};
use crate::security::Connector;
use arrow_flight::Action;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::client::FlightSqlServiceClient;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use futures::TryStreamExt;
use shoal_planner::QueryReport;
use std::time::Duration;

/// Bound on one shoal action (register, heartbeat, model fetch).
pub const ACTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs one shoal action; returns the concatenated reply bodies.
pub async fn action(
    connector: &Connector,
    url: &str,
    kind: &str,
    body: Vec<u8>,
) -> Result<Vec<u8>> {
    action_at_most(connector, url, kind, body, usize::MAX).await
}

/// [`action`], refusing a reply of more than `limit` bytes when it gets there (a site's
/// answer to the coordinator is bounded: a hostile site must not fill its memory).
pub async fn action_at_most(
    connector: &Connector,
    url: &str,
    kind: &str,
    body: Vec<u8>,
    limit: usize,
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let call = action_stream(connector, url, kind, body, |chunk| {
        if out.len().saturating_add(chunk.len()) > limit {
            return Err(Error::Refused {
                action: kind.to_string(),
                message: format!("the reply from {url} is over {limit} bytes"),
            });
        }
        out.extend_from_slice(chunk);
        Ok(())
    });
    match tokio::time::timeout(ACTION_TIMEOUT, call).await {
        Ok(Ok(())) => Ok(out),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Error::Refused {
            action: kind.to_string(),
            message: format!("no answer in {ACTION_TIMEOUT:?}"),
        }),
    }
}

/// Runs a shoal action whose reply is a stream of messages (a pipeline's events), calling
/// `each` with every message body as it arrives. Not bounded by [`ACTION_TIMEOUT`]: the
/// coordinator bounds the work (its query timeout).
pub async fn action_stream(
    connector: &Connector,
    url: &str,
    kind: &str,
    body: Vec<u8>,
    mut each: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let channel = connector.connect_authorized(url).await?;
    let mut client = FlightServiceClient::new(channel).max_decoding_message_size(64 << 20);
    let refused = |status: tonic::Status| Error::Refused {
        action: kind.to_string(),
        message: status.message().to_string(),
    };
    let mut stream = client
        .do_action(Action {
            r#type: kind.to_string(),
            body: body.into(),
        })
        .await
        .map_err(refused)?
        .into_inner();
    while let Some(item) = stream.message().await.map_err(refused)? {
        each(&item.body)?;
    }
    Ok(())
}

/// A Flight SQL client for `url` carrying the connector's token.
pub async fn flight_sql(
    connector: &Connector,
    url: &str,
) -> Result<FlightSqlServiceClient<tonic::transport::Channel>> {
    let mut client = FlightSqlServiceClient::new(connector.connect(url).await?);
    if let Some(token) = connector.token() {
        client.set_token(token);
    }
    Ok(client)
}

/// A statement's result as `shoal sql` receives it.
pub struct StatementResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub query_id: Option<String>,
}

/// Runs `sql` through Flight SQL, exactly as pyarrow or ADBC would.
pub async fn execute_sql(connector: &Connector, url: &str, sql: &str) -> Result<StatementResult> {
    execute_sql_as(connector, url, sql, &StatementAsks::default()).await
}

/// [`execute_sql`], asking what `asks` says in the request headers: answered from the
/// sites that are up (`shoal-partial`), the device and its fallback (`shoal-device`,
/// `shoal-device-fallback`).
pub async fn execute_sql_as(
    connector: &Connector,
    url: &str,
    sql: &str,
    asks: &StatementAsks,
) -> Result<StatementResult> {
    run_statement(connector, url, sql, asks)
        .await
        .map_err(server_message)
}

/// The coordinator's own words for a failed statement: its status message, rather than the
/// status wrapped in the Flight and Arrow errors that carried it.
fn server_message(error: Error) -> Error {
    let status = match &error {
        Error::Rpc(status) => Some(status.as_ref()),
        other => shoal_operators::status::chain(other).find_map(crate::error::grpc_status_of),
    };
    match status {
        Some(status) => Error::Server {
            code: status.code(),
            message: status.message().to_string(),
        },
        None => error,
    }
}

async fn run_statement(
    connector: &Connector,
    url: &str,
    sql: &str,
    asks: &StatementAsks,
) -> Result<StatementResult> {
    let mut client = flight_sql(connector, url).await?;
    if asks.partial {
        client.set_header(crate::coordinator::PARTIAL_HEADER, "true");
    }
    if !asks.device.is_empty() {
        client.set_header(crate::coordinator::DEVICE_HEADER, asks.device.clone());
    }
    if asks.device_fallback {
        client.set_header(crate::coordinator::DEVICE_FALLBACK_HEADER, "true");
    }
    let info = client.execute(sql.to_string(), None).await?;
    let schema = std::sync::Arc::new(info.clone().try_decode_schema()?);
    let mut batches = Vec::new();
    let mut query_id = None;
    for endpoint in info.endpoint {
        let Some(ticket) = endpoint.ticket else {
            continue;
        };
        query_id =
            query_id.or_else(|| StatementHandle::from_ticket(&ticket.ticket).map(|h| h.query_id));
        let stream = client.do_get(ticket).await?;
        batches.extend(stream.try_collect::<Vec<_>>().await?);
    }
    Ok(StatementResult {
        schema,
        batches,
        query_id,
    })
}

pub async fn query_report(connector: &Connector, url: &str, query_id: &str) -> Result<QueryReport> {
    let body = serde_json::to_vec(&QueryReportRequest {
        query_id: query_id.to_string(),
    })
    .map_err(|e| Error::Refused {
        action: ACTION_QUERY_REPORT.into(),
        message: e.to_string(),
    })?;
    let reply = action(connector, url, ACTION_QUERY_REPORT, body).await?;
    serde_json::from_slice(&reply).map_err(|e| Error::Refused {
        action: ACTION_QUERY_REPORT.into(),
        message: e.to_string(),
    })
}
