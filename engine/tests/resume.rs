//! Resumable pipeline runs with real processes: the coordinator killed halfway through a
//! 1M-row scoring run and restarted, then `shoal run --resume`; a worker crashing in the
//! middle of the output commit. Each test prints the time from the fault to the recovery.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod harness;

use harness::{Cluster, Spec, rows_and_distinct_keys};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn pipeline_file(dir: &Path) -> PathBuf {
    let path = dir.join("scoring.toml");
    // Scores every row with the `price` model and writes it where it was read.
    std::fs::write(
        &path,
        harness::scoring_pipeline("", "local_parquet", "scores"),
    )
    .unwrap();
    path
}

fn run_dirs(cluster: &Cluster, run_id: &str) -> Vec<PathBuf> {
    cluster
        .workers
        .keys()
        .map(|w| cluster.output_dir(w).join(format!("scores/run-{run_id}")))
        .collect()
}

/// Committed waves of `run_id` on every worker.
fn committed_waves(cluster: &Cluster, run_id: &str) -> usize {
    cluster
        .workers
        .keys()
        .filter_map(|w| {
            std::fs::read_dir(
                cluster
                    .output_dir(w)
                    .join(format!("scores/.waves-{run_id}")),
            )
            .ok()
        })
        .flat_map(|entries| entries.filter_map(Result::ok))
        .filter(|e| e.path().join("_manifest.json").is_file())
        .count()
}

fn finished(child: std::process::Child) -> (bool, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs the fault-injection feature (make test turns it on)"
)]
fn a_coordinator_killed_halfway_through_a_million_row_run_resumes_with_every_row_once() {
    let tmp = tempfile::tempdir().unwrap();
    // 1,000,000-odd rows: 3 sites, 4 files each, so the run has 4 waves.
    let sites =
        shoal_engine::tpch::generate_lineitem(&tmp.path().join("sites"), 0.17, 3, 4).unwrap();
    let workers: Vec<(String, PathBuf)> = sites
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("w{}", i + 1), s.clone()))
        .collect();
    let named: Vec<(&str, PathBuf)> = workers
        .iter()
        .map(|(n, d)| (n.as_str(), d.clone()))
        .collect();
    // One file per site per wave: 4 waves of 3 site-waves, whatever the core count.
    let spec = Spec {
        block_scan_ms: 150,
        coordinator_args: vec!["--wave-files".into(), "1".into()],
        ..Spec::default()
    };
    let mut cluster = Cluster::start(spec, &named, tmp.path());
    let input_rows: u64 = {
        let answer = cluster.sql("SELECT count(*) AS n FROM lineitem");
        assert!(answer.ok, "{answer:?}");
        answer.stdout.lines().nth(1).unwrap().parse().unwrap()
    };
    assert!(input_rows > 1_000_000, "{input_rows}");

    let file = pipeline_file(tmp.path());
    let run = cluster.spawn_run(&file, &["--run-id", "big-1"]);
    let deadline = Instant::now() + Duration::from_secs(300);
    while committed_waves(&cluster, "big-1") < 3 {
        assert!(
            Instant::now() < deadline,
            "no wave committed; logs in {}",
            cluster.logs.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    cluster.kill_coordinator();
    let killed = Instant::now();
    let (ok, printed) = finished(run);
    assert!(
        !ok,
        "the run cannot finish without its coordinator: {printed}"
    );
    let waves_at_crash = committed_waves(&cluster, "big-1");
    assert!(
        waves_at_crash < 12,
        "killed halfway, not at the end: {waves_at_crash} site-waves"
    );
    for dir in run_dirs(&cluster, "big-1") {
        assert!(
            !dir.exists(),
            "nothing visible before the run completes: {}",
            dir.display()
        );
    }

    cluster.restart_coordinator();
    cluster.wait_live(3, Duration::from_secs(60));
    let resumed = cluster.spawn_run(&file, &["--resume", "big-1"]);
    let (ok, printed) = finished(resumed);
    assert!(ok, "{printed}; logs in {}", cluster.logs.display());
    assert!(
        printed.contains("already covered by committed waves"),
        "{printed}"
    );
    eprintln!(
        "FIGURE {input_rows} rows, coordinator killed after {waves_at_crash} of 12 site-waves: run finished {:.2} s after the kill (restart + resume)",
        killed.elapsed().as_secs_f64()
    );
    let (rows, keys) = rows_and_distinct_keys(&run_dirs(&cluster, "big-1"));
    assert_eq!(rows, input_rows, "every input row written");
    assert_eq!(keys, input_rows, "each exactly once");
}

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs the fault-injection feature (make test turns it on)"
)]
fn a_crash_during_the_output_commit_leaves_nothing_visible_and_committing_again_is_a_no_op() {
    let tmp = tempfile::tempdir().unwrap();
    let sites = harness::sites(tmp.path());
    let workers: Vec<(String, PathBuf)> = sites
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("w{}", i + 1), s.clone()))
        .collect();
    let mut cluster = Cluster::start(Spec::default(), &[], tmp.path());
    // w1 aborts in the middle of sealing its waves into the run's folder.
    cluster.start_worker_with_env(
        "w1",
        workers[0].1.clone(),
        &[("SHOAL_FAULT_CRASH_IN_SEAL", "1")],
    );
    for (name, data) in &workers[1..] {
        cluster.start_worker(name, data.clone());
    }
    cluster.wait_live(3, Duration::from_secs(60));

    let file = pipeline_file(tmp.path());
    let (ok, printed) = finished(cluster.spawn_run(&file, &["--run-id", "seal-1"]));
    assert!(!ok, "w1 crashed while committing: {printed}");
    assert!(!cluster.is_running("w1"), "w1 crashed");
    let crashed = Instant::now();
    let w1_output = cluster.output_dir("w1").join("scores");
    assert!(
        !w1_output.join("run-seal-1").exists(),
        "nothing visible on w1"
    );
    assert!(
        w1_output.join(".staging-seal-1").is_dir(),
        "the crash was mid-commit"
    );

    cluster.restart_worker("w1", workers[0].1.clone());
    let (ok, printed) = finished(cluster.spawn_run(&file, &["--resume", "seal-1"]));
    assert!(ok, "{printed}; logs in {}", cluster.logs.display());
    eprintln!(
        "FIGURE crash in the commit: committed {:.2} s after the crash (restart + resume)",
        crashed.elapsed().as_secs_f64()
    );
    let (rows, keys) = rows_and_distinct_keys(&run_dirs(&cluster, "seal-1"));
    assert_eq!((rows, keys), (harness::ROWS, harness::ROWS));
    assert!(!w1_output.join(".staging-seal-1").exists());

    // Committing again changes nothing: same files, same bytes.
    let before = listing(&run_dirs(&cluster, "seal-1"));
    for args in [["--resume", "seal-1"], ["--run-id", "seal-1"]] {
        let (ok, printed) = finished(cluster.spawn_run(&file, &args));
        assert!(ok && printed.contains("already committed"), "{printed}");
    }
    assert_eq!(listing(&run_dirs(&cluster, "seal-1")), before);
}

/// (file name, size) of every file in `dirs`.
fn listing(dirs: &[PathBuf]) -> Vec<(String, u64)> {
    let mut files: Vec<(String, u64)> = dirs
        .iter()
        .flat_map(|d| std::fs::read_dir(d).unwrap())
        .map(|e| e.unwrap())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    files.sort();
    files
}
