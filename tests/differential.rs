//! The cluster's answer equals single-node DataFusion's on the same files: TPC-H Q1 and Q6,
//! and aggregates over predict / predict_proba.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use datafusion::arrow::array::RecordBatch;
use futures::TryStreamExt;
use shoal_tests::{TPCH_Q1, TPCH_Q6, assert_same_rows, local_context, start_cluster, to_rows};

const FEATURES: &str = "l_quantity, l_extendedprice, l_discount, l_tax";

fn queries() -> Vec<(&'static str, String)> {
    vec![
        ("TPC-H Q1", TPCH_Q1.into()),
        ("TPC-H Q6", TPCH_Q6.into()),
        (
            "predict_proba average by return flag",
            format!(
                "SELECT l_returnflag, count(*), sum(predict('return_risk', {FEATURES})), \
                 avg(predict_proba('return_risk', {FEATURES})) \
                 FROM lineitem GROUP BY l_returnflag ORDER BY l_returnflag"
            ),
        ),
        (
            "regression aggregates with a filter",
            "SELECT l_shipmode, avg(predict('price', l_quantity, l_discount)), \
             max(predict('price', l_quantity, l_discount)), \
             min(predict('two_inputs', l_quantity, l_discount)) \
             FROM lineitem WHERE l_shipdate >= DATE '1995-01-01' \
             GROUP BY l_shipmode ORDER BY l_shipmode"
                .into(),
        ),
        (
            "grouped by a predicted label",
            format!(
                "SELECT predict('return_risk', {FEATURES}) AS label, count(*), \
                 avg(l_extendedprice), sum(predict('price', l_quantity, l_discount)) \
                 FROM lineitem GROUP BY 1 ORDER BY 1"
            ),
        ),
        (
            "row-level multi-class probabilities",
            "SELECT l_orderkey, l_linenumber, predict_proba('ship_mode', l_quantity, l_discount, l_tax) \
             FROM lineitem WHERE l_orderkey < 40 ORDER BY l_orderkey, l_linenumber"
                .into(),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_answers_equal_single_node_datafusion() {
    let local = local_context().await;
    let cluster = start_cluster().await;
    for (name, sql) in queries() {
        let expected: Vec<RecordBatch> = local
            .sql(&sql)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .execute_stream()
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .try_collect()
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let actual = cluster
            .sql(&sql)
            .await
            .unwrap_or_else(|e| panic!("{name} on the cluster: {e}"));
        assert!(
            actual.report.distributed,
            "{name} did not run on the workers"
        );
        let expected = to_rows(&expected);
        assert!(!expected.is_empty(), "{name} returned no rows");
        assert_same_rows(name, &expected, &to_rows(&actual.batches));
    }
    cluster.stop().await;
}
