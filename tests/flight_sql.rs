//! The Flight SQL front door as a client sees it (arrow-flight's Flight SQL client over
//! real gRPC): statements, prepared statements, metadata calls, authentication, TLS,
//! refusals, limits and cancellation.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandGetDbSchemas, CommandGetTables, SqlInfo};
use arrow_flight::{
    Action, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, FlightInfo,
};
use datafusion::arrow::array::{Float64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use shoal_engine::client;
use shoal_engine::security::{Connector, ServerTls, client_tls};
use shoal_engine::{CoordinatorOptions, EmbeddedCluster};
use shoal_tests::{models_dir, repo_root, to_rows, tpch_sites};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

const TOKEN: &str = "test-token-0123456789abcdef";
const FEATURES: &str = "l_quantity, l_extendedprice, l_discount, l_tax";

fn options() -> CoordinatorOptions {
    CoordinatorOptions {
        models_dir: Some(models_dir()),
        ..Default::default()
    }
}

async fn cluster(options: CoordinatorOptions) -> EmbeddedCluster {
    EmbeddedCluster::start_with_policy(options, &tpch_sites(), shoal_engine::demo_site_policy())
        .await
        .expect("start the embedded cluster")
}

async fn sql_client(url: &str, token: Option<&str>) -> FlightSqlServiceClient<Channel> {
    client::flight_sql(&Connector::new(token, None).unwrap(), url)
        .await
        .expect("connect")
}

/// Every batch of every endpoint of `info`.
async fn fetch(
    client: &mut FlightSqlServiceClient<Channel>,
    info: FlightInfo,
) -> Result<Vec<RecordBatch>, arrow_flight::error::FlightError> {
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.expect("a ticket");
        let stream = client.do_get(ticket).await?;
        batches.extend(stream.try_collect::<Vec<_>>().await?);
    }
    Ok(batches)
}

async fn query(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
) -> Result<Vec<Vec<String>>, String> {
    let info = client
        .execute(sql.to_string(), None)
        .await
        .map_err(|e| e.to_string())?;
    let batches = fetch(client, info).await.map_err(|e| e.to_string())?;
    Ok(to_rows(&batches))
}

/// One row of prepared-statement parameters: `$1` a number, `$2` a string.
fn parameter_row(number: f64, text: &str) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("$1", DataType::Float64, true),
        Field::new("$2", DataType::Utf8, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Float64Array::from(vec![number])),
            Arc::new(StringArray::from(vec![text])),
        ],
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn statements_and_prepared_statements_with_parameters() {
    let cluster = cluster(options()).await;
    let mut client = sql_client(&cluster.url, None).await;

    let literal = format!(
        "SELECT count(*), sum(predict('return_risk', {FEATURES})) FROM lineitem \
         WHERE l_quantity < 20.5 AND l_returnflag = 'R'"
    );
    let expected = query(&mut client, &literal).await.unwrap();

    // Both placeholder styles: DB-API's `?` (what ADBC sends) and DataFusion's `$n`.
    for sql in [
        "SELECT count(*), sum(predict('return_risk', l_quantity, l_extendedprice, l_discount, l_tax)) \
         FROM lineitem WHERE l_quantity < ? AND l_returnflag = ?",
        "SELECT count(*), sum(predict('return_risk', l_quantity, l_extendedprice, l_discount, l_tax)) \
         FROM lineitem WHERE l_quantity < $1 AND l_returnflag = $2",
    ] {
        let mut prepared = client.prepare(sql.to_string(), None).await.unwrap();
        let parameters = prepared.parameter_schema().unwrap().clone();
        assert_eq!(parameters.fields().len(), 2, "{parameters:?}");
        assert_eq!(prepared.dataset_schema().unwrap().fields().len(), 2);
        let row = parameter_row(20.5, "R");
        prepared.set_parameters(row).unwrap();
        let info = prepared.execute().await.unwrap();
        let rows = to_rows(&fetch(&mut client, info).await.unwrap());
        assert_eq!(rows, expected, "{sql}");

        // Re-bound and re-run: the new values apply.
        let other = parameter_row(51.0, "N");
        prepared.set_parameters(other).unwrap();
        let info = prepared.execute().await.unwrap();
        let rows = to_rows(&fetch(&mut client, info).await.unwrap());
        let all_n = query(
            &mut client,
            &format!(
                "SELECT count(*), sum(predict('return_risk', {FEATURES})) FROM lineitem \
                 WHERE l_quantity < 51 AND l_returnflag = 'N'"
            ),
        )
        .await
        .unwrap();
        assert_eq!(rows, all_n);
        prepared.close().await.unwrap();
    }

    let err = query(
        &mut client,
        "SELECT predict('nope', l_quantity) FROM lineitem",
    )
    .await
    .unwrap_err();
    assert!(err.contains("unknown model 'nope'"), "{err}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn catalog_calls_describe_tables_models_and_the_server() {
    let cluster = cluster(options()).await;
    let mut client = sql_client(&cluster.url, None).await;

    let info = client.get_catalogs().await.unwrap();
    let catalogs = to_rows(&fetch(&mut client, info).await.unwrap());
    assert!(
        catalogs.contains(&vec!["shoal_cluster".to_string()]),
        "{catalogs:?}"
    );

    let info = client
        .get_db_schemas(CommandGetDbSchemas {
            catalog: Some("shoal_cluster".into()),
            db_schema_filter_pattern: None,
        })
        .await
        .unwrap();
    let schemas = to_rows(&fetch(&mut client, info).await.unwrap());
    for schema in ["public", "shoal"] {
        assert!(
            schemas.iter().any(|r| r[1] == schema),
            "{schema} missing from {schemas:?}"
        );
    }

    let info = client
        .get_tables(CommandGetTables {
            catalog: Some("shoal_cluster".into()),
            db_schema_filter_pattern: None,
            table_name_filter_pattern: Some("%".into()),
            table_types: vec![],
            include_schema: true,
        })
        .await
        .unwrap();
    let batches = fetch(&mut client, info).await.unwrap();
    let tables = to_rows(&batches);
    let lineitem = tables
        .iter()
        .find(|r| r[1] == "public" && r[2] == "lineitem")
        .unwrap_or_else(|| panic!("lineitem missing from {tables:?}"));
    assert_eq!(lineitem[3], "TABLE");
    assert!(tables.iter().any(|r| r[1] == "shoal" && r[2] == "models"));
    // The table's Arrow schema comes with it (IPC-encoded in column 5).
    let schema_column = batches[0]
        .column(4)
        .as_any()
        .downcast_ref::<datafusion::arrow::array::BinaryArray>()
        .expect("binary schema column");
    let row = tables.iter().position(|r| r[2] == "lineitem").unwrap();
    let schema = arrow_flight::IpcMessage(schema_column.value(row).to_vec().into());
    let schema = Schema::try_from(schema).expect("decodable schema");
    assert!(
        schema.field_with_name("l_extendedprice").is_ok(),
        "{schema:?}"
    );

    let info = client.get_table_types().await.unwrap();
    let types = to_rows(&fetch(&mut client, info).await.unwrap());
    assert_eq!(
        types,
        vec![vec!["TABLE".to_string()], vec!["VIEW".to_string()]]
    );

    let info = client
        .get_sql_info(vec![
            SqlInfo::FlightSqlServerName,
            SqlInfo::FlightSqlServerReadOnly,
        ])
        .await
        .unwrap();
    let info_rows = to_rows(&fetch(&mut client, info).await.unwrap());
    assert!(
        info_rows.iter().any(|r| r[1].contains("shoal")),
        "{info_rows:?}"
    );

    // Models are listed through Flight SQL too.
    let models = query(&mut client, "SHOW MODELS").await.unwrap();
    assert!(models.iter().any(|r| r[0] == "return_risk"), "{models:?}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_and_the_basic_handshake_are_required_when_configured() {
    let cluster = cluster(CoordinatorOptions {
        tokens: vec![TOKEN.into()],
        users: vec![
            ("ana".into(), "a-good-password".into()),
            ("nina".into(), "another-password".into()),
        ],
        grants: vec![("nina".into(), vec!["visits".into()])],
        ..options()
    })
    .await;
    let count = "SELECT count(*) FROM lineitem";

    let mut anonymous = sql_client(&cluster.url, None).await;
    let err = anonymous.execute(count.into(), None).await.unwrap_err();
    assert!(err.to_string().contains("requires authentication"), "{err}");

    let mut wrong = sql_client(&cluster.url, Some("not-the-token-at-all")).await;
    let err = wrong.execute(count.into(), None).await.unwrap_err();
    assert!(
        err.to_string().contains("invalid or expired bearer token"),
        "{err}"
    );

    let mut with_token = sql_client(&cluster.url, Some(TOKEN)).await;
    assert_eq!(
        query(&mut with_token, count).await.unwrap(),
        vec![vec!["60175"]]
    );

    let mut login = sql_client(&cluster.url, None).await;
    assert!(login.handshake("ana", "wrong").await.is_err());
    login.handshake("ana", "a-good-password").await.unwrap();
    assert!(login.token().is_some());
    assert_eq!(query(&mut login, count).await.unwrap(), vec![vec!["60175"]]);

    // A per-table grant narrows a user: nina may read `visits` only (absent here), so
    // `lineitem` is refused to her in every kind of statement, and not listed.
    let mut nina = sql_client(&cluster.url, None).await;
    nina.handshake("nina", "another-password").await.unwrap();
    for sql in [count, "EXPLAIN SELECT count(*) FROM lineitem"] {
        let err = nina
            .execute(sql.into(), None)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("permission")
                && err.contains("message: \"user:nina may not read table 'lineitem'"),
            "{sql}: {err}"
        );
    }
    let tables = query(
        &mut nina,
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'lineitem'",
    )
    .await
    .unwrap();
    assert_eq!(tables, vec![vec!["0"]]);
    // Nor can a pipeline read it for her: its statements are hers.
    let request = shoal_engine::protocol::PipelineRequest {
        file: "copy.toml".into(),
        text: "[source.items]\ntable = \"lineitem\"\n\n[sink.out]\ninput = \"items\"\n".into(),
        params: vec![],
        mode: shoal_engine::protocol::PipelineMode::Run,
        run_id: None,
        resume: false,
        partial: false,
    };
    let nina_token = nina.token().unwrap().clone();
    let err = client::action_stream(
        &Connector::new(Some(&nina_token), None).unwrap(),
        &cluster.url,
        shoal_engine::protocol::ACTION_PIPELINE,
        serde_json::to_vec(&request).unwrap(),
        |_| Ok(()),
    )
    .await
    .unwrap_err()
    .to_string();
    // The table is not even listed to her, as in information_schema above.
    assert!(err.contains("no table named 'lineitem'"), "{err}");

    // A client cannot register a site (only cluster members may).
    let err = client::action(
        &Connector::new(Some(TOKEN), None).unwrap(),
        &cluster.url,
        "shoal.register",
        br#"{"name":"fake","url":"http://127.0.0.1:1","tables":[]}"#.to_vec(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("its own credential"), "{err}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn remote_sql_cannot_read_files_or_change_state() {
    let cluster = cluster(options()).await;
    let mut client = sql_client(&cluster.url, None).await;
    for sql in [
        "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
        "COPY (SELECT 1) TO '/tmp/shoal-should-not-exist.csv'",
        "SET datafusion.execution.batch_size = 1",
        "INSERT INTO lineitem SELECT * FROM lineitem",
        "DROP TABLE lineitem",
        "SELECT * FROM '/etc/passwd'",
        "SELECT * FROM read_csv('/etc/passwd')",
    ] {
        let err = query(&mut client, sql).await.unwrap_err();
        assert!(
            [
                "not supported",
                "not found",
                "refused",
                "No table named",
                "Unsupported"
            ]
            .iter()
            .any(|m| err.contains(m)),
            "{sql}: {err}"
        );
    }
    assert!(!std::path::Path::new("/tmp/shoal-should-not-exist.csv").exists());
    // The cluster still answers.
    assert_eq!(
        query(&mut client, "SELECT count(*) FROM lineitem")
            .await
            .unwrap(),
        vec![vec!["60175"]]
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn query_timeout_and_result_limit_stop_statements() {
    let cluster = cluster(CoordinatorOptions {
        query_timeout: Duration::from_millis(1500),
        max_result_rows: 10_000,
        ..options()
    })
    .await;
    let mut client = sql_client(&cluster.url, None).await;

    let started = Instant::now();
    let err = query(
        &mut client,
        &format!("SELECT sum(predict('heavy_scorer', {FEATURES})) FROM lineitem"),
    )
    .await
    .unwrap_err();
    assert!(err.contains("query timeout"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );

    let err = query(&mut client, "SELECT l_orderkey FROM lineitem")
        .await
        .unwrap_err();
    assert!(err.contains("more than 10000 rows"), "{err}");
    assert_eq!(
        query(&mut client, "SELECT l_orderkey FROM lineitem LIMIT 10")
            .await
            .unwrap()
            .len(),
        10
    );
    cluster.stop().await;
}

/// Waits until model runs stop increasing: no scoring work is left anywhere.
async fn wait_for_idle_workers() -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = shoal_operators::model_runs();
    loop {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let now = shoal_operators::model_runs();
        if now == last {
            return now;
        }
        assert!(Instant::now() < deadline, "scoring work did not stop");
        last = now;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_and_disconnect_stop_the_work_on_workers() {
    let cluster = cluster(options()).await;
    let heavy = format!("SELECT sum(predict('heavy_scorer', {FEATURES})) FROM lineitem");
    // Model runs (one per batch) of the whole heavy query, measured by running it once.
    let before = shoal_operators::model_runs();
    let full = Instant::now();
    let mut client = sql_client(&cluster.url, None).await;
    query(&mut client, &heavy).await.unwrap();
    let full_runs = shoal_operators::model_runs() - before;
    let full_time = full.elapsed();
    assert!(full_runs >= 4, "{full_runs}");

    // 1. The client goes away mid-query: dropping its stream.
    let start = shoal_operators::model_runs();
    let info = client.execute(heavy.clone(), None).await.unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut stream = client.do_get(ticket).await.unwrap();
    let poll = tokio::time::timeout(full_time / 4, stream.next()).await;
    assert!(poll.is_err(), "the heavy query should still be running");
    let at_drop = shoal_operators::model_runs();
    assert!(at_drop > start, "work should have started");
    drop(stream);
    drop(client);
    let idle = wait_for_idle_workers().await;
    // Batches already handed to the inference pool finish (one per scan partition: 3 sites x
    // 2 files, each file two batches); the second batch of each file is never scored. Without
    // cancellation reaching the workers all of the query's runs happen.
    assert!(
        idle - start < full_runs,
        "after the disconnect the query still ran all {full_runs} model runs ({} at the disconnect)",
        at_drop - start
    );
    assert!(
        cluster
            .coordinator
            .running_queries(&shoal_engine::security::Principal::Open)
            .is_empty()
    );

    // 2. CancelFlightInfo on the running statement ends its stream with CANCELLED.
    let mut client = sql_client(&cluster.url, None).await;
    let start = shoal_operators::model_runs();
    let info = client.execute(heavy.clone(), None).await.unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut stream = client.do_get(ticket).await.unwrap();
    let reader =
        shoal_engine::tasks::spawn_owned(async move { stream.next().await.map(|r| r.map(|_| ())) });
    tokio::time::sleep(full_time / 4).await;
    let at_cancel = shoal_operators::model_runs();
    let request = CancelFlightInfoRequest::new(info);
    let mut replies = client
        .do_action(Action::new("CancelFlightInfo", request.encode_to_vec()))
        .await
        .unwrap();
    let reply = replies.next().await.unwrap().unwrap();
    let result = CancelFlightInfoResult::decode(reply.body).unwrap();
    assert_eq!(result.status(), CancelStatus::Cancelled);
    let outcome = reader.await.unwrap().expect("an end");
    let err = outcome.unwrap_err().to_string();
    assert!(err.contains("cancelled"), "{err}");
    let idle = wait_for_idle_workers().await;
    assert!(
        idle - start < full_runs,
        "after the cancel the query still ran all {full_runs} model runs ({} at the cancel)",
        at_cancel - start
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_results_stream_in_many_batches() {
    let cluster = cluster(options()).await;
    let mut client = sql_client(&cluster.url, None).await;
    let info = client
        .execute(
            format!("SELECT l_orderkey, predict('return_risk', {FEATURES}) AS risk FROM lineitem"),
            None,
        )
        .await
        .unwrap();
    let batches = fetch(&mut client, info).await.unwrap();
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(rows, 60175);
    assert!(batches.len() > 3, "{} batches", batches.len());
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_from_client_to_coordinator_and_between_cluster_members() {
    let tls = repo_root().join("tests/data/tls");
    let cluster = cluster(CoordinatorOptions {
        tls: Some(ServerTls {
            cert: tls.join("server.pem"),
            key: tls.join("server.key"),
        }),
        tls_ca: Some(tls.join("ca.pem")),
        ..options()
    })
    .await;
    assert!(cluster.url.starts_with("https://"));
    assert!(
        cluster
            .workers
            .iter()
            .all(|w| w.url.starts_with("https://"))
    );
    let url = cluster.url.replacen("https://", "grpc+tls://", 1);

    let trusted = Connector::new(None, Some(client_tls(&tls.join("ca.pem")).unwrap())).unwrap();
    let result = client::execute_sql(
        &trusted,
        &url,
        &format!("SELECT count(*), avg(predict_proba('return_risk', {FEATURES})) FROM lineitem"),
    )
    .await
    .unwrap();
    assert_eq!(to_rows(&result.batches)[0][0], "60175");

    let stranger =
        Connector::new(None, Some(client_tls(&tls.join("other-ca.pem")).unwrap())).unwrap();
    let err = client::execute_sql(&stranger, &url, "SELECT 1")
        .await
        .err()
        .unwrap();
    assert!(!err.to_string().is_empty());
    let plain = cluster.url.replacen("https://", "http://", 1);
    assert!(
        client::execute_sql(&Connector::default(), &plain, "SELECT 1")
            .await
            .is_err()
    );
    cluster.stop().await;
}

#[tokio::test]
async fn an_open_coordinator_refuses_non_loopback_addresses() {
    let coordinator = shoal_engine::Coordinator::new(options()).unwrap();
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let err = shoal_engine::coordinator::serve(coordinator, listener, async {})
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("without authentication") && err.contains("--insecure"),
        "{err}"
    );
}

/// The status a client gets for `sql`: from planning (GetFlightInfo) or from the stream.
async fn status_of(client: &mut FlightSqlServiceClient<Channel>, sql: &str) -> tonic::Status {
    let failure = match client.execute(sql.to_string(), None).await {
        Err(e) => e,
        Ok(info) => match fetch(client, info).await {
            Err(e) => e,
            Ok(_) => panic!("{sql}: expected an error"),
        },
    };
    match failure {
        arrow_flight::error::FlightError::Tonic(status) => *status,
        other => panic!("{sql}: not a gRPC status: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_mistakes_arrive_as_invalid_argument_or_not_found_never_internal() {
    let cluster = cluster(options()).await;
    let mut client = sql_client(&cluster.url, None).await;
    let cases = [
        (
            "SELECT predict('churn', l_quantity) FROM lineitem",
            tonic::Code::NotFound,
            "unknown model 'churn'",
        ),
        (
            "SELECT predict('../models/price', l_quantity, l_discount) FROM lineitem",
            tonic::Code::InvalidArgument,
            "model name '../models/price' is not allowed",
        ),
        (
            "SELECT predict('/etc/passwd', l_quantity) FROM lineitem",
            tonic::Code::InvalidArgument,
            "is not allowed",
        ),
        (
            "SELECT predict('return_risk', l_quantity, l_discount) FROM lineitem",
            tonic::Code::InvalidArgument,
            "expects 4 feature(s), got 2",
        ),
        (
            "SELECT predict('price', l_quantity, l_comment) FROM lineitem",
            tonic::Code::InvalidArgument,
            "features must be numeric",
        ),
        (
            "CREATE MODEL \"../escape\" AS TRAIN linear PREDICTING l_tax \
             FROM (SELECT l_quantity, l_tax FROM lineitem)",
            tonic::Code::InvalidArgument,
            "model name '../escape' is not allowed",
        ),
        (
            "CREATE MODEL m AS TRAIN linear FROM (SELECT l_quantity, l_tax FROM lineitem)",
            tonic::Code::InvalidArgument,
            "expected PREDICTING",
        ),
        (
            "SELECT nope FROM lineitem",
            tonic::Code::InvalidArgument,
            "nope",
        ),
    ];
    for (sql, code, needle) in cases {
        let status = status_of(&mut client, sql).await;
        assert_eq!(status.code(), code, "{sql}: {}", status.message());
        assert!(
            status.message().contains(needle),
            "{sql}: {}",
            status.message()
        );
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_model_over_a_workers_memory_limit_arrives_as_resource_exhausted() {
    let mut cluster = cluster_without_workers().await;
    // heavy_scorer.onnx is 274 KB; a loaded model holds its bytes (then 2x more per session).
    cluster
        .add_worker_with("site-1".into(), tpch_sites()[0].clone(), |worker| {
            worker.memory_limit = Some(256 << 10);
            worker.model_cache = Some(std::env::temp_dir().join("shoal-test-tiny-memory"));
        })
        .await
        .unwrap();
    let mut client = sql_client(&cluster.url, None).await;
    let sql = format!("SELECT sum(predict('heavy_scorer', {FEATURES})) FROM lineitem");
    let status = status_of(&mut client, &sql).await;
    assert_eq!(
        status.code(),
        tonic::Code::ResourceExhausted,
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("model 'heavy_scorer'")
            && status.message().contains("--memory-limit 262144 bytes"),
        "{}",
        status.message()
    );
    // The worker keeps serving what fits.
    assert_eq!(
        query(&mut client, "SELECT count(*) > 0 FROM lineitem")
            .await
            .unwrap(),
        vec![vec!["true"]]
    );
    cluster.stop().await;
}

/// A coordinator with no worker yet (tests add theirs with their own options).
async fn cluster_without_workers() -> EmbeddedCluster {
    EmbeddedCluster::start_with_policy(options(), &[], shoal_engine::demo_site_policy())
        .await
        .expect("start the coordinator")
}
