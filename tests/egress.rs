//! What leaves a site: the attack suite against the sites' egress policies, on an embedded
//! cluster of three sites holding the patients' `visits` table (one process; the process
//! cluster runs the same attacks in `engine/tests/egress_processes.rs`).
//!
//! Each attack is refused by the site with the rule it breaks named in the message and a
//! line in the site's audit log; allowed work stays exact against single-node DataFusion.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use shoal_engine::worker::audit;
use shoal_engine::{CoordinatorOptions, EmbeddedCluster, SitePolicy};
use shoal_operators::ModelProvider;
use shoal_operators::model::DirectoryModels;
use shoal_tests::{assert_same_rows, models_dir, repo_root, to_rows, visits_sites};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const VISITS_AGGREGATES: &str = include_str!("data/visits-aggregates-policy.toml");

/// The test models and the identity "model" (copies its first input out).
fn models_with_identity() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for model in ["price.onnx", "return_risk.onnx"] {
        std::fs::copy(models_dir().join(model), dir.path().join(model)).unwrap();
    }
    std::fs::copy(
        repo_root().join("tests/data/policy_models/identity.onnx"),
        dir.path().join("identity.onnx"),
    )
    .unwrap();
    dir
}

async fn start(policy: &str, models: &Path) -> EmbeddedCluster {
    let options = CoordinatorOptions {
        models_dir: Some(models.to_path_buf()),
        ..Default::default()
    };
    let policy = SitePolicy::parse(policy, "test policy").unwrap();
    EmbeddedCluster::start_with_policy(options, &visits_sites(), policy)
        .await
        .expect("start the cluster")
}

async fn local(models: &Path) -> datafusion::prelude::SessionContext {
    let registry: Arc<dyn ModelProvider> = Arc::new(DirectoryModels::load(models).unwrap());
    let sites: Vec<PathBuf> = visits_sites();
    let dirs: Vec<&Path> = sites.iter().map(PathBuf::as_path).collect();
    shoal_sql::local_context(&dirs, registry).await.unwrap()
}

/// Runs `sql`, which must be refused: PERMISSION_DENIED, naming a site, the table, the
/// policy key and `detail`; and the refusal is in that site's audit log.
async fn assert_refused(cluster: &EmbeddedCluster, sql: &str, key: &str, detail: &str) {
    let logs: Vec<PathBuf> = visits_sites()
        .iter()
        .map(|s| audit::default_dir(s))
        .collect();
    assert_refused_logged(cluster, sql, key, detail, &logs).await;
}

/// [`assert_refused`] for sites whose audit logs are in `state/site-N`.
async fn assert_refused_logged_in(
    cluster: &EmbeddedCluster,
    sql: &str,
    key: &str,
    detail: &str,
    state: &Path,
) {
    let logs: Vec<PathBuf> = (1..=3).map(|i| state.join(format!("site-{i}"))).collect();
    assert_refused_logged(cluster, sql, key, detail, &logs).await;
}

async fn assert_refused_logged(
    cluster: &EmbeddedCluster,
    sql: &str,
    key: &str,
    detail: &str,
    logs: &[PathBuf],
) {
    let err = match cluster.sql(sql).await {
        Ok(out) => panic!("{sql}: not refused, returned {:?}", to_rows(&out.batches)),
        Err(e) => e,
    };
    let status = err.to_status();
    let message = status.message().to_string();
    assert_eq!(
        status.code(),
        tonic::Code::PermissionDenied,
        "{sql}: {message}"
    );
    assert!(
        message.starts_with("site '")
            && message.contains("refuses: table 'visits'")
            && message.contains(&format!("(policy {key})"))
            && message.contains(detail),
        "{sql}: expected policy {key} and '{detail}' in: {message}"
    );
    let logged = logs.iter().any(|dir| {
        audit::read_all(dir).unwrap_or_default().iter().any(|r| {
            r.decision == "refused"
                && r.rule == key
                && r.reason.as_deref() == Some(message.as_str())
        })
    });
    assert!(logged, "{sql}: the refusal is in no site's audit log");
}

/// The largest cost of any visit: a filter at it isolates one patient.
async fn most_expensive_visit(local: &datafusion::prelude::SessionContext) -> String {
    let top = local
        .sql("SELECT max(cost) FROM visits")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    to_rows(&top)[0][0].clone()
}

async fn assert_exact(
    cluster: &EmbeddedCluster,
    local: &datafusion::prelude::SessionContext,
    sql: &str,
) {
    let got = cluster
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let want = local.sql(sql).await.unwrap().collect().await.unwrap();
    assert_same_rows(sql, &to_rows(&want), &to_rows(&got.batches));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_aggregates_only_table_lets_out_large_groups_of_plain_statistics_and_nothing_else() {
    let models = models_with_identity();
    let cluster = start(VISITS_AGGREGATES, models.path()).await;
    let local = local(models.path()).await;
    // A filter at the most expensive visit isolates one patient.
    let top = most_expensive_visit(&local).await;
    let attacks: Vec<(String, &str, &str)> = vec![
        // Raw rows, with or without a limit.
        ("SELECT * FROM visits".into(), "never_leave", "prior_visits"),
        ("SELECT age, bmi FROM visits LIMIT 5".into(), "egress", "rows would leave"),
        ("SELECT 1 FROM visits".into(), "egress", "rows would leave"),
        // One patient, then a count: a group of one; GROUP BY a near-unique key.
        (format!("SELECT count(*) FROM visits WHERE cost >= {top}"), "min_group_rows", "fewer"),
        ("SELECT cost, count(*) FROM visits GROUP BY cost".into(), "min_group_rows", "fewer"),
        ("SELECT count(DISTINCT age) FROM visits".into(), "min_group_rows", "fewer"),
        // A never_leave column in a group key, an expression, a projection.
        (
            "SELECT prior_visits, count(*) FROM visits GROUP BY prior_visits".into(),
            "never_leave",
            "GROUP BY",
        ),
        ("SELECT avg(prior_visits * 2) FROM visits".into(), "never_leave", "inside avg()"),
        (
            "SELECT prior_visits + 1 AS p FROM visits".into(),
            "never_leave",
            "column 'prior_visits'",
        ),
        // A self-join: rows of visits would be shuffled between sites.
        (
            "SELECT count(*) FROM visits a JOIN visits b ON a.age = b.age".into(),
            "egress",
            "rows would leave",
        ),
        // One patient counted many times: a cross product with a list (DataFusion plans it
        // after the rows leave: refused for that), a union with itself, an unnest.
        (
            format!(
                "SELECT count(*) FROM visits CROSS JOIN (VALUES (1),(2),(3),(4),(5),(6),(7),(8),(9),(10),(11)) t(k) \
                 WHERE cost >= {top}"
            ),
            "egress",
            "rows would leave",
        ),
        (
            format!(
                "SELECT count(*) FROM (SELECT age FROM visits WHERE cost >= {top} UNION ALL \
                 SELECT age FROM visits WHERE cost >= {top}) u"
            ),
            "min_group_rows",
            "",
        ),
        (
            format!(
                "SELECT count(*) FROM (SELECT unnest(make_array(1,2,3,4,5,6,7,8,9,10,11)) AS k FROM visits \
                 WHERE cost >= {top}) u"
            ),
            "min_group_rows",
            "join",
        ),
        // Predictions row by row.
        (
            "SELECT predict('return_risk', age, bmi, systolic_bp, glucose) AS p FROM visits WHERE age > 50"
                .into(),
            "egress",
            "rows would leave",
        ),
    ];
    for (sql, key, detail) in &attacks {
        assert_refused(&cluster, sql, key, detail).await;
    }
    // Functions that return a row's value.
    for function in [
        "max(age)",
        "min(cost)",
        "array_agg(age)",
        "string_agg(CAST(age AS VARCHAR), ',')",
        "median(age)",
        "first_value(age)",
    ] {
        let name = function.split('(').next().unwrap();
        assert_refused(
            &cluster,
            &format!("SELECT {function} FROM visits"),
            "egress",
            &format!("{name}() returns a row's value"),
        )
        .await;
    }
    // Training on a handful of rows: each site's training state would come from fewer
    // rows than the policy's min_group_rows, whatever min_site_rows the statement asks.
    let few = cluster
        .sql(&format!(
            "CREATE MODEL tiny OPTIONS (min_site_rows = 1) AS TRAIN linear \
             PREDICTING cost FROM (SELECT age, bmi, systolic_bp, glucose, cost FROM visits \
             WHERE cost >= {top})"
        ))
        .await;
    let message = few
        .expect_err("a model trained on one patient")
        .to_status()
        .message()
        .to_string();
    assert!(message.contains("(policy min_group_rows)"), "{message}");

    // Allowed work is exact.
    assert_exact(
        &cluster,
        &local,
        "SELECT count(*) AS n, avg(age) AS age, sum(cost) AS cost, stddev(bmi) AS bmi FROM visits",
    )
    .await;
    assert_exact(
        &cluster,
        &local,
        "SELECT readmitted, count(*) AS n, avg(predict_proba('return_risk', age, bmi, systolic_bp, glucose)) AS risk \
         FROM visits GROUP BY readmitted ORDER BY readmitted",
    )
    .await;
    assert_exact(
        &cluster,
        &local,
        "SELECT corr(age, cost) AS c, regr_slope(cost, age) AS s FROM visits WHERE age > 40",
    )
    .await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn small_groups_are_suppressed_and_counted_when_the_site_says_so() {
    let models = models_with_identity();
    let policy = "[tables.visits]\nmin_group_rows = 50\nsmall_groups = \"suppress\"\n";
    let cluster = start(policy, models.path()).await;
    let local = local(models.path()).await;
    // Buckets of cost: the common ones are large, those in the tails small.
    let sql = "SELECT CAST(cost / 200 AS BIGINT) AS bucket, count(*) AS n FROM visits GROUP BY 1 ORDER BY 1";
    let out = cluster.sql(sql).await.unwrap();
    let want = local.sql(sql).await.unwrap().collect().await.unwrap();
    let got = to_rows(&out.batches);
    let want = to_rows(&want);
    assert!(
        got.len() < want.len(),
        "some groups suppressed: {got:?} vs {want:?}"
    );
    assert!(out.report.groups_suppressed > 0, "{:?}", out.report);
    // What is released is exact: every group a site kept has its true count from that
    // site, so every released group's total is at most the true one and at least 50.
    for row in &got {
        let n: u64 = row[1].parse().unwrap();
        let truth: u64 = want.iter().find(|w| w[0] == row[0]).unwrap()[1]
            .parse()
            .unwrap();
        assert!(n >= 50 && n <= truth, "{row:?} vs {truth}");
    }
    assert!(
        out.report.summary().contains("suppressed"),
        "{}",
        out.report.summary()
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_predictions_table_releases_model_outputs_and_row_keys_of_allowed_models_only() {
    let models = models_with_identity();
    let allow_listed = "[tables.visits]\negress = \"predictions\"\nrow_keys = [\"age\"]\nmodels = [\"return_risk\"]\n";
    let cluster = start(allow_listed, models.path()).await;
    let out = cluster
        .sql("SELECT age, predict('return_risk', age, bmi, systolic_bp, glucose) AS p FROM visits WHERE age > 85")
        .await
        .expect("predictions with their row key");
    assert!(!out.batches.is_empty());
    // With a LIMIT, DataFusion scores on the coordinator after the limit: the raw features
    // would travel there, and the site refuses.
    assert_refused(
        &cluster,
        "SELECT age, predict('return_risk', age, bmi, systolic_bp, glucose) AS p FROM visits LIMIT 5",
        "egress",
        "is a raw feature",
    )
    .await;
    assert_refused(
        &cluster,
        "SELECT bmi, predict('return_risk', age, bmi, systolic_bp, glucose) AS p FROM visits",
        "egress",
        "column 'bmi' is a raw feature",
    )
    .await;
    // The identity model copies glucose out as its "prediction": the allow-list stops it.
    let identity = "SELECT predict('identity', glucose, age, bmi, systolic_bp) AS p FROM visits WHERE age > 85";
    assert_refused(
        &cluster,
        identity,
        "models",
        "model 'identity' is not in its allow-list",
    )
    .await;
    cluster.stop().await;

    // The same allow-list by content hash: it trusts nobody's naming, and EXPLAIN's preview
    // resolves the statement's model to its bytes as the sites will.
    let bytes = std::fs::read(models.path().join("return_risk.onnx")).unwrap();
    let hash = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&bytes))
    };
    let by_hash = format!(
        "[tables.visits]\negress = \"predictions\"\nrow_keys = [\"age\"]\nmodels = [\"sha256:{hash}\"]\n"
    );
    let cluster = start(&by_hash, models.path()).await;
    let allowed = "SELECT age, predict('return_risk', age, bmi, systolic_bp, glucose) AS p FROM visits WHERE age > 85";
    cluster.sql(allowed).await.expect("the listed bytes run");
    let explain = cluster.sql(&format!("EXPLAIN {allowed}")).await.unwrap();
    let text = to_rows(&explain.batches).concat().join("\n");
    assert!(
        text.contains("stage 1 on 'site-1': allowed (visits: predictions"),
        "{text}"
    );
    assert_refused(&cluster, identity, "models", "not in its allow-list").await;
    cluster.stop().await;

    // Without the allow-list, the same "model" leaks the raw column: why sites list models.
    let open_models = "[tables.visits]\negress = \"predictions\"\nrow_keys = [\"age\"]\n";
    let cluster = start(open_models, models.path()).await;
    let leaked = cluster
        .sql(identity)
        .await
        .expect("no allow-list: the identity model runs");
    let local = local(models.path()).await;
    let glucose = local
        .sql("SELECT CAST(glucose AS FLOAT) AS p FROM visits WHERE age > 85")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let values = |batches: &[datafusion::arrow::array::RecordBatch]| {
        let mut v: Vec<f64> = to_rows(batches)
            .into_iter()
            .map(|row| row[0].parse::<f64>().unwrap())
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let (leaked, glucose) = (values(&leaked.batches), values(&glucose));
    assert_eq!(leaked.len(), glucose.len(), "one value per patient");
    assert!(
        leaked
            .iter()
            .zip(&glucose)
            .all(|(a, b)| (a - b).abs() < 1e-3),
        "the raw glucose values came out"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_without_a_policy_keeps_rows_in_and_audits_what_ran() {
    let models = models_with_identity();
    let options = CoordinatorOptions {
        models_dir: Some(models.path().to_path_buf()),
        ..Default::default()
    };
    let audit_dir = tempfile::tempdir().unwrap();
    let mut cluster = EmbeddedCluster::start(options, &[]).await.unwrap();
    let dir = audit_dir.path().to_path_buf();
    cluster
        .add_worker_with("site-1".into(), visits_sites()[0].clone(), move |w| {
            w.audit_dir = Some(dir);
        })
        .await
        .unwrap();
    let err = cluster
        .sql("SELECT age FROM visits LIMIT 1")
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("is aggregates-only (policy egress)"),
        "{err}"
    );
    let out = cluster
        .sql("SELECT count(*) AS n FROM visits")
        .await
        .unwrap();
    assert_eq!(to_rows(&out.batches), vec![vec!["20000".to_string()]]);
    cluster.stop().await;
    let records = audit::read_all(audit_dir.path()).unwrap();
    let refused = records
        .iter()
        .find(|r| r.decision == "refused")
        .expect("the refusal");
    assert_eq!(refused.rule, "egress");
    assert_eq!(refused.site, "site-1");
    assert!(
        !refused.statement.is_empty() && refused.digest.len() == 64,
        "{refused:?}"
    );
    // The site may run a statement as several tasks (one per file here): one line each.
    let ran: Vec<&audit::AuditRecord> = records.iter().filter(|r| r.decision == "ran").collect();
    assert!(!ran.is_empty(), "{records:?}");
    assert!(
        ran.iter().all(|r| r.statement == ran[0].statement),
        "{ran:?}"
    );
    assert_eq!(
        ran.iter().map(|r| r.rows_scanned).sum::<u64>(),
        20_000,
        "{ran:?}"
    );
    for line in &ran {
        assert!(
            line.bytes_sent > 0 && line.rule.contains("visits: aggregates"),
            "{line:?}"
        );
        // Read by the coordinator, as the site's gate recorded who asked.
        assert_eq!(
            line.sent_to.get("coordinator"),
            Some(&line.bytes_sent),
            "{line:?}"
        );
        assert!(line.tables.contains_key("visits"), "{line:?}");
    }
    let summary = audit::summary(&records);
    assert!(
        // The refused statement's tasks: one refusal may end it before the other is sent.
        summary.contains(": 2 ran,") && summary.contains("20000 rows scanned"),
        "{summary}"
    );
}

/// A cluster whose sites keep their audit log and privacy budget in `state` (a fresh
/// folder per test: the budget must not carry over between runs).
async fn start_with_state(policy: &str, models: &Path, state: &Path) -> EmbeddedCluster {
    let options = CoordinatorOptions {
        models_dir: Some(models.to_path_buf()),
        ..Default::default()
    };
    let policy = SitePolicy::parse(policy, "test policy").unwrap();
    let mut cluster = EmbeddedCluster::start_with_policy(options, &[], policy)
        .await
        .unwrap();
    for (i, site) in visits_sites().into_iter().enumerate() {
        let dir = state.join(format!("site-{}", i + 1));
        cluster
            .add_worker_with(format!("site-{}", i + 1), site, move |w| {
                w.audit_dir = Some(dir);
            })
            .await
            .unwrap();
    }
    cluster
}

fn number(batches: &[datafusion::arrow::array::RecordBatch], column: usize) -> f64 {
    to_rows(batches)[0][column].parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn noise_blurs_a_differencing_pair_and_the_budget_runs_out() {
    let models = models_with_identity();
    let state = tempfile::tempdir().unwrap();
    let policy = r#"
[tables.visits]
bounds = { age = [0, 120], cost = [0, 100000] }
noise = { epsilon_per_statement = 1.0, epsilon_budget = 3.0, budget_window = "1d" }
"#;
    let cluster = start_with_state(policy, models.path(), state.path()).await;
    let local = local(models.path()).await;

    // Functions without a noisy form, and sums without bounds, are refused before anything
    // is read or spent.
    assert_refused_logged_in(
        &cluster,
        "SELECT stddev(age) FROM visits",
        "noise",
        "stddev() has no noisy form",
        state.path(),
    )
    .await;
    assert_refused_logged_in(
        &cluster,
        "SELECT sum(bmi) FROM visits",
        "bounds",
        "needs clamping bounds for column 'bmi'",
        state.path(),
    )
    .await;
    assert_refused_logged_in(
        &cluster,
        "SELECT sum(age * 2) FROM visits",
        "noise",
        "not an expression",
        state.path(),
    )
    .await;
    let explain = cluster
        .sql("EXPLAIN SELECT count(*), avg(age) FROM visits")
        .await
        .unwrap();
    let text = to_rows(&explain.batches).concat().join("\n");
    assert!(
        text.contains("noise epsilon 1 per statement of 3 per 1day"),
        "{text}"
    );

    // A differencing pair: everyone, and everyone but the most expensive patient.
    let top = most_expensive_visit(&local).await;
    let all = "SELECT count(*) AS n, avg(age) AS a FROM visits";
    let but_one = format!("SELECT count(*) AS n, avg(age) AS a FROM visits WHERE cost < {top}");
    let truth = local.sql(all).await.unwrap().collect().await.unwrap();
    let (true_n, true_age) = (number(&truth, 0), number(&truth, 1));
    let first = cluster.sql(all).await.unwrap();
    let again = cluster.sql(all).await.unwrap();
    let minus = cluster.sql(&but_one).await.unwrap();
    let (n1, n2, n3) = (
        number(&first.batches, 0),
        number(&again.batches, 0),
        number(&minus.batches, 0),
    );
    // Noisy, fresh each time, yet useful: within a few hundred of 60,000 rows.
    assert_ne!(
        (n1, number(&first.batches, 1)),
        (n2, number(&again.batches, 1)),
        "fresh noise"
    );
    for n in [n1, n2, n3] {
        assert!((n - true_n).abs() < 400.0, "{n} vs {true_n}");
    }
    assert!((number(&first.batches, 1) - true_age).abs() < 2.0);
    // The difference does not give the one patient away: at this epsilon its noise (3
    // sites, two releases each, Laplace scale 3) dwarfs the 1 it hides, and two equal
    // statements differ by as much.
    assert!(
        n1 != true_n || n2 != true_n || n3 != true_n - 1.0,
        "without noise the pair would give the patient away: {n1} {n2} {n3}"
    );

    // 3 epsilon, 1 per statement per site: the fourth statement is refused, saying when
    // the budget resets, and every site wrote what it spent.
    let refused = cluster.sql(all).await;
    let refused = refused.expect_err("the budget is spent").to_status();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(
        refused.message().contains("(policy noise.epsilon_budget)")
            && refused.message().contains("resets at"),
        "{}",
        refused.message()
    );
    let records = audit::read_all(&state.path().join("site-1")).unwrap();
    let spent: f64 = records.iter().map(|r| r.epsilon_spent).sum();
    assert_eq!(spent, 3.0, "{records:?}");
    cluster.stop().await;

    // A restart does not reset it.
    let cluster = start_with_state(policy, models.path(), state.path()).await;
    let again = cluster
        .sql(all)
        .await
        .expect_err("still spent after a restart");
    assert!(
        again
            .to_status()
            .message()
            .contains("privacy budget is spent")
    );
    cluster.stop().await;
}
