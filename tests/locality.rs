//! Each file is scanned only by the worker that holds it, and an aggregate moves under 1%
//! of the bytes it scans.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use shoal_tests::{start_cluster, tpch_sites};
use std::collections::BTreeSet;

fn files_in(site: &std::path::Path) -> BTreeSet<String> {
    std::fs::read_dir(site.join("lineitem"))
        .expect("site folder")
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(|n| format!("lineitem/{n}")))
        .filter(|n| n.ends_with(".parquet"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_scanned_only_by_their_holder_and_aggregates_move_little() {
    let cluster = start_cluster().await;
    let sql = "SELECT l_returnflag, count(*), \
               avg(predict_proba('return_risk', l_quantity, l_extendedprice, l_discount, l_tax)) \
               FROM lineitem GROUP BY l_returnflag";
    let out = cluster.sql(sql).await.expect("aggregate");
    assert_eq!(out.batches.iter().map(|b| b.num_rows()).sum::<usize>(), 3);

    let sites = tpch_sites();
    let mut scanned_anywhere = BTreeSet::new();
    for (worker, site) in cluster.workers.iter().zip(&sites) {
        let held = files_in(site);
        let scanned: BTreeSet<String> = worker.ledger.snapshot().into_keys().collect();
        assert!(
            !scanned.is_empty(),
            "worker {} scanned nothing",
            worker.name
        );
        assert!(
            scanned.is_subset(&held),
            "worker {} scanned {scanned:?} but holds {held:?}",
            worker.name
        );
        scanned_anywhere.extend(scanned);
    }
    let all: BTreeSet<String> = sites.iter().flat_map(|s| files_in(s)).collect();
    assert_eq!(scanned_anywhere, all, "every file is scanned by its holder");

    let report = &out.report;
    assert!(report.bytes_scanned > 0, "{report:?}");
    assert!(report.bytes_to_coordinator > 0, "{report:?}");
    assert!(
        report.moved_ratio() < 0.01,
        "moved {} of {} scanned bytes",
        report.bytes_to_coordinator,
        report.bytes_scanned
    );
    cluster.stop().await;
}

/// Sites holding different numbers of files (one file on one site, two on another) still
/// plan: every task gets the same partition count, and the answer is the single-node one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sites_with_different_file_counts_plan_and_answer_right() {
    let one_file = tempfile::tempdir().expect("tempdir");
    let table = one_file.path().join("lineitem");
    std::fs::create_dir_all(&table).expect("mkdir");
    let sites = tpch_sites();
    std::fs::copy(
        sites[0].join("lineitem/part-1.parquet"),
        table.join("part-1.parquet"),
    )
    .expect("copy");
    let options = shoal_engine::CoordinatorOptions {
        models_dir: Some(shoal_tests::models_dir()),
        ..Default::default()
    };
    let cluster_sites = vec![one_file.path().to_path_buf(), sites[1].clone()];
    let cluster = shoal_engine::EmbeddedCluster::start_with_policy(
        options,
        &cluster_sites,
        shoal_engine::demo_site_policy(),
    )
    .await
    .expect("cluster");
    let sql = "SELECT l_returnflag, count(*), sum(l_quantity) FROM lineitem \
               GROUP BY l_returnflag ORDER BY l_returnflag";
    let actual = cluster.sql(sql).await.expect("plans and runs");

    let dirs: Vec<&std::path::Path> = cluster_sites.iter().map(|p| p.as_path()).collect();
    let local = shoal_sql::local_context(&dirs, shoal_tests::registry())
        .await
        .expect("local");
    let expected = local.sql(sql).await.unwrap().collect().await.unwrap();
    shoal_tests::assert_same_rows(
        sql,
        &shoal_tests::to_rows(&expected),
        &shoal_tests::to_rows(&actual.batches),
    );
    cluster.stop().await;
}
