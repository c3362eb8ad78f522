//! Hosts of their own for the multi-machine tests: each one a Linux network namespace with
//! its own address on a private bridge (10.77.0.0/24), joined by a veth pair, as separate
//! machines on one switch would be. The bridge sits in a namespace of its own too, so
//! nothing is added to the machine's own network; every namespace is removed when the
//! network drops (and ones left by a killed test run are removed by the next). Needs root
//! (CI runs as root on this machine kind).
//!
//! A site's link can be cut (`cut`/`restore`: the bridge port goes down, packets vanish
//! without a reset, as with a pulled cable) or degraded (`degrade`): `tc netem` delay and
//! loss where the kernel has netem; where it does not (this machine kind's kernel is built
//! without sch_netem), a token-bucket rate limit (tc tbf) with random loss from nftables.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

const PREFIX: &str = "shoalt";
static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct Host {
    /// The namespace's name.
    pub ns: String,
    pub label: String,
    pub ip: String,
    /// The host's port on the bridge, in the hub namespace.
    port: String,
}

pub struct Network {
    hub: String,
    pub hosts: Vec<Host>,
}

/// What `degrade` applied, for the test's report.
#[derive(Debug, Clone, PartialEq)]
pub enum Degraded {
    Netem(String),
    RateAndLoss(String),
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn must(args: &[&str]) {
    if let Err(e) = run(args) {
        panic!("network set-up: {e}");
    }
}

impl Network {
    /// Whether namespaces can be made here (root, iproute2): the tests that need them say
    /// so and fail otherwise, never pass without running.
    pub fn check_available() -> Result<(), String> {
        let probe = format!("{PREFIX}probe{}", std::process::id());
        run(&["ip", "netns", "add", &probe])?;
        run(&["ip", "netns", "del", &probe])
    }

    /// One host per label, at 10.77.0.10, .11, ... in order.
    pub fn new(labels: &[&str]) -> Self {
        if let Err(e) = Self::check_available() {
            panic!(
                "the namespace tests need root and `ip netns` (CI runs as root on this \
                 machine kind): {e}"
            );
        }
        remove_stale();
        let id = format!(
            "{PREFIX}{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let hub = format!("{id}-hub");
        must(&["ip", "netns", "add", &hub]);
        let mut network = Self {
            hub: hub.clone(),
            hosts: Vec::new(),
        };
        must(&["ip", "-n", &hub, "link", "add", "br0", "type", "bridge"]);
        must(&["ip", "-n", &hub, "link", "set", "br0", "up"]);
        for (i, label) in labels.iter().enumerate() {
            let ns = format!("{id}-{label}");
            let ip = format!("10.77.0.{}", 10 + i);
            let port = format!("p{i}");
            must(&["ip", "netns", "add", &ns]);
            network.hosts.push(Host {
                ns: ns.clone(),
                label: label.to_string(),
                ip: ip.clone(),
                port: port.clone(),
            });
            must(&[
                "ip", "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ]);
            must(&["ip", "-n", &hub, "link", "set", &port, "master", "br0"]);
            must(&["ip", "-n", &hub, "link", "set", &port, "up"]);
            must(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                "eth0",
            ]);
            must(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
            must(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        }
        network
    }

    pub fn host(&self, label: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.label == label)
            .unwrap_or_else(|| panic!("no host {label}"))
    }

    /// `program` run on host `label` (`ip netns exec` execs it: the child is the program).
    pub fn command(&self, label: &str, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.host(label).ns, program]);
        command
    }

    /// Cuts host `label`'s link: its packets are dropped silently from now on.
    pub fn cut(&self, label: &str) {
        must(&[
            "ip",
            "-n",
            &self.hub,
            "link",
            "set",
            &self.host(label).port,
            "down",
        ]);
    }

    pub fn restore(&self, label: &str) {
        must(&[
            "ip",
            "-n",
            &self.hub,
            "link",
            "set",
            &self.host(label).port,
            "up",
        ]);
    }

    /// Delays and drops host `label`'s packets, both ways (see the module's note).
    pub fn degrade(&self, label: &str, delay_ms: u32, loss_percent: u32) -> Degraded {
        let host = self.host(label);
        let netem = format!("delay {delay_ms}ms loss {loss_percent}%");
        let both_ends = [(&host.ns, "eth0"), (&self.hub, host.port.as_str())];
        let with_netem = both_ends.iter().all(|(ns, dev)| {
            let mut args = vec!["ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev"];
            args.push(dev);
            args.extend(["root", "netem"]);
            args.extend(netem.split(' '));
            run(&args).is_ok()
        });
        if with_netem {
            return Degraded::Netem(netem);
        }
        // No netem: a slow link (1 Mbit/s token bucket, up to 100 ms of queue) and random
        // loss in both directions of the host's interface.
        for (ns, dev) in both_ends {
            must(&[
                "ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", dev, "root", "tbf",
                "rate", "1mbit", "burst", "32kbit", "latency", "100ms",
            ]);
        }
        let drop = format!("numgen random mod 100 < {loss_percent} drop");
        let ruleset = format!(
            "table inet shoal_loss {{\n chain input {{\n  type filter hook input priority 0;\n  \
             {drop}\n }}\n chain output {{\n  type filter hook output priority 0;\n  \
             {drop}\n }}\n}}\n"
        );
        nft_in(&host.ns, &ruleset);
        Degraded::RateAndLoss(format!(
            "tc tbf rate 1mbit latency 100ms + nft random loss {loss_percent}% (this kernel \
             has no sch_netem)"
        ))
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for host in &self.hosts {
            let _ = run(&["ip", "netns", "del", &host.ns]);
        }
        let _ = run(&["ip", "netns", "del", &self.hub]);
    }
}

/// Loads an nftables ruleset in namespace `ns` (from stdin: the one-line form of a
/// ruleset does not parse).
fn nft_in(ns: &str, ruleset: &str) {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run nft (make setup installs nftables as root): {e}"));
    child
        .stdin
        .take()
        .expect("nft's stdin")
        .write_all(ruleset.as_bytes())
        .expect("write the ruleset");
    let out = child.wait_with_output().expect("nft");
    assert!(
        out.status.success(),
        "nft: {}\n{ruleset}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Removes namespaces of this harness whose test process is gone (a run killed before its
/// networks dropped).
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if !pid.is_empty() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run(&["ip", "netns", "del", name]);
        }
    }
}
