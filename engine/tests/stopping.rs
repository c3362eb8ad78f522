//! Work that holds a thread stops: a model run that never ends by itself (a Loop of 10^15
//! iterations) and a local training of 1000 epochs per round are stopped by the statement's
//! timeout, by the client going away and by SIGTERM, on every process, within a few
//! seconds (the bound: one watchdog interval for a model run, one check every 256 rows for
//! training, plus the cancel broadcast). Before, each of them burned a core until done
//! (never, for the model) and kept a stopped worker from exiting. Real processes.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod harness;

use harness::{Cluster, Layout, Spec, scene};
use std::time::{Duration, Instant};

const ENDLESS_MODEL: &str = "SELECT sum(predict('endless', l_quantity, l_extendedprice, \
                             l_discount, l_tax)) FROM lineitem";

const ENDLESS_TRAINING: &str = "CREATE MODEL endless_training OPTIONS (rounds = 10000, \
     epochs = 1000, hidden = 1024, batch_size = 1) AS TRAIN mlp PREDICTING y FROM \
     (SELECT l_quantity, l_extendedprice, l_discount, l_tax, \
     CAST(l_returnflag = 'R' AS INT) AS y FROM lineitem)";

/// How long after a stop the workers must be idle: seconds on an idle machine (1-2 s
/// measured on 2 cores); generous, as CI runs these tests beside others on 2 cores.
const STOP_BOUND: Duration = Duration::from_secs(15);

fn spec(coordinator_args: &[&str]) -> Spec {
    let models = tempfile::tempdir().unwrap().keep();
    std::fs::copy(
        harness::repo_root().join("tests/data/fault_models/endless.onnx"),
        models.join("endless.onnx"),
    )
    .unwrap();
    Spec {
        models,
        coordinator_args: coordinator_args.iter().map(|s| s.to_string()).collect(),
        worker_args: vec!["--drain-timeout".into(), "1s".into()],
        ..Spec::default()
    }
}

/// CPU time (clock ticks) the workers have used so far.
fn worker_cpu(cluster: &Cluster) -> u64 {
    cluster
        .workers
        .values()
        .map(|w| {
            let stat =
                std::fs::read_to_string(format!("/proc/{}/stat", w.child.id())).unwrap_or_default();
            // Fields after the command name (which may hold spaces): utime is 14th overall.
            let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            let fields: Vec<&str> = after.split_whitespace().collect();
            let ticks = |i: usize| {
                fields
                    .get(i)
                    .and_then(|f| f.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            ticks(11) + ticks(12)
        })
        .sum()
}

/// Waits until the workers use under a tenth of a core over a second; how long it took.
fn wait_idle(cluster: &Cluster, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let before = worker_cpu(cluster);
        std::thread::sleep(Duration::from_secs(1));
        let used = worker_cpu(cluster) - before;
        if used < 10 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "workers still busy ({used} ticks/s) {:?} after the stop:\n{}",
            started.elapsed(),
            cluster.log_tails()
        );
    }
}

/// Waits until the workers are busy (the work has started).
fn wait_busy(cluster: &Cluster) {
    let started = Instant::now();
    loop {
        let before = worker_cpu(cluster);
        std::thread::sleep(Duration::from_millis(500));
        if worker_cpu(cluster) - before > 20 {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the work never started"
        );
    }
}

#[test]
fn the_statement_timeout_stops_a_model_run_that_never_ends() {
    let mut s = scene(Layout::Plain, spec(&["--query-timeout", "3s"]));
    let answer = s.cluster.sql(ENDLESS_MODEL);
    assert!(!answer.ok, "{answer:?}");
    assert!(
        answer.stderr.contains("time limit") || answer.stderr.contains("query timeout"),
        "{}",
        answer.stderr
    );
    let idle = wait_idle(&s.cluster, STOP_BOUND);
    println!("FIGURE model run stopped by the timeout; workers idle {idle:?} after the error");
    assert!(s.cluster.all_running());
}

#[test]
fn a_client_going_away_stops_a_model_run_and_a_training_on_every_worker() {
    let mut s = scene(Layout::Plain, spec(&[]));
    for sql in [ENDLESS_MODEL, ENDLESS_TRAINING] {
        let mut client = s.cluster.spawn_sql(sql);
        wait_busy(&s.cluster);
        client.kill().unwrap();
        client.wait().unwrap();
        let idle = wait_idle(&s.cluster, STOP_BOUND);
        println!(
            "FIGURE {} stopped {idle:?} after its client went away",
            &sql[..20]
        );
        assert!(s.cluster.all_running());
    }
}

#[test]
fn sigterm_stops_a_worker_busy_in_a_model_run() {
    let mut s = scene(Layout::Plain, spec(&[]));
    let mut client = s.cluster.spawn_sql(ENDLESS_MODEL);
    wait_busy(&s.cluster);
    let started = Instant::now();
    s.cluster.signal("w1", "TERM");
    // The drain timeout (1 s), then the work's next check.
    assert!(
        s.cluster
            .wait_exit("w1", Duration::from_secs(1) + STOP_BOUND),
        "the worker did not exit:\n{}",
        s.cluster.log_tails()
    );
    println!("FIGURE worker exited {:?} after SIGTERM", started.elapsed());
    let _ = client.kill();
    let _ = client.wait();
}
