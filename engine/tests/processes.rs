//! Separate `shoal` processes: a coordinator, two workers and `shoal sql` / `shoal models`
//! as a user would run them. The processes are killed when the test ends, pass or fail.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");

/// Kills its processes on drop, so a failed assertion leaves nothing running.
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn spawn(args: &[&str]) -> Child {
    Command::new(SHOAL)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start shoal")
}

fn shoal(args: &[&str]) -> Output {
    Command::new(SHOAL).args(args).output().expect("run shoal")
}

/// `shoal sql --format csv --quiet` with `SHOAL_TOKEN` set to `token` (or unset).
fn csv_query(url: &str, sql: &str, token: Option<&str>) -> Output {
    let mut command = Command::new(SHOAL);
    command.args([
        "sql",
        "--coordinator",
        url,
        "--format",
        "csv",
        "--quiet",
        sql,
    ]);
    match token {
        Some(t) => command.env("SHOAL_TOKEN", t),
        None => command.env_remove("SHOAL_TOKEN"),
    };
    command.output().expect("run shoal sql")
}

/// Repeats `sql` until it prints `expected` or `timeout` passes (processes start and
/// workers register within seconds); returns what the last attempt printed.
fn wait_for_answer(
    url: &str,
    sql: &str,
    token: Option<&str>,
    expected: &str,
    timeout: Duration,
) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let out = csv_query(url, sql, token);
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if (out.status.success() && printed == expected) || Instant::now() >= deadline {
            return printed;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/models")
}

#[test]
fn coordinator_workers_and_sql_as_separate_processes() {
    let data = tempfile::tempdir().expect("tempdir");
    let sites = shoal_engine::tpch::generate_lineitem(data.path(), 0.005, 2, 1).expect("data");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let url = format!("http://{listen}");
    let models = models_dir();
    let mut procs = Processes(vec![spawn(&[
        "coordinator",
        "--listen",
        &listen,
        "--models",
        models.to_str().expect("utf-8 path"),
    ])]);
    for (i, site) in sites.iter().enumerate() {
        let name = format!("proc-site-{}", i + 1);
        procs.0.push(spawn(&[
            "worker",
            "--coordinator",
            &url,
            "--data",
            site.to_str().expect("utf-8 path"),
            "--name",
            &name,
            "--policy",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/site-policy.toml"),
        ]));
    }

    // Workers register within seconds; until both have, the count is short or fails.
    // TPC-H lineitem at scale 0.005 has 30201 rows (tpchgen is deterministic).
    let expected = "n\n30201\n";
    let last = wait_for_answer(
        &url,
        "SELECT count(*) AS n FROM lineitem",
        None,
        expected,
        Duration::from_secs(60),
    );
    assert_eq!(last, expected, "both sites answer the count");

    let out = shoal(&[
        "sql",
        "--coordinator",
        &url,
        "--format",
        "json",
        "SELECT l_returnflag, count(*) AS n, \
         round(avg(predict_proba('return_risk', l_quantity, l_extendedprice, l_discount, l_tax)), 3) AS risk \
         FROM lineitem GROUP BY l_returnflag ORDER BY l_returnflag",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    assert!(stdout.contains("\"l_returnflag\":\"A\""), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("moved"),
        "the report goes to stderr: {stderr}"
    );

    let out = shoal(&["models", "--coordinator", &url]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("return_risk") && stdout.contains("float32[N, 4]"),
        "{stdout}"
    );

    let out = shoal(&["sql", "--coordinator", &url, "SELECT predict('nope', 1.0)"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown model 'nope'"), "{stderr}");

    // A coordinator that is not there: a clear error, quickly.
    let started = Instant::now();
    let out = shoal(&["sql", "--coordinator", "http://127.0.0.1:1", "SELECT 1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect to http://127.0.0.1:1"));
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(procs);
}

#[test]
fn the_binary_refuses_to_expose_an_open_coordinator_and_reads_tokens_from_the_environment() {
    // No credentials, non-loopback address: refused, saying why and how to fix it.
    let out = Command::new(SHOAL)
        .args(["coordinator", "--listen", "0.0.0.0:0"])
        .env_remove("SHOAL_TOKENS")
        .output()
        .expect("run shoal");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("without authentication") && stderr.contains("--insecure"),
        "{stderr}"
    );

    // Tokens from SHOAL_TOKENS on the coordinator, SHOAL_TOKEN for `shoal sql`.
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let url = format!("grpc://{listen}");
    let token = "process-test-token-0123456789";
    let coordinator = Command::new(SHOAL)
        .args(["coordinator", "--listen", &listen])
        .env("SHOAL_TOKENS", token)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start shoal");
    let _procs = Processes(vec![coordinator]);
    let answer = wait_for_answer(
        &url,
        "SELECT 1 AS one",
        Some(token),
        "one\n1\n",
        Duration::from_secs(30),
    );
    assert_eq!(answer, "one\n1\n");
    let out = csv_query(&url, "SELECT 1 AS one", None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("requires authentication"));
}
