//! Fault tolerance with real processes: workers killed (-9), stopped (SIGSTOP), busy past
//! the heartbeat timeout, a model failing on a batch, a memory limit far below the data.
//! Each test prints the time from the fault to the recovery or to the error.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod harness;

use harness::{CHECK_SQL, Cluster, ROWS, Spec, replicated, single_node_answer, sites};
use std::time::{Duration, Instant};

/// How long a scanned batch holds its thread in the tests that must catch a query mid-way.
const SLOW_BATCH_MS: u64 = 1500;

fn plain(sites: &[std::path::PathBuf]) -> Vec<(String, std::path::PathBuf)> {
    sites
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("w{}", i + 1), s.clone()))
        .collect()
}

fn named(workers: &[(String, std::path::PathBuf)]) -> Vec<(&str, std::path::PathBuf)> {
    workers
        .iter()
        .map(|(n, d)| (n.as_str(), d.clone()))
        .collect()
}

#[test]
fn a_worker_killed_mid_query_is_replaced_by_the_replicas_of_its_files() {
    let tmp = tempfile::tempdir().unwrap();
    let sites = sites(tmp.path());
    let expected = single_node_answer(&sites);
    assert!(
        expected.starts_with(&format!("n,k,l\n{ROWS},")),
        "{expected}"
    );
    let workers = replicated(tmp.path(), &sites);
    let spec = Spec {
        block_scan_ms: SLOW_BATCH_MS,
        ..Spec::default()
    };
    let mut cluster = Cluster::start(spec, &named(&workers), tmp.path());

    let started = Instant::now();
    let query = cluster.spawn_sql(CHECK_SQL);
    std::thread::sleep(Duration::from_millis(700));
    cluster.kill9("w2");
    let killed = Instant::now();
    let answer = harness::Answer::of(query, started);
    assert!(answer.ok, "{answer:?}; logs in {}", cluster.logs.display());
    assert_eq!(answer.stdout, expected);
    assert!(
        answer
            .stderr
            .contains("re-run 1 time(s) after losing worker(s) 'w2'"),
        "{}",
        answer.stderr
    );
    eprintln!(
        "FIGURE kill -9 with replicas: answer {:.2} s after the kill (query {:.2} s)",
        (answer.finished - killed).as_secs_f64(),
        answer.elapsed.as_secs_f64()
    );
    // The next query plans without w2 from the start.
    let again = cluster.sql(CHECK_SQL);
    assert!(again.ok && again.stdout == expected, "{again:?}");
    assert!(!again.stderr.contains("re-run"), "{}", again.stderr);
}

#[test]
fn a_worker_killed_without_replicas_fails_the_query_naming_it_and_the_cluster_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let sites = sites(tmp.path());
    let expected = single_node_answer(&sites);
    let workers = plain(&sites);
    let spec = Spec {
        block_scan_ms: SLOW_BATCH_MS,
        ..Spec::default()
    };
    let timeout = Duration::from_secs_f64(spec.heartbeat_timeout_s);
    let mut cluster = Cluster::start(spec, &named(&workers), tmp.path());

    let started = Instant::now();
    let query = cluster.spawn_sql(CHECK_SQL);
    std::thread::sleep(Duration::from_millis(700));
    cluster.kill9("w2");
    let killed = Instant::now();
    let answer = harness::Answer::of(query, started);
    let to_error = answer.finished - killed;
    assert!(!answer.ok, "{answer:?}");
    assert!(
        answer.stderr.contains("'w2'") && answer.stderr.contains("part-3.parquet"),
        "the error names the worker and its files: {}",
        answer.stderr
    );
    assert!(to_error < timeout + Duration::from_secs(5), "{to_error:?}");
    eprintln!(
        "FIGURE kill -9 without replicas: error {:.2} s after the kill",
        to_error.as_secs_f64()
    );

    // The next query on the table fails at once, saying the same; others are answered.
    let next = cluster.sql(CHECK_SQL);
    assert!(
        !next.ok && next.stderr.contains("held only by worker 'w2'"),
        "{next:?}"
    );
    assert!(next.elapsed < Duration::from_secs(5), "{:?}", next.elapsed);
    let other = cluster.sql("SELECT 40 + 2 AS answer");
    assert!(other.ok && other.stdout == "answer\n42\n", "{other:?}");

    // w2 back: the whole answer again.
    let back = Instant::now();
    cluster.restart_worker("w2", sites[1].clone());
    let healed = cluster.sql(CHECK_SQL);
    assert!(healed.ok && healed.stdout == expected, "{healed:?}");
    eprintln!(
        "FIGURE worker restarted: answered again {:.2} s after the restart",
        (healed.finished - back).as_secs_f64()
    );
}

#[test]
fn every_worker_killed_fails_clearly_and_new_workers_restore_the_cluster() {
    let tmp = tempfile::tempdir().unwrap();
    let sites = sites(tmp.path());
    let expected = single_node_answer(&sites);
    let workers = replicated(tmp.path(), &sites);
    let spec = Spec {
        block_scan_ms: SLOW_BATCH_MS,
        ..Spec::default()
    };
    let mut cluster = Cluster::start(spec, &named(&workers), tmp.path());

    let started = Instant::now();
    let query = cluster.spawn_sql(CHECK_SQL);
    std::thread::sleep(Duration::from_millis(700));
    for (name, _) in &workers {
        cluster.kill9(name);
    }
    let killed = Instant::now();
    let answer = harness::Answer::of(query, started);
    assert!(!answer.ok, "{answer:?}");
    assert!(
        answer.stderr.contains("held only by worker") || answer.stderr.contains("lost"),
        "{}",
        answer.stderr
    );
    eprintln!(
        "FIGURE every worker killed: error {:.2} s after the kills",
        (answer.finished - killed).as_secs_f64()
    );

    let joined = Instant::now();
    for (name, data) in &workers {
        cluster.start_worker(&format!("new-{name}"), data.clone());
    }
    cluster.wait_live(3, Duration::from_secs(60));
    let healed = cluster.sql(CHECK_SQL);
    assert!(healed.ok && healed.stdout == expected, "{healed:?}");
    eprintln!(
        "FIGURE new workers: answered {:.2} s after they were started",
        (healed.finished - joined).as_secs_f64()
    );
}

#[test]
fn workers_busy_past_the_heartbeat_timeout_are_not_declared_dead() {
    let tmp = tempfile::tempdir().unwrap();
    let sites = sites(tmp.path());
    let expected = single_node_answer(&sites);
    // Every batch holds a runtime thread for 2.5 heartbeat timeouts, on every thread.
    let spec = Spec {
        heartbeat_timeout_s: 1.0,
        heartbeat_interval_s: 0.2,
        block_scan_ms: 2500,
        ..Spec::default()
    };
    let cluster = Cluster::start(spec, &named(&plain(&sites)), tmp.path());
    let answer = cluster.sql(CHECK_SQL);
    assert!(answer.ok, "{answer:?}; logs in {}", cluster.logs.display());
    assert_eq!(answer.stdout, expected);
    assert!(!answer.stderr.contains("re-run"), "{}", answer.stderr);
    assert!(cluster.sites().values().all(|live| *live));
    eprintln!(
        "FIGURE busy workers: query of {:.2} s with a 1 s heartbeat timeout, no worker lost",
        answer.elapsed.as_secs_f64()
    );
}

#[test]
fn a_model_failing_on_a_batch_fails_the_task_naming_it_and_the_worker_survives() {
    let tmp = tempfile::tempdir().unwrap();
    let sites = sites(tmp.path());
    let expected = single_node_answer(&sites);
    let spec = Spec {
        models: harness::repo_root().join("tests/data/fault_models"),
        ..Spec::default()
    };
    let mut cluster = Cluster::start(spec, &named(&plain(&sites)), tmp.path());
    let answer = cluster.sql(
        "SELECT sum(predict('odd_rows_fail', l_quantity, l_extendedprice, l_discount, l_tax)) \
         FROM lineitem",
    );
    assert!(!answer.ok, "{answer:?}");
    assert!(
        answer
            .stderr
            .contains("model 'odd_rows_fail' failed on a batch of")
            && answer.stderr.contains("row(s)"),
        "{}",
        answer.stderr
    );
    for name in ["w1", "w2", "w3"] {
        assert!(cluster.is_running(name), "{name} survived");
    }
    let next = cluster.sql(CHECK_SQL);
    assert!(next.ok && next.stdout == expected, "{next:?}");
    assert!(
        !next.stderr.contains("re-run"),
        "a model error is not retried: {}",
        next.stderr
    );
}

#[test]
fn a_memory_limit_far_below_the_data_spills_or_fails_clearly_without_killing_the_worker() {
    let tmp = tempfile::tempdir().unwrap();
    let sites = sites(tmp.path());
    let expected = single_node_answer(&sites);
    let spec = Spec {
        worker_args: vec!["--memory-limit".into(), "1MiB".into()],
        ..Spec::default()
    };
    let mut cluster = Cluster::start(spec, &named(&plain(&sites)), tmp.path());
    // Every row its own group, then a sort of the whole table: both need far more than 1 MiB.
    let answer = cluster.sql(
        "SELECT count(*) AS groups, sum(n) AS n FROM (SELECT l_orderkey, l_linenumber, count(*) AS n \
         FROM lineitem GROUP BY l_orderkey, l_linenumber ORDER BY l_orderkey, l_linenumber)",
    );
    if answer.ok {
        assert_eq!(answer.stdout, format!("groups,n\n{ROWS},{ROWS}\n"));
        eprintln!("FIGURE memory limit 1 MiB: the query spilled and answered right");
    } else {
        assert!(
            answer.stderr.to_lowercase().contains("resources exhausted"),
            "{}",
            answer.stderr
        );
        eprintln!(
            "FIGURE memory limit 1 MiB: resources-exhausted error in {:.2} s: {}",
            answer.elapsed.as_secs_f64(),
            answer.stderr.lines().next().unwrap_or_default()
        );
    }
    for name in ["w1", "w2", "w3"] {
        assert!(cluster.is_running(name), "{name} survived");
    }
    let next = cluster.sql(CHECK_SQL);
    assert!(next.ok && next.stdout == expected, "{next:?}");
}

#[test]
fn a_stopped_worker_is_replaced_and_its_late_results_are_discarded() {
    let tmp = tempfile::tempdir().unwrap();
    let sites = sites(tmp.path());
    let expected = single_node_answer(&sites);
    let workers = replicated(tmp.path(), &sites);
    let spec = Spec {
        heartbeat_timeout_s: 1.0,
        heartbeat_interval_s: 0.2,
        block_scan_ms: SLOW_BATCH_MS,
        ..Spec::default()
    };
    let cluster = Cluster::start(spec, &named(&workers), tmp.path());

    let started = Instant::now();
    let query = cluster.spawn_sql(CHECK_SQL);
    std::thread::sleep(Duration::from_millis(500));
    cluster.signal("w2", "STOP");
    let stopped = Instant::now();
    let answer = harness::Answer::of(query, started);
    let recovered = answer.finished - stopped;
    // Resumed only after the answer: whatever it was doing arrives too late to count.
    cluster.signal("w2", "CONT");
    assert!(answer.ok, "{answer:?}; logs in {}", cluster.logs.display());
    assert_eq!(answer.stdout, expected);
    assert!(
        answer.stderr.contains("after losing worker(s) 'w2'"),
        "{}",
        answer.stderr
    );
    eprintln!(
        "FIGURE SIGSTOP past the 1 s timeout: answer {:.2} s after the stop",
        recovered.as_secs_f64()
    );

    // Back in the cluster with its next heartbeat, and answers are still exact.
    cluster.wait_live(3, Duration::from_secs(30));
    let again = cluster.sql(CHECK_SQL);
    assert!(again.ok && again.stdout == expected, "{again:?}");
}

#[test]
fn a_worker_asked_to_stop_finishes_its_running_tasks_and_gets_no_new_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let sites = sites(tmp.path());
    let expected = single_node_answer(&sites);
    let workers = replicated(tmp.path(), &sites);
    let spec = Spec {
        block_scan_ms: SLOW_BATCH_MS,
        ..Spec::default()
    };
    let mut cluster = Cluster::start(spec, &named(&workers), tmp.path());

    let started = Instant::now();
    let query = cluster.spawn_sql(CHECK_SQL);
    std::thread::sleep(Duration::from_millis(500));
    cluster.signal("w2", "TERM");
    let asked = Instant::now();
    let answer = harness::Answer::of(query, started);
    assert!(answer.ok, "{answer:?}; logs in {}", cluster.logs.display());
    assert_eq!(answer.stdout, expected);
    assert!(
        !answer.stderr.contains("re-run"),
        "w2 drained, nothing re-ran: {}",
        answer.stderr
    );
    assert!(
        cluster.wait_exit("w2", Duration::from_secs(20)),
        "w2 exits once drained"
    );
    eprintln!(
        "FIGURE SIGTERM mid-query: the query finished {:.2} s later, w2 exited {:.2} s after the signal",
        (answer.finished - asked).as_secs_f64(),
        asked.elapsed().as_secs_f64()
    );
    // Planned without w2 from then on, and still exact.
    let next = cluster.sql(CHECK_SQL);
    assert!(next.ok && next.stdout == expected, "{next:?}");
    assert!(!next.stderr.contains("re-run"), "{}", next.stderr);
}

#[test]
fn a_statement_that_makes_no_progress_fails_with_a_no_progress_error() {
    let tmp = tempfile::tempdir().unwrap();
    let sites = sites(tmp.path());
    // Workers heartbeat but each batch holds for 20 s: nothing moves for longer than 2 s.
    let spec = Spec {
        block_scan_ms: 20_000,
        coordinator_args: vec!["--stall-timeout".into(), "2".into()],
        ..Spec::default()
    };
    let cluster = Cluster::start(spec, &named(&plain(&sites)), tmp.path());
    let answer = cluster.sql(CHECK_SQL);
    assert!(!answer.ok, "{answer:?}");
    assert!(
        answer.stderr.contains("made no progress"),
        "{}",
        answer.stderr
    );
    assert!(
        answer.elapsed < Duration::from_secs(12),
        "{:?}",
        answer.elapsed
    );
    eprintln!(
        "FIGURE stall: no-progress error after {:.2} s (--stall-timeout 2)",
        answer.elapsed.as_secs_f64()
    );
}
