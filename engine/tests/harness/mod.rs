//! A cluster of real `shoal` processes for the fault tests: a coordinator and named workers,
//! each its own process, that a test can kill (-9), stop (SIGSTOP), resume and replace.
//! Every process is killed when the cluster is dropped, pass or fail.

#![allow(dead_code)]

pub mod net_cluster;
pub mod netns;
pub mod proxy;
pub mod s3;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");
/// The sample sites' egress policy (lineitem open, visits aggregates-only).
pub const SITE_POLICY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/site-policy.toml");

/// Rows of TPC-H lineitem at the harness's scale (tpchgen is deterministic).
pub const ROWS: u64 = 30201;
pub const SCALE: f64 = 0.005;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_path_buf()
}

/// Settings of one cluster.
#[derive(Debug, Clone)]
pub struct Spec {
    pub heartbeat_timeout_s: f64,
    pub heartbeat_interval_s: f64,
    pub models: PathBuf,
    /// `SHOAL_FAULT_BLOCK_SCAN_MS` for the workers: each scanned batch holds its thread.
    pub block_scan_ms: u64,
    /// Extra arguments for every worker (e.g. `--memory-limit`).
    pub worker_args: Vec<String>,
    /// Extra arguments for the coordinator (e.g. `--stall-timeout`).
    pub coordinator_args: Vec<String>,
    /// Every worker's `--policy` (default: the sample sites' policy).
    pub policy: PathBuf,
}

impl Default for Spec {
    fn default() -> Self {
        Self {
            heartbeat_timeout_s: 2.0,
            heartbeat_interval_s: 0.25,
            models: repo_root().join("tests/data/models"),
            block_scan_ms: 0,
            worker_args: Vec::new(),
            coordinator_args: Vec::new(),
            policy: PathBuf::from(SITE_POLICY),
        }
    }
}

impl Spec {
    /// The coordinator's settings from the spec: models, heartbeats, extra arguments.
    pub fn coordinator_flags(&self, command: &mut Command) {
        command
            .arg("--models")
            .arg(&self.models)
            .args([
                "--heartbeat-timeout",
                &self.heartbeat_timeout_s.to_string(),
                "--heartbeat-interval",
                &self.heartbeat_interval_s.to_string(),
            ])
            .args(&self.coordinator_args);
    }

    /// A worker's settings from the spec: its policy, extra arguments, fault switches.
    pub fn worker_flags(&self, command: &mut Command) {
        command
            .arg("--policy")
            .arg(&self.policy)
            .args(&self.worker_args);
        if self.block_scan_ms > 0 {
            command.env("SHOAL_FAULT_BLOCK_SCAN_MS", self.block_scan_ms.to_string());
        }
    }
}

pub struct Worker {
    pub data: PathBuf,
    pub child: Child,
}

pub struct Cluster {
    pub url: String,
    listen: String,
    pub spec: Spec,
    coordinator: Child,
    pub workers: BTreeMap<String, Worker>,
    /// Where the processes' stderr goes (printed when a test fails to say why).
    pub logs: PathBuf,
}

impl Cluster {
    /// A coordinator and one worker per (name, data folder); returns once all are live.
    pub fn start(spec: Spec, workers: &[(&str, PathBuf)], logs: &Path) -> Self {
        let listen = format!("127.0.0.1:{}", free_port());
        let coordinator = spawn_coordinator(&spec, &listen, logs, "coordinator");
        let mut cluster = Self {
            url: format!("http://{listen}"),
            listen,
            spec,
            coordinator,
            workers: BTreeMap::new(),
            logs: logs.to_path_buf(),
        };
        for (name, data) in workers {
            cluster.start_worker(name, data.clone());
        }
        cluster.wait_live(workers.len(), Duration::from_secs(60));
        cluster
    }

    /// Kill -9 the coordinator.
    pub fn kill_coordinator(&mut self) {
        self.coordinator.kill().expect("kill -9 the coordinator");
        let _ = self.coordinator.wait();
    }

    /// A new coordinator on the same address (the workers re-register with it).
    pub fn restart_coordinator(&mut self) {
        let _ = self.coordinator.kill();
        let _ = self.coordinator.wait();
        self.coordinator = spawn_coordinator(&self.spec, &self.listen, &self.logs, "coordinator-2");
    }

    /// Starts (or replaces) worker `name` over `data`; does not wait for it to register.
    pub fn start_worker(&mut self, name: &str, data: PathBuf) {
        self.start_worker_with_env(name, data, &[]);
    }

    /// [`Cluster::start_worker`] with extra environment variables (fault injection).
    pub fn start_worker_with_env(&mut self, name: &str, data: PathBuf, env: &[(&str, &str)]) {
        self.start_worker_with(name, data, env, &[]);
    }

    /// [`Cluster::start_worker`] with extra environment variables and arguments; `data` may
    /// be a bucket URL (`s3://bucket/prefix`).
    pub fn start_worker_with(
        &mut self,
        name: &str,
        data: PathBuf,
        env: &[(&str, &str)],
        args: &[&str],
    ) {
        let mut command = Command::new(SHOAL);
        command.args([
            "worker",
            "--coordinator",
            &self.url,
            "--data",
            data.to_str().expect("utf-8 path"),
            "--name",
            name,
            "--site-secret-file",
            site_secret(&self.logs, name).to_str().expect("utf-8 path"),
        ]);
        self.spec.worker_flags(&mut command);
        command
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log_file(&self.logs, name));
        let child = command.spawn().expect("start a worker");
        if let Some(mut old) = self
            .workers
            .insert(name.to_string(), Worker { data, child })
        {
            let _ = old.child.kill();
            let _ = old.child.wait();
        }
    }

    /// `shoal sites`: name -> (url, live).
    pub fn site_urls(&self) -> BTreeMap<String, (String, bool)> {
        let out = Command::new(SHOAL)
            .args(["sites", "--coordinator", &self.url])
            .output()
            .expect("run shoal sites");
        parse_sites(&String::from_utf8_lossy(&out.stdout))
    }

    /// Replaces worker `name` with a new process over `data` and waits until the
    /// coordinator knows the new one (a new address, live).
    pub fn restart_worker(&mut self, name: &str, data: PathBuf) {
        let old = self.site_urls().get(name).map(|(url, _)| url.clone());
        self.start_worker(name, data);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some((url, true)) = self.site_urls().get(name)
                && Some(url) != old.as_ref()
            {
                return;
            }
            assert!(Instant::now() < deadline, "{name} did not come back");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `shoal sites`: name -> live.
    pub fn sites(&self) -> BTreeMap<String, bool> {
        self.site_urls()
            .into_iter()
            .map(|(name, (_, live))| (name, live))
            .collect()
    }

    pub fn wait_live(&self, n: usize, timeout: Duration) {
        wait_live(|| self.sites(), n, timeout, &self.logs);
    }

    /// Starts `shoal sql --format csv` on `sql` without waiting.
    pub fn spawn_sql(&self, sql: &str) -> Child {
        self.spawn_sql_with(&[], sql)
    }

    /// Starts `shoal run FILE --coordinator URL ARGS...` without waiting.
    pub fn spawn_run(&self, file: &Path, args: &[&str]) -> Child {
        Command::new(SHOAL)
            .arg("run")
            .arg(file)
            .args(["--coordinator", &self.url])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run shoal run")
    }

    /// Worker `name`'s output folder (the default, `DATA/.shoal-output`).
    pub fn output_dir(&self, name: &str) -> PathBuf {
        self.workers[name].data.join(".shoal-output")
    }

    pub fn sql(&self, sql: &str) -> Answer {
        let started = Instant::now();
        Answer::of(self.spawn_sql(sql), started)
    }

    /// `shoal sql --format csv ARGS... SQL`, waited for.
    pub fn sql_with(&self, args: &[&str], sql: &str) -> Answer {
        let started = Instant::now();
        Answer::of(self.spawn_sql_with(args, sql), started)
    }

    /// Starts `shoal sql --format csv ARGS... SQL` without waiting.
    pub fn spawn_sql_with(&self, args: &[&str], sql: &str) -> Child {
        Command::new(SHOAL)
            .args(["sql", "--coordinator", &self.url, "--format", "csv"])
            .args(args)
            .arg(sql)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run shoal sql")
    }

    fn pid(&self, name: &str) -> u32 {
        self.workers
            .get(name)
            .unwrap_or_else(|| panic!("no worker {name}"))
            .child
            .id()
    }

    /// Kill -9: no goodbye, no drain.
    pub fn kill9(&mut self, name: &str) {
        let worker = self.workers.get_mut(name).expect("a worker");
        worker.child.kill().expect("kill -9");
        let _ = worker.child.wait();
    }

    pub fn signal(&self, name: &str, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.pid(name).to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {name}");
    }

    /// Waits up to `timeout` for worker `name`'s process to exit; whether it did.
    pub fn wait_exit(&mut self, name: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !self.is_running(name) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Whether the coordinator and every worker are still running (after a hostile
    /// statement: none of them may have died of it).
    pub fn all_running(&mut self) -> bool {
        let names: Vec<String> = self.workers.keys().cloned().collect();
        matches!(self.coordinator.try_wait(), Ok(None))
            && names.iter().all(|name| self.is_running(name))
    }

    /// Whether worker `name`'s process is still running.
    pub fn is_running(&mut self, name: &str) -> bool {
        let worker = self.workers.get_mut(name).expect("a worker");
        matches!(worker.child.try_wait(), Ok(None))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for worker in self.workers.values_mut() {
            let _ = worker.child.kill();
            let _ = worker.child.wait();
        }
        let _ = self.coordinator.kill();
        let _ = self.coordinator.wait();
    }
}

/// The coordinator's auth file: an enrollment key, so each worker holds its own secret
/// (`shoal enroll`), as separate sites would. No client tokens: the clients are local.
fn auth_file(logs: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = logs.join("auth.toml");
    if !path.exists() {
        std::fs::write(&path, "site_key = \"harness-enrollment-key-0123456789\"\n")
            .expect("write the auth file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .expect("chmod the auth file");
    }
    path
}

/// Site `name`'s secret file, from `shoal enroll`.
fn site_secret(logs: &Path, name: &str) -> PathBuf {
    enroll(&auth_file(logs), logs, name)
}

/// `shoal enroll` of site `name` with the key in `auth`, into `<dir>/<name>.secret`.
pub fn enroll(auth: &Path, dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(format!("{name}.secret"));
    if !path.exists() {
        let out = Command::new(SHOAL)
            .args(["enroll", "--site", name, "--out"])
            .arg(&path)
            .arg("--auth-file")
            .arg(auth)
            .output()
            .expect("run shoal enroll");
        assert!(
            out.status.success(),
            "shoal enroll: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    path
}

fn spawn_coordinator(spec: &Spec, listen: &str, logs: &Path, log: &str) -> Child {
    let mut command = Command::new(SHOAL);
    command.args([
        "coordinator",
        "--auth-file",
        auth_file(logs).to_str().expect("utf-8 path"),
        "--listen",
        listen,
    ]);
    spec.coordinator_flags(&mut command);
    command
        .stdout(Stdio::null())
        .stderr(log_file(logs, log))
        .spawn()
        .expect("start the coordinator")
}

impl Cluster {
    /// The last lines of every process's log, for a failure message.
    pub fn log_tails(&self) -> String {
        log_tails(&self.logs)
    }
}

/// `shoal sites` output (name, url, live|down per line): name -> (url, live).
pub fn parse_sites(stdout: &str) -> BTreeMap<String, (String, bool)> {
    stdout
        .lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let name = fields.next()?.to_string();
            let url = fields.next()?.to_string();
            let live = fields.next()? == "live";
            Some((name, (url, live)))
        })
        .collect()
}

/// Waits until `sites` says `n` workers are live; fails with the logs in `logs` after
/// `timeout`.
pub fn wait_live(
    sites: impl Fn() -> BTreeMap<String, bool>,
    n: usize,
    timeout: Duration,
    logs: &Path,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let now = sites();
        let live = now.values().filter(|l| **l).count();
        if live == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{live} of {n} workers live after {timeout:?} ({now:?}); the logs (their folder \
             goes with the test):\n{}",
            log_tails(logs)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The last lines of every `.log` file in `dir`, for a failure message.
pub fn log_tails(dir: &Path) -> String {
    {
        let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|entries| entries.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        logs.retain(|p| p.extension().is_some_and(|e| e == "log"));
        logs.sort();
        let mut out = String::new();
        for path in logs {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- {}\n", path.display()));
            for line in &lines[lines.len().saturating_sub(20)..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

pub fn log_file(dir: &Path, name: &str) -> Stdio {
    std::fs::File::create(dir.join(format!("{name}.log")))
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null())
}

/// What `shoal sql` printed, and when it finished.
#[derive(Debug)]
pub struct Answer {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
    pub finished: Instant,
    pub elapsed: Duration,
}

impl Answer {
    pub fn of(child: Child, started: Instant) -> Self {
        let out: Output = child.wait_with_output().expect("shoal sql output");
        Self {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            finished: Instant::now(),
            elapsed: started.elapsed(),
        }
    }
}

/// The three sites' folders of TPC-H lineitem at [`SCALE`], two files each.
pub fn sites(root: &Path) -> Vec<PathBuf> {
    shoal_engine::tpch::generate_lineitem(&root.join("sites"), SCALE, 3, 2).expect("test data")
}

/// Rows and distinct (l_orderkey, l_linenumber) keys in every Parquet file under `dirs`'
/// `subpath` folders, read with single-node DataFusion.
pub fn rows_and_distinct_keys(dirs: &[PathBuf]) -> (u64, u64) {
    let files: Vec<String> = dirs
        .iter()
        .filter(|d| d.is_dir())
        .flat_map(|d| std::fs::read_dir(d).expect("read an output folder"))
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .map(|p| p.display().to_string())
        .collect();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let ctx = datafusion::prelude::SessionContext::new();
        let frame = ctx
            .read_parquet(files, datafusion::prelude::ParquetReadOptions::default())
            .await
            .expect("read the output");
        ctx.register_table("out", frame.into_view())
            .expect("register");
        let count = |sql: &'static str| {
            let ctx = ctx.clone();
            async move {
                let batches = ctx
                    .sql(sql)
                    .await
                    .expect("plan")
                    .collect()
                    .await
                    .expect("run");
                datafusion::arrow::util::display::array_value_to_string(batches[0].column(0), 0)
                    .expect("a value")
                    .parse::<u64>()
                    .expect("a count")
            }
        };
        let rows = count("SELECT count(*) FROM out").await;
        let keys =
            count("SELECT count(*) FROM (SELECT DISTINCT l_orderkey, l_linenumber FROM out)").await;
        (rows, keys)
    })
}

/// Worker folders where every site's files are on two workers: w1 holds sites 1 and 2,
/// w2 sites 2 and 3, w3 sites 3 and 1.
pub fn replicated(root: &Path, sites: &[PathBuf]) -> Vec<(String, PathBuf)> {
    (0..sites.len())
        .map(|i| {
            let dir = root.join(format!("replicated-w{}", i + 1));
            for site in [&sites[i], &sites[(i + 1) % sites.len()]] {
                copy_table(&site.join("lineitem"), &dir.join("lineitem"));
            }
            (format!("w{}", i + 1), dir)
        })
        .collect()
}

fn copy_table(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create a table folder");
    for entry in std::fs::read_dir(from).expect("read a table folder") {
        let path = entry.expect("an entry").path();
        if path.extension().is_some_and(|x| x == "parquet") {
            std::fs::copy(&path, to.join(path.file_name().expect("a name"))).expect("copy");
        }
    }
}

/// The exactness check: rows, and sums that change if any row is lost or counted twice.
pub const CHECK_SQL: &str =
    "SELECT count(*) AS n, sum(l_orderkey) AS k, sum(l_linenumber) AS l FROM lineitem";

/// [`CHECK_SQL`]'s answer from single-node DataFusion over the original site folders, as
/// the CSV `shoal sql` prints.
pub fn single_node_answer(sites: &[PathBuf]) -> String {
    single_node_csv(sites, CHECK_SQL)
}

/// How the test data is spread over the workers.
#[derive(Debug, Clone, Copy)]
pub enum Layout {
    /// Worker i holds site i only.
    Plain,
    /// Every site on two workers (see [`replicated`]).
    Replicated,
}

/// A test's cluster over fresh data, with the answer [`CHECK_SQL`] must give.
pub struct Scene {
    /// Declared first so it drops first: the processes stop before their folders go.
    pub cluster: Cluster,
    pub sites: Vec<PathBuf>,
    pub workers: Vec<(String, PathBuf)>,
    pub expected: String,
    pub dir: tempfile::TempDir,
}

impl Scene {
    /// Every worker process survived and the cluster still answers exactly.
    pub fn assert_every_worker_serves(&mut self) {
        for (name, _) in &self.workers {
            assert!(self.cluster.is_running(name), "{name} survived");
        }
        self.answers_exactly();
    }

    /// Runs [`CHECK_SQL`], asserting the single-node answer; what `shoal sql` printed.
    pub fn answers_exactly(&self) -> Answer {
        let answer = self.cluster.sql(CHECK_SQL);
        assert!(
            answer.ok && answer.stdout == self.expected,
            "{answer:?}; logs in {}",
            self.cluster.logs.display()
        );
        answer
    }
}

pub fn scene(layout: Layout, spec: Spec) -> Scene {
    let dir = tempfile::tempdir().expect("a temp folder");
    let sites = sites(dir.path());
    let expected = single_node_answer(&sites);
    assert!(
        expected.starts_with(&format!("n,k,l\n{ROWS},")),
        "{expected}"
    );
    let workers = match layout {
        Layout::Plain => sites
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("w{}", i + 1), s.clone()))
            .collect(),
        Layout::Replicated => replicated(dir.path(), &sites),
    };
    let named: Vec<(&str, PathBuf)> = workers
        .iter()
        .map(|(n, d)| (n.as_str(), d.clone()))
        .collect();
    let cluster = Cluster::start(spec, &named, dir.path());
    Scene {
        cluster,
        sites,
        workers,
        expected,
        dir,
    }
}

/// A statement running while `fault` strikes `after` its start.
pub struct Faulted {
    pub answer: Answer,
    /// From the statement's start to the fault.
    pub fault_after: Duration,
    /// When the fault struck.
    pub fault_at: Instant,
}

pub fn query_with_fault(
    cluster: &mut Cluster,
    sql: &str,
    after: Duration,
    fault: impl FnOnce(&mut Cluster),
) -> Faulted {
    let started = Instant::now();
    let query = cluster.spawn_sql(sql);
    std::thread::sleep(after);
    fault(cluster);
    let fault_at = Instant::now();
    Faulted {
        answer: Answer::of(query, started),
        fault_after: fault_at - started,
        fault_at,
    }
}

/// `sql`'s answer from single-node DataFusion with `lineitem` over every site's
/// `lineitem/` folder (and the test models), as the CSV `shoal sql` prints.
pub fn single_node_csv(sites: &[PathBuf], sql: &str) -> String {
    single_node_shoal_csv(sites, &repo_root().join("tests/data/models"), sql)
}

/// `sql`'s answer from a single-process shoal session (DataFusion with shoal's functions
/// and the models in `models`) over the site folders, as the CSV `shoal sql` prints.
pub fn single_node_shoal_csv(sites: &[PathBuf], models: &Path, sql: &str) -> String {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let provider = std::sync::Arc::new(
            shoal_operators::model::DirectoryModels::load(models).expect("load the models"),
        );
        let dirs: Vec<&Path> = sites.iter().map(PathBuf::as_path).collect();
        let ctx = shoal_sql::local_context(&dirs, provider)
            .await
            .expect("a local session");
        let batches = ctx
            .sql(sql)
            .await
            .expect("plan")
            .collect()
            .await
            .expect("run");
        let mut out = Vec::new();
        for (i, batch) in batches.iter().enumerate() {
            datafusion::arrow::csv::WriterBuilder::new()
                .with_header(i == 0)
                .build(&mut out)
                .write(batch)
                .expect("csv");
        }
        String::from_utf8(out).expect("utf-8")
    })
}

/// A pipeline that scores every row of `lineitem` with the `price` model where it lies and
/// writes `l_orderkey, l_linenumber, price_hat` through a sink of `kind` to `path`, after
/// the `[pipeline]` header lines given.
pub fn scoring_pipeline(header: &str, kind: &str, path: &str) -> String {
    format!(
        r#"{header}
[source.items]
table = "lineitem"

[model.price]
input = "items"
model = "price"
features = ["l_quantity", "l_discount"]
predict = "price_hat"

[features.out]
input = "price"
keep = ["l_orderkey", "l_linenumber", "price_hat"]

[sink.scores]
input = "out"
kind = "{kind}"
path = "{path}"
"#
    )
}

impl Cluster {
    /// `shoal run FILE --coordinator URL ARGS...`, waited for: success, stdout, stderr.
    pub fn run(&self, file: &Path, args: &[&str]) -> (bool, String, String) {
        let out = self
            .spawn_run(file, args)
            .wait_with_output()
            .expect("shoal run");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}
