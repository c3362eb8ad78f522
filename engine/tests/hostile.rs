//! Statements a hostile but authenticated client may send, against real processes: each
//! is refused with an error naming the limit or the rule, or runs, and every process
//! survives it. (Before the limits existed, each of these killed the coordinator or a
//! worker: a stack overflow while planning, an abort on a huge allocation.)

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod harness;

use harness::{Cluster, Layout, Spec, scene};

/// The coordinator's default `--max-expression-depth`.
const DEPTH: usize = 500;

/// Expression shapes a statement nests: `n` levels of each.
fn shapes(n: usize) -> Vec<(&'static str, String)> {
    let terms =
        |op: &str, term: &dyn Fn(usize) -> String| (0..n).map(term).collect::<Vec<_>>().join(op);
    vec![
        (
            "arithmetic chain",
            format!("SELECT {}", terms(" + ", &|_| "1".into())),
        ),
        (
            "arithmetic in an aggregate",
            format!(
                "SELECT sum({}) FROM lineitem",
                terms(" + ", &|_| "l_quantity".into())
            ),
        ),
        (
            "boolean chain",
            format!(
                "SELECT count(*) FROM lineitem WHERE {}",
                terms(" OR ", &|i| format!("l_orderkey = {i}"))
            ),
        ),
        (
            "nested calls",
            format!(
                "SELECT {}l_quantity{} FROM lineitem LIMIT 1",
                "abs(".repeat(n),
                ")".repeat(n)
            ),
        ),
        (
            "CASE",
            format!(
                "SELECT count(CASE {} END) FROM lineitem",
                terms(" ", &|i| format!("WHEN l_orderkey = {i} THEN {i}"))
            ),
        ),
        (
            "IN list",
            format!(
                "SELECT count(*) FROM lineitem WHERE l_orderkey IN ({})",
                terms(", ", &|i| i.to_string())
            ),
        ),
        (
            "nested subqueries",
            format!("SELECT {}1{}", "(SELECT ".repeat(n), ")".repeat(n)),
        ),
    ]
}

fn assert_alive(cluster: &mut Cluster, what: &str) {
    assert!(
        cluster.all_running(),
        "a process died of {what}:\n{}",
        cluster.log_tails()
    );
}

#[test]
fn every_expression_shape_up_to_and_past_the_limits_is_answered_or_refused_naming_the_limit() {
    let mut s = scene(Layout::Plain, Spec::default());
    let cluster = &mut s.cluster;
    for n in [10, DEPTH - 20, DEPTH + 1, 4 * DEPTH] {
        for (shape, sql) in shapes(n) {
            let answer = cluster.sql(&sql);
            let what = format!("{shape} of {n}");
            assert_alive(cluster, &what);
            if answer.ok {
                continue;
            }
            let named = ["max_expression_depth", "sql_parser.recursion_limit"]
                .iter()
                .any(|limit| answer.stderr.contains(limit));
            assert!(named, "{what}: {}", answer.stderr);
            // Only nesting past a limit may be refused: flat shapes and shallow ones run.
            let nests = !matches!(shape, "CASE" | "IN list");
            assert!(n > 10 && nests, "{what} refused: {}", answer.stderr);
            if n > DEPTH && shape != "nested subqueries" && shape != "nested calls" {
                assert!(answer.stderr.contains("max_expression_depth"), "{what}");
            }
        }
    }
}

#[test]
fn oversized_kernels_internal_functions_and_huge_searches_are_refused_naming_the_limit() {
    let mut s = scene(Layout::Plain, Spec::default());
    let cluster = &mut s.cluster;
    let lists = (1..=25)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let refused = [
        (
            "SELECT count(hashed_ngrams(l_comment, 1, 10000000)) FROM lineitem".to_string(),
            "over the limit of 16384",
        ),
        (
            "SELECT count(hashed_ngrams(CAST(value AS VARCHAR), 1, 10000000)) \
             FROM generate_series(1, 100000)"
                .to_string(),
            "over the limit of 16384",
        ),
        (
            "SELECT __shoal_fedavg_round('{}', l_quantity, l_discount) FROM lineitem".to_string(),
            "internal to shoal",
        ),
        (
            "SELECT \"__shoal_linear_stats\"(l_quantity, l_discount) FROM lineitem".to_string(),
            "internal to shoal",
        ),
        (
            format!(
                "CREATE MODEL huge OPTIONS (search = 'grid', rounds = [{lists}], \
                 epochs = [{lists}], batch_size = [{lists}], hidden = [{lists}], \
                 l2 = [{lists}], learning_rate = [{lists}]) AS TRAIN mlp PREDICTING y \
                 FROM (SELECT l_quantity, l_discount AS y FROM lineitem)"
            ),
            "244140625 trials, over the limit of 64",
        ),
    ];
    for (sql, expected) in refused {
        let answer = cluster.sql(&sql);
        assert_alive(cluster, &sql);
        assert!(!answer.ok, "{sql} ran");
        assert!(answer.stderr.contains(expected), "{sql}: {}", answer.stderr);
    }
    // Within the bounds the kernels run.
    let answer = cluster.sql("SELECT count(hashed_ngrams(l_comment, 2, 4096)) AS n FROM lineitem");
    assert!(
        answer.ok && answer.stdout.contains(&harness::ROWS.to_string()),
        "{answer:?}"
    );
}

#[test]
fn shoal_sql_into_a_pipe_closed_early_ends_quietly() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let s = scene(Layout::Plain, Spec::default());
    for format in ["table", "csv", "json"] {
        let mut child = Command::new(harness::SHOAL)
            .args(["sql", "--coordinator", &s.cluster.url, "--format", format])
            .arg("SELECT * FROM lineitem")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run shoal sql");
        let mut first = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut first)
            .expect("a first line");
        // The reader goes away after one line, as `| head -1` does.
        let out = child.wait_with_output().expect("shoal sql ends");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{format}: {:?} {stderr}", out.status);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("error"),
            "{format}: {stderr}"
        );
    }
}

#[test]
fn the_coordinators_memory_pool_bounds_what_a_statement_builds_there() {
    let spec = Spec {
        coordinator_args: vec!["--memory-limit".into(), "64MiB".into()],
        ..Spec::default()
    };
    let mut s = scene(Layout::Plain, spec);
    let cluster = &mut s.cluster;
    // 8192 rows x 16384 buckets of Float32 per batch: 512 MiB, within the per-batch bound
    // but not within the coordinator's 64 MiB.
    let sql = "SELECT count(hashed_ngrams(CAST(value AS VARCHAR), 1, 16384)) \
               FROM generate_series(1, 100000)";
    let answer = cluster.sql(sql);
    assert_alive(cluster, sql);
    assert!(!answer.ok, "{answer:?}");
    assert!(
        answer.stderr.contains("hashed_ngrams") && answer.stderr.contains("feature kernel output"),
        "{}",
        answer.stderr
    );
    let answer = cluster.sql("SELECT count(*) AS n FROM generate_series(1, 1000)");
    assert!(answer.ok, "{answer:?}");
}

#[test]
fn configuration_traps_are_refused_at_start() {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let port = harness::free_port();
    // Client tokens but no cluster secret, beyond loopback: any client could register a site.
    let out = Command::new(harness::SHOAL)
        .args(["coordinator", "--listen", &format!("0.0.0.0:{port}")])
        .env("SHOAL_TOKENS", "a-long-enough-client-token")
        .env_remove("SHOAL_CLUSTER_SECRET")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("register a fake site"),
        "{stderr}"
    );
    // An auth file other users can read.
    let auth = dir.path().join("auth.toml");
    std::fs::write(&auth, "tokens = [\"a-long-enough-client-token\"]\n").unwrap();
    std::fs::set_permissions(
        &auth,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o644),
    )
    .unwrap();
    let out = Command::new(harness::SHOAL)
        .args([
            "coordinator",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--auth-file",
        ])
        .arg(&auth)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("chmod 600"),
        "{stderr}"
    );
}

#[test]
fn a_runtime_library_planted_in_a_parent_of_the_working_folder_is_never_loaded() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    // As anyone can on a shared host: `.shoal/onnxruntime/` in a parent folder (here, of the
    // folder the coordinator is started from), holding a "library" that is not one.
    let shared = tempfile::tempdir().unwrap();
    let planted = shared.path().join(".shoal/onnxruntime");
    std::fs::create_dir_all(&planted).unwrap();
    std::fs::write(planted.join("libonnxruntime.so.9.9.9"), b"not a library").unwrap();
    let cwd = shared.path().join("work/here");
    std::fs::create_dir_all(&cwd).unwrap();
    let mut coordinator = Command::new(harness::SHOAL)
        .current_dir(&cwd)
        .args([
            "coordinator",
            "--listen",
            &format!("127.0.0.1:{}", harness::free_port()),
        ])
        .arg("--models")
        .arg(harness::repo_root().join("tests/data/models"))
        .env_remove("ORT_DYLIB_PATH")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Loading the models starts ONNX Runtime: from the checkout's library, or it fails.
    let mut first = String::new();
    BufReader::new(coordinator.stderr.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let _ = coordinator.kill();
    let _ = coordinator.wait();
    assert!(first.contains("serving Flight SQL"), "{first}");
}
