//! A cluster on separate network stacks (see harness/netns.rs): the coordinator, three
//! workers and the client each on a host of its own, TLS and authentication on, workers
//! bound to 0.0.0.0 and advertising their host's address. On it: TPC-H and predict answers
//! equal single-node ones; a degraded link changes no answer; a site whose link is cut
//! mid-statement is a lost worker (its files re-run on their replicas) and serves again
//! once the link is back. Lines starting FIGURE report the timings (with --no-capture).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod harness;

use harness::net_cluster::NetCluster;
use harness::{CHECK_SQL, Spec, replicated, single_node_csv, single_node_shoal_csv};
use std::time::{Duration, Instant};

const Q1_SQL: &str = "SELECT l_returnflag, l_linestatus, sum(l_quantity) AS sum_qty, \
     sum(l_extendedprice) AS sum_base, count(*) AS n FROM lineitem \
     WHERE l_shipdate <= DATE '1998-09-02' GROUP BY l_returnflag, l_linestatus \
     ORDER BY l_returnflag, l_linestatus";

/// A join whose sides are on every site: the build side is shuffled between workers.
const JOIN_SQL: &str = "SELECT count(*) AS n, sum(a.l_quantity) AS q FROM lineitem a \
     JOIN (SELECT l_orderkey, max(l_linenumber) AS last FROM lineitem GROUP BY l_orderkey) b \
     ON a.l_orderkey = b.l_orderkey AND a.l_linenumber = b.last";

const PREDICT_SQL: &str = "SELECT l_returnflag, count(*) AS n, \
     round(avg(predict_proba('return_risk', l_quantity, l_extendedprice, l_discount, l_tax)), 3) \
     AS risk FROM lineitem GROUP BY l_returnflag ORDER BY l_returnflag";

fn assert_answers(cluster: &NetCluster, sql: &str, expected: &str) -> harness::Answer {
    let answer = cluster.sql(sql);
    assert!(
        answer.ok,
        "{sql}: {answer:?}; logs in {}",
        cluster.logs.display()
    );
    assert_eq!(answer.stdout, expected, "{sql}");
    answer
}

#[test]
fn answers_on_separate_hosts_equal_single_node_also_over_a_degraded_link() {
    let dir = tempfile::tempdir().unwrap();
    let sites = harness::sites(dir.path());
    let workers: Vec<(&str, _)> = vec![
        ("w1", sites[0].clone()),
        ("w2", sites[1].clone()),
        ("w3", sites[2].clone()),
    ];
    let started = Instant::now();
    let cluster = NetCluster::start(Spec::default(), &workers, dir.path());
    eprintln!(
        "FIGURE namespace cluster (5 hosts, TLS) live in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let models = harness::repo_root().join("tests/data/models");
    let expected: Vec<(&str, String)> = [CHECK_SQL, Q1_SQL, JOIN_SQL]
        .into_iter()
        .map(|sql| (sql, single_node_csv(&sites, sql)))
        .chain([(
            PREDICT_SQL,
            single_node_shoal_csv(&sites, &models, PREDICT_SQL),
        )])
        .collect();
    for (sql, answer) in &expected {
        let got = assert_answers(&cluster, sql, answer);
        // Every site says what it sent, and to whom.
        for site in ["w1", "w2", "w3"] {
            assert!(
                got.stderr.contains(&format!("{site} sent ")),
                "{site} missing from the report: {}",
                got.stderr
            );
        }
        if *sql == JOIN_SQL {
            assert!(
                got.stderr.contains("between sites"),
                "the join's shuffle is counted: {}",
                got.stderr
            );
        }
        eprintln!(
            "FIGURE clean link: {:.2} s for {}: {}",
            got.elapsed.as_secs_f64(),
            &sql[..40],
            got.stderr.trim()
        );
    }

    let how = cluster.net.degrade("w2", 50, 2);
    for (sql, answer) in &expected {
        let got = assert_answers(&cluster, sql, answer);
        eprintln!(
            "FIGURE degraded link to w2 ({how:?}): {:.2} s for {}",
            got.elapsed.as_secs_f64(),
            &sql[..40]
        );
    }
}

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs the fault-injection feature (make test turns it on)"
)]
fn a_site_cut_off_mid_statement_is_a_lost_worker_and_serves_again_when_its_link_returns() {
    let dir = tempfile::tempdir().unwrap();
    let sites = harness::sites(dir.path());
    let expected = single_node_csv(&sites, CHECK_SQL);
    // Every site's files on two workers, scans slow enough to cut a link mid-statement.
    let layout = replicated(dir.path(), &sites);
    let workers: Vec<(&str, _)> = layout
        .iter()
        .map(|(n, d)| (n.as_str(), d.clone()))
        .collect();
    let spec = Spec {
        block_scan_ms: 1500,
        ..Spec::default()
    };
    let cluster = NetCluster::start(spec, &workers, dir.path());

    let started = Instant::now();
    let query = cluster.spawn_sql(CHECK_SQL);
    std::thread::sleep(Duration::from_millis(700));
    cluster.net.cut("w2");
    let cut_at = Instant::now();
    let answer = harness::Answer::of(query, started);
    assert!(answer.ok, "{answer:?}; logs in {}", cluster.logs.display());
    assert_eq!(answer.stdout, expected);
    assert!(
        answer.stderr.contains("after losing worker(s) 'w2'"),
        "{}",
        answer.stderr
    );
    eprintln!(
        "FIGURE link cut mid-statement: exact answer {:.2} s after the cut ({})",
        (answer.finished - cut_at).as_secs_f64(),
        answer.stderr.trim()
    );
    cluster.wait_site("w2", false, Duration::from_secs(30));

    cluster.net.restore("w2");
    let back = cluster.wait_site("w2", true, Duration::from_secs(60));
    eprintln!(
        "FIGURE w2 live again {:.2} s after its link returned",
        back.as_secs_f64()
    );
    let again = cluster.sql(CHECK_SQL);
    assert!(again.ok, "{again:?}");
    assert_eq!(again.stdout, expected);
}

/// On loopback (no namespaces needed): the coordinator dials what a worker advertises as it
/// registers, so a wrong address is named then, by the worker that gave it.
#[test]
fn a_worker_advertising_an_address_the_coordinator_cannot_dial_is_refused_at_registration() {
    let dir = tempfile::tempdir().unwrap();
    let sites = harness::sites(dir.path());
    let mut cluster = harness::Cluster::start(Spec::default(), &[], dir.path());
    // Port 9 (discard) has no listener here: the worker binds elsewhere.
    cluster.start_worker_with("w1", sites[0].clone(), &[], &["--advertise", "127.0.0.1:9"]);
    assert!(
        cluster.wait_exit("w1", Duration::from_secs(30)),
        "the worker stops: {}",
        cluster.log_tails()
    );
    let log = std::fs::read_to_string(dir.path().join("w1.log")).unwrap();
    assert!(
        log.contains("cannot reach site 'w1' at http://127.0.0.1:9") && log.contains("--advertise"),
        "{log}"
    );
    assert!(!cluster.sites().contains_key("w1"), "never registered");
}
