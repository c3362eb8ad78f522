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
