//! Site identities, attacked as a thief of one site's secret would: each site holds its own
//! secret, so the thief can neither pose as another site at the coordinator nor send any site
//! but its own a plan (see `engine/src/security/identity.rs`). The same impersonation on
//! worker processes: `engine/tests/egress_processes.rs`.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use shoal_engine::client;
use shoal_engine::security::Connector;
use shoal_engine::{CoordinatorOptions, EmbeddedCluster};
use shoal_tests::{models_dir, to_rows, tpch_sites};

const TOKEN: &str = "test-token-0123456789abcdef";

/// A message with no fields: enough to reach a method through a site's gate (which
/// decides before the body is read), and to read any reply.
#[derive(Clone, PartialEq, prost::Message)]
struct Nothing {}

/// Calls `method` of a site's worker service presenting `token`, as a cluster member would.
async fn call_site(
    url: &str,
    token: Option<&str>,
    method: &'static str,
) -> Result<(), tonic::Status> {
    let channel = Connector::new(token, None)
        .unwrap()
        .connect_authorized(url)
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(method);
    grpc.unary::<Nothing, Nothing, _>(
        tonic::Request::new(Nothing {}),
        path,
        tonic_prost::ProstCodec::default(),
    )
    .await
    .map(|_| ())
}

/// Opens the coordinator channel (the call that sets a plan on a site) presenting `token`.
async fn send_plan(url: &str, token: Option<&str>) -> Result<(), tonic::Status> {
    call_site(url, token, "/worker.WorkerService/CoordinatorChannel").await
}

async fn worker_info(url: &str, token: Option<&str>) -> Result<(), tonic::Status> {
    call_site(url, token, "/worker.WorkerService/GetWorkerInfo").await
}

/// Site identities: each site holds its own secret. With site-1's secret stolen, an attacker
/// cannot register or heartbeat as site-2, cannot run statements, cannot send site-2 a
/// plan (neither with a credential it makes nor with the peer pass the coordinator issues
/// site-1), and cannot call site-2's actions; site-2 keeps serving its coordinator.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stolen_site_credential_speaks_for_its_own_site_only() {
    use shoal_engine::security::SiteSecret;
    let cluster = EmbeddedCluster::start_with_policy(
        CoordinatorOptions {
            tokens: vec![TOKEN.into()],
            models_dir: Some(models_dir()),
            ..Default::default()
        },
        &tpch_sites(),
        shoal_engine::demo_site_policy(),
    )
    .await
    .expect("start the embedded cluster");
    let secret = |site: &str| {
        SiteSecret::new(
            &cluster
                .coordinator
                .options()
                .secret_for_site(site)
                .unwrap()
                .expect("the embedded cluster gives each site a secret"),
        )
    };
    let stolen = secret("site-1");
    let site_2 = cluster.workers[1].url.clone();
    let as_site_1 = Connector::new(Some(&stolen.site_credential("site-1")), None).unwrap();
    let register_as_site_2 =
        r#"{"name":"site-2","url":"http://127.0.0.1:1","tables":[]}"#.to_string();

    // Impersonation: site-1's credential registering, heartbeating or leaving as site-2.
    for (action, body) in [
        ("shoal.register", register_as_site_2.clone()),
        (
            "shoal.heartbeat",
            r#"{"name":"site-2","model_runs":0,"rows_scanned":0,"active_scans":0}"#.into(),
        ),
        ("shoal.leave", r#"{"name":"site-2"}"#.into()),
        ("shoal.peers", r#"{"name":"site-2"}"#.into()),
    ] {
        let err = client::action(&as_site_1, &cluster.url, action, body.into_bytes())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("the credential is site 'site-1''s"),
            "{action}: {err}"
        );
    }
    // A credential for site-2 made with site-1's secret proves nothing.
    let forged = Connector::new(Some(&stolen.site_credential("site-2")), None).unwrap();
    let err = client::action(
        &forged,
        &cluster.url,
        "shoal.register",
        register_as_site_2.into_bytes(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("invalid or expired"), "{err}");
    assert_eq!(
        cluster
            .coordinator
            .catalog()
            .url_of("site-2")
            .unwrap()
            .as_str()
            .trim_end_matches('/'),
        site_2,
        "site-2 is where it was"
    );
    // A site's credential joins the cluster; it does not run statements.
    let mut as_client = client::flight_sql(
        &Connector::new(Some(&stolen.site_credential("site-1")), None).unwrap(),
        &cluster.url,
    )
    .await
    .unwrap();
    let err = as_client
        .execute("SELECT count(*) FROM lineitem".into(), None)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("statements need a client"),
        "{err}"
    );

    // A plan sent to site-2 with credentials site-1's secret can make.
    for token in [
        None,
        Some(stolen.coordinator_credential("site-2")),
        Some(stolen.coordinator_credential("site-1")),
        Some(stolen.peer_credential("site-1", "site-2")),
    ] {
        let refused = send_plan(&site_2, token.as_deref()).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused}");
        assert!(
            refused
                .message()
                .contains("accepts plans only from its coordinator"),
            "{refused}"
        );
    }
    // ... and with the genuine pass the coordinator issues site-1 for site-2: it fetches
    // task outputs, never sets a plan or calls an action.
    let passes: Vec<serde_json::Value> = serde_json::from_slice(
        &client::action(
            &as_site_1,
            &cluster.url,
            "shoal.peers",
            br#"{"name":"site-1"}"#.to_vec(),
        )
        .await
        .unwrap(),
    )
    .unwrap();
    let pass = passes
        .iter()
        .find(|p| p["site"] == "site-2")
        .expect("a pass for site-2")["token"]
        .as_str()
        .unwrap()
        .to_string();
    worker_info(&site_2, Some(&pass))
        .await
        .expect("a peer may ask a site's version");
    let refused = send_plan(&site_2, Some(&pass)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused}");
    assert!(
        refused
            .message()
            .contains("site 'site-1' may only fetch the outputs of tasks"),
        "{refused}"
    );
    let err = client::action(
        &Connector::new(Some(&pass), None).unwrap(),
        &site_2,
        "shoal.sink_status",
        b"{}".to_vec(),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("only from its coordinator"),
        "{err}"
    );
    // The pass opens site-2 only.
    let site_3 = cluster.workers[2].url.clone();
    assert!(worker_info(&site_3, Some(&pass)).await.is_err());

    // The coordinator's own credential for site-2 is accepted; and the cluster still
    // answers, shuffles between sites included.
    worker_info(
        &site_2,
        Some(&secret("site-2").coordinator_credential("site-2")),
    )
    .await
    .expect("the coordinator's credential");
    let rows = query(
        &cluster.url,
        TOKEN,
        "SELECT count(*) FROM (SELECT l_orderkey, count(*) FROM lineitem GROUP BY l_orderkey)",
    )
    .await;
    assert_eq!(rows, vec![vec!["15000"]]);
    cluster.stop().await;
}

/// `sql`'s rows, asked over Flight SQL with `token`.
async fn query(url: &str, token: &str, sql: &str) -> Vec<Vec<String>> {
    use futures::TryStreamExt;
    let mut client = client::flight_sql(&Connector::new(Some(token), None).unwrap(), url)
        .await
        .unwrap();
    let info = client.execute(sql.to_string(), None).await.unwrap();
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let stream = client.do_get(endpoint.ticket.unwrap()).await.unwrap();
        batches.extend(stream.try_collect::<Vec<_>>().await.unwrap());
    }
    to_rows(&batches)
}
