//! Devices as a user meets them, with real processes on a machine without a GPU (CI's): a
//! worker told to use `cuda:0` refuses to start naming CUDA and the reason; workers report
//! their devices (`shoal sites`); a statement that requires a GPU fails naming why, or, with
//! the fallback allowed, is scored on the CPU with the same answer and a report line per
//! site; a pipeline model node's `device` does the same. On a machine with a GPU the
//! CPU-only assertions are skipped (scripts/gpu-check.sh covers it).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod harness;

use harness::{Cluster, SHOAL, Spec};
use std::process::Command;
use std::time::{Duration, Instant};

const SCORE: &str = "SELECT l_returnflag, round(sum(predict_proba('return_risk', l_quantity, \
                     l_extendedprice, l_discount, l_tax)), 3) AS risk FROM lineitem \
                     GROUP BY l_returnflag ORDER BY l_returnflag";

fn machine_has_gpu() -> bool {
    std::fs::read_dir("/dev").is_ok_and(|entries| {
        entries.filter_map(|e| e.ok()).any(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("nvidia"))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
    })
}

#[test]
fn a_worker_told_to_use_a_gpu_it_lacks_refuses_to_start_saying_why() {
    if machine_has_gpu() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = Command::new(SHOAL)
        .args([
            "worker",
            "--coordinator",
            "http://127.0.0.1:1",
            "--devices",
            "cuda:0",
        ])
        .arg("--data")
        .arg(data.path())
        .output()
        .expect("run shoal worker");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--devices")
            && stderr.contains("CUDA")
            && stderr.contains("cuda:0")
            && stderr.contains("no NVIDIA GPU on this machine"),
        "{stderr}"
    );
    // Before anything else: no coordinator was needed to find that out.
    assert!(started.elapsed() < Duration::from_secs(20));

    let out = Command::new(SHOAL)
        .args(["worker", "--devices", "cuda:0,npu:1", "--data"])
        .arg(data.path())
        .output()
        .expect("run shoal worker");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("'npu:1' is not a device"), "{stderr}");
}

#[test]
fn statements_and_pipelines_that_require_a_gpu_fail_or_fall_back_per_site() {
    if machine_has_gpu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sites = harness::sites(dir.path());
    let workers: Vec<(String, _)> = sites
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("gpu-site-{}", i + 1), s.clone()))
        .collect();
    let named: Vec<(&str, _)> = workers
        .iter()
        .map(|(n, s)| (n.as_str(), s.clone()))
        .collect();
    // The registry: the test model, and a copy the registry pins to a GPU by a
    // `<name>.device` file.
    let models = dir.path().join("models");
    std::fs::create_dir(&models).unwrap();
    let shipped = harness::repo_root().join("tests/data/models/return_risk.onnx");
    std::fs::copy(&shipped, models.join("return_risk.onnx")).unwrap();
    std::fs::copy(&shipped, models.join("gpu_risk.onnx")).unwrap();
    std::fs::write(models.join("gpu_risk.device"), "cuda\n").unwrap();
    let spec = Spec {
        models,
        ..Spec::default()
    };
    let cluster = Cluster::start(spec, &named, dir.path());

    // Each site reports what it scores on: the CPU only, here.
    let out = Command::new(SHOAL)
        .args(["sites", "--coordinator", &cluster.url])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        listing.lines().filter(|l| l.ends_with("\tcpu")).count(),
        sites.len(),
        "{listing}"
    );

    // auto (the default) and cpu score on the CPU, and agree.
    let on_cpu = cluster.sql_with(&["--device", "cpu"], SCORE);
    assert!(on_cpu.ok, "{}", on_cpu.stderr);
    let auto = cluster.sql(SCORE);
    assert_eq!(auto.stdout, on_cpu.stdout);
    assert!(!auto.stderr.contains("scored on cpu"), "{}", auto.stderr);

    // cuda required: refused, naming the device and the reason.
    let refused = cluster.sql_with(&["--device", "cuda"], SCORE);
    assert!(!refused.ok);
    assert!(
        refused.stderr.contains("cannot score on cuda")
            && refused.stderr.contains("no NVIDIA GPU on this machine")
            && refused.stderr.contains("device_fallback"),
        "{}",
        refused.stderr
    );

    // With the fallback: the same answer, and the report says which sites scored on the
    // CPU and why.
    let fell_back = cluster.sql_with(&["--device", "cuda:0", "--device-fallback"], SCORE);
    assert!(fell_back.ok, "{}", fell_back.stderr);
    assert_eq!(fell_back.stdout, on_cpu.stdout);
    for (site, _) in &workers {
        assert!(
            fell_back.stderr.contains(&format!(
                "{site} scored on cpu: no NVIDIA GPU on this machine"
            )),
            "{site}: {}",
            fell_back.stderr
        );
    }

    let bad = cluster.sql_with(&["--device", "tpu"], SCORE);
    assert!(!bad.ok);
    assert!(
        bad.stderr.contains("shoal-device") && bad.stderr.contains("'tpu' is not a device"),
        "{}",
        bad.stderr
    );

    // A model the registry pins to a GPU: listed so, refused where no site has one under
    // `auto`, scored on the CPU where the statement says cpu.
    let listed = cluster.sql("SELECT name, device FROM shoal.models ORDER BY name");
    assert_eq!(listed.stdout, "name,device\ngpu_risk,cuda\nreturn_risk,\n");
    let pinned = SCORE.replace("'return_risk'", "'gpu_risk'");
    let refused = cluster.sql(&pinned);
    assert!(!refused.ok);
    assert!(
        refused
            .stderr
            .contains("cannot score on cuda: no NVIDIA GPU"),
        "{}",
        refused.stderr
    );
    let on_cpu_anyway = cluster.sql_with(&["--device", "cpu"], &pinned);
    assert!(on_cpu_anyway.ok, "{}", on_cpu_anyway.stderr);
    assert_eq!(on_cpu_anyway.stdout, on_cpu.stdout);

    // A pipeline model node that asks for a GPU: refused, or scored on the CPU where the
    // pipeline allows the fallback.
    let pipeline = |fallback: bool| {
        let file = dir.path().join(format!("gpu_scores_{fallback}.toml"));
        std::fs::write(
            &file,
            format!(
                "[pipeline]\ndevice_fallback = {fallback}\n\n\
                 [source.items]\ntable = \"lineitem\"\n\n\
                 [model.risk]\ninput = \"items\"\nmodel = \"return_risk\"\n\
                 features = [\"l_quantity\", \"l_extendedprice\", \"l_discount\", \"l_tax\"]\n\
                 predict_proba = \"risk\"\ndevice = \"cuda\"\n\n\
                 [aggregate.by_flag]\ninput = \"risk\"\ngroup_by = [\"l_returnflag\"]\n\
                 values = {{ n = \"count(*)\", risk = \"round(sum(risk), 3)\" }}\n\n\
                 [sink.out]\ninput = \"by_flag\"\nkind = \"client\"\n"
            ),
        )
        .unwrap();
        Command::new(SHOAL)
            .arg("run")
            .arg(&file)
            .args(["--coordinator", &cluster.url])
            .output()
            .unwrap()
    };
    let refused = pipeline(false);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("cannot score on cuda") && stderr.contains("no NVIDIA GPU"),
        "{stderr}"
    );
    let allowed = pipeline(true);
    let stderr = String::from_utf8_lossy(&allowed.stderr);
    assert!(allowed.status.success(), "{stderr}");
    for (site, _) in &workers {
        assert!(
            stderr.contains(&format!(
                "output 'out': {site} scored on cpu: no NVIDIA GPU"
            )),
            "{site}: {stderr}"
        );
    }
}
