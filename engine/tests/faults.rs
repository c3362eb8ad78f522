//! Fault tolerance with real processes: workers killed (-9), stopped (SIGSTOP), asked to
//! stop (SIGTERM), busy past the heartbeat timeout, a model failing on a batch, a memory
//! limit far below the data, a statement making no progress. Each test prints the time from
//! the fault to the recovery or to the error (lines starting FIGURE, with --no-capture).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod harness;

use harness::{CHECK_SQL, Layout, ROWS, Spec, query_with_fault, scene};
use std::time::{Duration, Instant};

/// How long a scanned batch holds its thread in the tests that must catch a query mid-way.
const SLOW_BATCH_MS: u64 = 1500;

fn slow() -> Spec {
    Spec {
        block_scan_ms: SLOW_BATCH_MS,
        ..Spec::default()
    }
}

/// When the coordinator found the worker lost, from `shoal sql`'s report, in ms since the
/// statement started.
fn lost_at_ms(stderr: &str) -> u64 {
    let (_, rest) = stderr
        .split_once("found lost at ")
        .unwrap_or_else(|| panic!("no lost worker in the report: {stderr}"));
    rest.split(' ')
        .next()
        .unwrap()
        .trim_end_matches(',')
        .parse()
        .unwrap()
}

/// ms from the fault to the coordinator finding the worker lost (the client's start-up,
/// a few ms, is counted in the fault's offset, so this errs on the short side).
fn detection_ms(stderr: &str, fault_after: Duration) -> u64 {
    lost_at_ms(stderr).saturating_sub(fault_after.as_millis() as u64)
}

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs the fault-injection feature (make test turns it on)"
)]
fn a_worker_killed_mid_query_is_replaced_by_the_replicas_of_its_files() {
    let mut s = scene(Layout::Replicated, slow());
    let run = query_with_fault(&mut s.cluster, CHECK_SQL, Duration::from_millis(700), |c| {
        c.kill9("w2")
    });
    let answer = &run.answer;
    assert!(
        answer.ok,
        "{answer:?}; logs in {}",
        s.cluster.logs.display()
    );
    assert_eq!(answer.stdout, s.expected);
    assert!(
        answer
            .stderr
            .contains("re-run 1 time(s) after losing worker(s) 'w2'"),
        "{}",
        answer.stderr
    );
    eprintln!(
        "FIGURE kill -9 with replicas: found lost {} ms after the kill; answer {:.2} s after the kill (the re-run reads 1.5 s batches)",
        detection_ms(&answer.stderr, run.fault_after),
        (answer.finished - run.fault_at).as_secs_f64(),
    );
    // The next query plans without w2 from the start.
    let again = s.answers_exactly();
    assert!(!again.stderr.contains("re-run"), "{}", again.stderr);
}

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs the fault-injection feature (make test turns it on)"
)]
fn a_worker_killed_without_replicas_fails_the_query_naming_it_and_the_cluster_recovers() {
    let mut s = scene(Layout::Plain, slow());
    let timeout = Duration::from_secs_f64(s.cluster.spec.heartbeat_timeout_s);
    let run = query_with_fault(&mut s.cluster, CHECK_SQL, Duration::from_millis(700), |c| {
        c.kill9("w2")
    });
    let answer = &run.answer;
    let to_error = answer.finished - run.fault_at;
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
    let next = s.cluster.sql(CHECK_SQL);
    assert!(
        !next.ok && next.stderr.contains("held only by worker 'w2'"),
        "{next:?}"
    );
    assert!(next.elapsed < Duration::from_secs(5), "{:?}", next.elapsed);
    let other = s.cluster.sql("SELECT 40 + 2 AS answer");
    assert!(other.ok && other.stdout == "answer\n42\n", "{other:?}");

    // w2 back: the whole answer again.
    let back = Instant::now();
    s.cluster.restart_worker("w2", s.sites[1].clone());
    let healed = s.answers_exactly();
    eprintln!(
        "FIGURE worker restarted: answered again {:.2} s after the restart",
        (healed.finished - back).as_secs_f64()
    );
}

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs the fault-injection feature (make test turns it on)"
)]
fn every_worker_killed_fails_clearly_and_new_workers_restore_the_cluster() {
    let mut s = scene(Layout::Replicated, slow());
    let names: Vec<String> = s.workers.iter().map(|(n, _)| n.clone()).collect();
    let run = query_with_fault(&mut s.cluster, CHECK_SQL, Duration::from_millis(700), |c| {
        for name in &names {
            c.kill9(name);
        }
    });
    let answer = &run.answer;
    assert!(!answer.ok, "{answer:?}");
    assert!(
        answer.stderr.contains("held only by worker") || answer.stderr.contains("lost"),
        "{}",
        answer.stderr
    );
    eprintln!(
        "FIGURE every worker killed: error {:.2} s after the kills",
        (answer.finished - run.fault_at).as_secs_f64()
    );

    let joined = Instant::now();
    for (name, data) in &s.workers {
        s.cluster.start_worker(&format!("new-{name}"), data.clone());
    }
    s.cluster.wait_live(3, Duration::from_secs(60));
    let healed = s.answers_exactly();
    eprintln!(
        "FIGURE new workers: answered {:.2} s after they were started",
        (healed.finished - joined).as_secs_f64()
    );
}

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs the fault-injection feature (make test turns it on)"
)]
fn workers_busy_past_the_heartbeat_timeout_are_not_declared_dead() {
    // Every batch holds a runtime thread for 2.5 heartbeat timeouts, on every thread.
    let s = scene(
        Layout::Plain,
        Spec {
            heartbeat_timeout_s: 1.0,
            heartbeat_interval_s: 0.2,
            block_scan_ms: 2500,
            ..Spec::default()
        },
    );
    let answer = s.cluster.sql(CHECK_SQL);
    assert!(
        answer.ok,
        "{answer:?}; logs in {}",
        s.cluster.logs.display()
    );
    assert_eq!(answer.stdout, s.expected);
    assert!(!answer.stderr.contains("re-run"), "{}", answer.stderr);
    assert!(s.cluster.sites().values().all(|live| *live));
    eprintln!(
        "FIGURE busy workers: query of {:.2} s with a 1 s heartbeat timeout, no worker lost",
        answer.elapsed.as_secs_f64()
    );
}

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs the fault-injection feature (make test turns it on)"
)]
fn a_model_failing_on_a_batch_fails_the_task_naming_it_and_the_worker_survives() {
    let mut s = scene(
        Layout::Plain,
        Spec {
            models: harness::repo_root().join("tests/data/fault_models"),
            ..Spec::default()
        },
    );
    let answer = s.cluster.sql(
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
    s.assert_every_worker_serves();
}

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs the fault-injection feature (make test turns it on)"
)]
fn a_memory_limit_far_below_the_data_spills_or_fails_clearly_without_killing_the_worker() {
    let mut s = scene(
        Layout::Plain,
        Spec {
            worker_args: vec!["--memory-limit".into(), "1MiB".into()],
            ..Spec::default()
        },
    );
    // Every row its own group, then a sort of the whole table: both need far more than 1 MiB.
    let answer = s.cluster.sql(
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
    s.assert_every_worker_serves();
}

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs the fault-injection feature (make test turns it on)"
)]
fn a_stopped_worker_is_replaced_and_its_late_results_are_discarded() {
    let mut s = scene(
        Layout::Replicated,
        Spec {
            heartbeat_timeout_s: 1.0,
            heartbeat_interval_s: 0.2,
            ..slow()
        },
    );
    let run = query_with_fault(&mut s.cluster, CHECK_SQL, Duration::from_millis(500), |c| {
        c.signal("w2", "STOP")
    });
    // Resumed only after the answer: whatever it was doing arrives too late to count.
    s.cluster.signal("w2", "CONT");
    let answer = &run.answer;
    assert!(
        answer.ok,
        "{answer:?}; logs in {}",
        s.cluster.logs.display()
    );
    assert_eq!(answer.stdout, s.expected);
    assert!(
        answer.stderr.contains("after losing worker(s) 'w2'"),
        "{}",
        answer.stderr
    );
    eprintln!(
        "FIGURE SIGSTOP past the 1 s timeout: found lost {} ms after the stop; answer {:.2} s after the stop",
        detection_ms(&answer.stderr, run.fault_after),
        (answer.finished - run.fault_at).as_secs_f64()
    );

    // Back in the cluster with its next heartbeat, and answers are still exact.
    s.cluster.wait_live(3, Duration::from_secs(30));
    s.answers_exactly();
}

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs the fault-injection feature (make test turns it on)"
)]
fn a_worker_asked_to_stop_finishes_its_running_tasks_and_gets_no_new_ones() {
    let mut s = scene(Layout::Replicated, slow());
    let run = query_with_fault(&mut s.cluster, CHECK_SQL, Duration::from_millis(500), |c| {
        c.signal("w2", "TERM")
    });
    let answer = &run.answer;
    assert!(
        answer.ok,
        "{answer:?}; logs in {}",
        s.cluster.logs.display()
    );
    assert_eq!(answer.stdout, s.expected);
    assert!(
        !answer.stderr.contains("re-run"),
        "w2 drained, nothing re-ran: {}",
        answer.stderr
    );
    assert!(
        s.cluster.wait_exit("w2", Duration::from_secs(20)),
        "w2 exits once drained"
    );
    eprintln!(
        "FIGURE SIGTERM mid-query: the query finished {:.2} s later, w2 exited {:.2} s after the signal",
        (answer.finished - run.fault_at).as_secs_f64(),
        run.fault_at.elapsed().as_secs_f64()
    );
    // Planned without w2 from then on, and still exact.
    let next = s.answers_exactly();
    assert!(!next.stderr.contains("re-run"), "{}", next.stderr);
}

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs the fault-injection feature (make test turns it on)"
)]
fn a_statement_that_makes_no_progress_fails_with_a_no_progress_error() {
    // Workers heartbeat but each batch holds for 20 s: nothing moves for longer than 2 s.
    let s = scene(
        Layout::Plain,
        Spec {
            block_scan_ms: 20_000,
            coordinator_args: vec!["--stall-timeout".into(), "2".into()],
            ..Spec::default()
        },
    );
    let answer = s.cluster.sql(CHECK_SQL);
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

#[test]
fn asked_for_a_partial_answer_a_down_site_is_left_out_and_the_report_says_what_was_not_read() {
    let mut s = scene(Layout::Plain, Spec::default());
    s.cluster.kill9("w2");
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.cluster.sites().get("w2") != Some(&false) {
        assert!(Instant::now() < deadline, "w2 never found down");
        std::thread::sleep(Duration::from_millis(100));
    }
    // By default a missing site fails the statement, naming it.
    let refused = s.cluster.sql(CHECK_SQL);
    assert!(!refused.ok && refused.stderr.contains("w2"), "{refused:?}");

    let partial = s.cluster.sql_with(&["--partial"], CHECK_SQL);
    assert!(partial.ok, "{partial:?}");
    let live = [s.sites[0].clone(), s.sites[2].clone()];
    assert_eq!(partial.stdout, harness::single_node_answer(&live));
    assert!(
        partial
            .stderr
            .contains("PARTIAL answer: not read 2 file(s) of down site(s) 'w2'"),
        "{}",
        partial.stderr
    );
    eprintln!("FIGURE partial answer: {}", partial.stderr.trim());

    // A pipeline run the same way: refused by default, over the live sites when its file
    // says `partial = true`; the down site's files are no wave's input, so not covered.
    let pipeline = |partial: bool| {
        let file = s.cluster.logs.join(format!("scores-{partial}.toml"));
        let header = format!("[pipeline]\npartial = {partial}");
        let text = harness::scoring_pipeline(&header, "local_parquet", "scores");
        std::fs::write(&file, text).unwrap();
        s.cluster.run(&file, &["--run-id", &format!("p-{partial}")])
    };
    let (ok, _, stderr) = pipeline(false);
    assert!(!ok && stderr.contains("w2"), "{stderr}");
    let (ok, stdout, stderr) = pipeline(true);
    assert!(ok, "{stdout}{stderr}");
    let live_rows = harness::single_node_csv(&live, "SELECT count(*) AS n FROM lineitem");
    let live_rows = live_rows.lines().nth(1).unwrap();
    assert!(
        stdout.contains(&format!(
            "== output 'scores' (local_parquet): {live_rows} rows"
        )),
        "{stdout}"
    );
    assert!(
        stderr.contains("PARTIAL answer: not read 2 file(s) of down site(s) 'w2'"),
        "{stderr}"
    );

    // Every site down: an empty answer that says so, not an error.
    s.cluster.kill9("w1");
    s.cluster.kill9("w3");
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.cluster.sites().values().any(|live| *live) {
        assert!(Instant::now() < deadline, "workers never found down");
        std::thread::sleep(Duration::from_millis(100));
    }
    let nothing = s.cluster.sql_with(&["--partial"], CHECK_SQL);
    assert!(nothing.ok, "{nothing:?}");
    assert!(nothing.stderr.contains("(100.0%)"), "{}", nothing.stderr);
}

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs the fault-injection feature (make test turns it on)"
)]
fn asked_for_a_partial_answer_a_site_lost_mid_statement_is_left_out_of_the_re_run() {
    let mut s = scene(Layout::Plain, slow());
    let started = Instant::now();
    let query = s.cluster.spawn_sql_with(&["--partial"], CHECK_SQL);
    std::thread::sleep(Duration::from_millis(700));
    s.cluster.kill9("w2");
    let answer = harness::Answer::of(query, started);
    assert!(
        answer.ok,
        "{answer:?}; logs in {}",
        s.cluster.logs.display()
    );
    let live = [s.sites[0].clone(), s.sites[2].clone()];
    assert_eq!(answer.stdout, harness::single_node_answer(&live));
    for said in [
        "re-run 1 time(s) after losing worker(s) 'w2'",
        "PARTIAL answer: not read 2 file(s) of down site(s) 'w2'",
    ] {
        assert!(answer.stderr.contains(said), "{}", answer.stderr);
    }
    eprintln!(
        "FIGURE partial answer after a mid-statement loss: {}",
        answer.stderr.trim()
    );
}
