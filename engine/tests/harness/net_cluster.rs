//! A cluster deployed as across machines: the coordinator, each worker and the client on
//! hosts of their own ([`super::netns`]), TLS between all of them (certificates naming the
//! hosts' addresses), clients authenticating with a token, each site with its own enrolled
//! secret, workers bound to every interface and advertising their host's address.

use super::netns::Network;
use super::{Answer, SHOAL, Spec, enroll, log_file, parse_sites, repo_root, wait_live};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const COORDINATOR_PORT: u16 = 50050;
const WORKER_PORT: u16 = 7000;
const CLIENT_TOKEN: &str = "netns-client-token-0123456789abcdef";

pub struct NetCluster {
    /// Processes first: they stop before their namespaces go.
    coordinator: Child,
    workers: BTreeMap<String, (PathBuf, Child)>,
    pub net: Network,
    pub url: String,
    pub logs: PathBuf,
    spec: Spec,
}

fn tls_dir() -> PathBuf {
    repo_root().join("tests/data/tls")
}

/// A server's TLS: the hosts' certificate (it names every 10.77.0.x host) and the CA.
fn tls_args() -> Vec<std::ffi::OsString> {
    let tls = tls_dir();
    vec![
        "--tls-cert".into(),
        tls.join("netns.pem").into(),
        "--tls-key".into(),
        tls.join("netns.key").into(),
        "--tls-ca".into(),
        tls.join("ca.pem").into(),
    ]
}

impl NetCluster {
    /// Hosts `coordinator`, `client` and one per worker; returns once every worker is live.
    pub fn start(spec: Spec, workers: &[(&str, PathBuf)], logs: &Path) -> Self {
        let mut labels = vec!["coordinator", "client"];
        labels.extend(workers.iter().map(|(name, _)| *name));
        let net = Network::new(&labels);
        let coordinator_ip = net.host("coordinator").ip.clone();
        let auth = logs.join("auth-net.toml");
        std::fs::write(
            &auth,
            format!(
                "site_key = \"netns-enrollment-key-0123456789\"\ntokens = [\"{CLIENT_TOKEN}\"]\n"
            ),
        )
        .expect("write the auth file");
        let token = logs.join("client.token");
        std::fs::write(&token, CLIENT_TOKEN).expect("write the token");
        for secret in [&auth, &token] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(secret, std::fs::Permissions::from_mode(0o600))
                .expect("chmod a secret file");
        }
        let mut command = net.command("coordinator", SHOAL);
        command
            .args(["coordinator", "--listen"])
            .arg(format!("0.0.0.0:{COORDINATOR_PORT}"))
            .arg("--advertise")
            .arg(format!("{coordinator_ip}:{COORDINATOR_PORT}"))
            .arg("--auth-file")
            .arg(&auth)
            .args(tls_args());
        spec.coordinator_flags(&mut command);
        let coordinator = command
            .stdout(Stdio::null())
            .stderr(log_file(logs, "coordinator"))
            .spawn()
            .expect("start the coordinator");
        let mut cluster = Self {
            coordinator,
            workers: BTreeMap::new(),
            net,
            url: format!("grpc+tls://{coordinator_ip}:{COORDINATOR_PORT}"),
            logs: logs.to_path_buf(),
            spec,
        };
        for (name, data) in workers {
            cluster.start_worker(name, data.clone());
        }
        cluster.wait_live(workers.len(), Duration::from_secs(60));
        cluster
    }

    /// Starts worker `name` on its host over `data`.
    pub fn start_worker(&mut self, name: &str, data: PathBuf) {
        let ip = self.net.host(name).ip.clone();
        let secret = enroll(&self.logs.join("auth-net.toml"), &self.logs, name);
        let mut command = self.net.command(name, SHOAL);
        command
            .args(["worker", "--coordinator"])
            .arg(self.url.replacen("grpc+tls://", "https://", 1))
            .arg("--listen")
            .arg(format!("0.0.0.0:{WORKER_PORT}"))
            .arg("--advertise")
            .arg(format!("{ip}:{WORKER_PORT}"))
            .arg("--data")
            .arg(&data)
            .args(["--name", name])
            .arg("--site-secret-file")
            .arg(&secret)
            .args(tls_args())
            .stdout(Stdio::null())
            .stderr(log_file(&self.logs, name));
        self.spec.worker_flags(&mut command);
        let child = command.spawn().expect("start a worker");
        if let Some((_, mut old)) = self.workers.insert(name.to_string(), (data, child)) {
            let _ = old.kill();
            let _ = old.wait();
        }
    }

    /// A `shoal` client command run on the client host, pointed at the coordinator.
    fn client(&self, subcommand: &str) -> Command {
        let mut command = self.net.command("client", SHOAL);
        command
            .args([subcommand, "--coordinator", &self.url, "--tls-ca"])
            .arg(tls_dir().join("ca.pem"))
            .arg("--token-file")
            .arg(self.logs.join("client.token"));
        command
    }

    pub fn spawn_sql(&self, sql: &str) -> Child {
        self.client("sql")
            .args(["--format", "csv", sql])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run shoal sql")
    }

    pub fn sql(&self, sql: &str) -> Answer {
        let started = Instant::now();
        Answer::of(self.spawn_sql(sql), started)
    }

    /// `shoal sites`: name -> live.
    pub fn sites(&self) -> BTreeMap<String, bool> {
        let out = self.client("sites").output().expect("run shoal sites");
        if !out.status.success() {
            eprintln!(
                "shoal sites: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        parse_sites(&String::from_utf8_lossy(&out.stdout))
            .into_iter()
            .map(|(name, (_, live))| (name, live))
            .collect()
    }

    pub fn wait_live(&self, n: usize, timeout: Duration) {
        wait_live(|| self.sites(), n, timeout, &self.logs);
    }

    /// Waits until `shoal sites` says `name` is (or is not) live.
    pub fn wait_site(&self, name: &str, live: bool, timeout: Duration) -> Duration {
        let started = Instant::now();
        loop {
            if self.sites().get(name) == Some(&live) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < timeout,
                "{name} not {} after {timeout:?}; logs in {}",
                if live { "live" } else { "down" },
                self.logs.display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for NetCluster {
    fn drop(&mut self) {
        for (_, child) in self.workers.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = self.coordinator.kill();
        let _ = self.coordinator.wait();
    }
}
