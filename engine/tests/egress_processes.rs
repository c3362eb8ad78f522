//! What leaves a site, on real processes: a coordinator and three worker processes, each
//! with its policy file, attacked through `shoal sql` as a client would. Each attack is
//! refused by the sites with the rule named, and each site's own audit log records it
//! (`shoal audit` reads it back). The same attacks on one process: `tests/egress.rs`.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod harness;

use harness::{Cluster, SHOAL, Spec};
use std::path::PathBuf;
use std::time::Duration;

#[test]
fn each_worker_process_enforces_its_own_policy_and_logs_it() {
    let scratch = tempfile::tempdir().unwrap();
    let sites: Vec<PathBuf> = (1..=3)
        .map(|i| scratch.path().join(format!("site-{i}")))
        .collect();
    shoal_engine::visits::generate_visits(&sites, 3_000, 2).expect("visits");
    let spec = Spec {
        policy: harness::repo_root().join("tests/data/visits-aggregates-policy.toml"),
        ..Spec::default()
    };
    let named: Vec<(&str, PathBuf)> = ["p-site-1", "p-site-2", "p-site-3"]
        .into_iter()
        .zip(sites.iter().cloned())
        .collect();
    let cluster = Cluster::start(spec, &named, scratch.path());
    cluster.wait_live(3, Duration::from_secs(60));

    let attacks = [
        ("SELECT * FROM visits", "never_leave"),
        ("SELECT age, bmi FROM visits LIMIT 5", "egress"),
        (
            "SELECT count(*) FROM visits WHERE cost > 1e9 OR age = 61.25",
            "min_group_rows",
        ),
        (
            "SELECT cost, count(*) FROM visits GROUP BY cost",
            "min_group_rows",
        ),
        ("SELECT max(age) FROM visits", "egress"),
        (
            "SELECT string_agg(CAST(age AS VARCHAR), ',') FROM visits",
            "egress",
        ),
        (
            "SELECT prior_visits, count(*) FROM visits GROUP BY prior_visits",
            "never_leave",
        ),
        (
            "SELECT count(*) FROM visits a JOIN visits b ON a.age = b.age",
            "egress",
        ),
        (
            "SELECT predict('return_risk', age, bmi, systolic_bp, glucose) FROM visits",
            "egress",
        ),
    ];
    for (sql, key) in attacks {
        let answer = cluster.sql(sql);
        assert!(!answer.ok, "{sql}: not refused: {}", answer.stdout);
        assert!(
            answer.stderr.contains("refuses: table 'visits'")
                && answer.stderr.contains(&format!("(policy {key})")),
            "{sql}: {}",
            answer.stderr
        );
    }
    // Allowed work runs, and is exact: 3 sites x 3,000 visits.
    let answer = cluster.sql("SELECT count(*) AS n, round(avg(age), 6) AS age FROM visits");
    assert!(answer.ok, "{}", answer.stderr);
    assert!(answer.stdout.contains("9000"), "{}", answer.stdout);

    // Every site logged the raw select it refused, in its own folder; `shoal audit` reads it.
    for site in &sites {
        let records = shoal_engine::worker::audit::read_all(&site.join(".shoal-audit")).unwrap();
        assert!(
            records
                .iter()
                .any(|r| r.decision == "refused" && r.rule == "never_leave"),
            "{}: {records:?}",
            site.display()
        );
        assert!(records.iter().any(|r| r.decision == "ran"), "{records:?}");
    }
    let summary = std::process::Command::new(SHOAL)
        .args(["audit", "--data", sites[0].to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&summary.stdout);
    assert!(
        summary.status.success() && text.contains("refused"),
        "{text}"
    );

    // Site impersonation: a process holding p-site-1's secret (each site's comes from
    // `shoal enroll`, see the harness) tries to join as p-site-2. It is refused and exits;
    // p-site-2 keeps its place and the cluster keeps answering.
    let before = cluster.site_urls();
    let out = std::process::Command::new(SHOAL)
        .args([
            "worker",
            "--coordinator",
            &cluster.url,
            "--name",
            "p-site-2",
        ])
        .arg("--data")
        .arg(&sites[1])
        .arg("--site-secret-file")
        .arg(cluster.logs.join("p-site-1.secret"))
        .arg("--policy")
        .arg(&cluster.spec.policy)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("only site 'p-site-2', with its own credential"),
        "{stderr}"
    );
    assert_eq!(cluster.site_urls(), before);
    let answer = cluster.sql("SELECT count(*) AS n FROM visits");
    assert!(
        answer.ok && answer.stdout.contains("9000"),
        "{}",
        answer.stderr
    );
    drop(cluster);
}
