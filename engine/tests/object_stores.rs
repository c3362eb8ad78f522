//! Sites whose data is a bucket prefix, read through `object_store` from a real
//! S3-compatible server (moto's, started per test): a table split between a local folder
//! and two prefixes answers as single-node DataFusion does over the same files; a large
//! file is read by ranges (only the columns asked); a stalled server fails the statement
//! naming the object, within the worker's store timeout, and the site serves again after.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod harness;

use harness::proxy::Proxy;
use harness::s3::S3Server;
use harness::{CHECK_SQL, Cluster, Spec, single_node_csv};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const BUCKET: &str = "shoal-sites";

/// Q1's shape: grouped sums over most of the table (decimals: exact in any order).
const Q1_SQL: &str = "SELECT l_returnflag, l_linestatus, sum(l_quantity) AS sum_qty, \
     sum(l_extendedprice) AS sum_base, count(*) AS n FROM lineitem \
     WHERE l_shipdate <= DATE '1998-09-02' GROUP BY l_returnflag, l_linestatus \
     ORDER BY l_returnflag, l_linestatus";

/// Starts a remote site `name` over `s3://BUCKET/<prefix>`, its store reached at `endpoint`.
fn start_bucket_site(
    cluster: &mut Cluster,
    name: &str,
    prefix: &str,
    endpoint: &str,
    extra: &[&str],
) {
    let env = S3Server::env_for(endpoint);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let state = cluster.logs.join(format!("{name}-state"));
    let audit = state.join("audit");
    let output = state.join("output");
    let mut args = vec![
        "--audit-log",
        audit.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    cluster.start_worker_with(
        name,
        PathBuf::from(format!("s3://{BUCKET}/{prefix}")),
        &env,
        &args,
    );
}

#[test]
fn a_table_split_between_a_folder_and_bucket_prefixes_equals_single_node() {
    let dir = tempfile::tempdir().unwrap();
    let sites = harness::sites(dir.path());
    let s3 = S3Server::start(dir.path());
    s3.create_bucket(BUCKET);
    s3.upload_dir(BUCKET, &sites[1], "sites/site-2");
    s3.upload_dir(BUCKET, &sites[2], "sites/site-3");

    let mut cluster = Cluster::start(
        Spec::default(),
        &[("local-1", sites[0].clone())],
        dir.path(),
    );
    let endpoint = s3.endpoint();
    start_bucket_site(&mut cluster, "bucket-2", "sites/site-2", &endpoint, &[]);
    start_bucket_site(&mut cluster, "bucket-3", "sites/site-3", &endpoint, &[]);
    cluster.wait_live(3, Duration::from_secs(60));

    for sql in [CHECK_SQL, Q1_SQL] {
        let started = Instant::now();
        let answer = cluster.sql(sql);
        assert!(answer.ok, "{answer:?}\n{}", cluster.log_tails());
        assert_eq!(answer.stdout, single_node_csv(&sites, sql), "{sql}");
        eprintln!(
            "FIGURE {:.2} s for a statement over a folder and two S3 prefixes; report: {}",
            started.elapsed().as_secs_f64(),
            answer.stderr.trim()
        );
    }
    // Each prefix was read by its own site only, and through the S3 API.
    assert!(
        !s3.requests_for("/shoal-sites/sites/site-2/lineitem/part-3.parquet")
            .is_empty()
    );
}

#[test]
fn a_large_file_in_a_bucket_is_read_by_ranges_of_the_columns_asked() {
    let dir = tempfile::tempdir().unwrap();
    // One site, one file of ~300k rows.
    let big = shoal_engine::tpch::generate_lineitem(&dir.path().join("big"), 0.05, 1, 1).unwrap();
    let file = big[0].join("lineitem/part-1.parquet");
    let file_size = std::fs::metadata(&file).unwrap().len();
    let s3 = S3Server::start(dir.path());
    s3.create_bucket(BUCKET);
    s3.upload_dir(BUCKET, &big[0], "big");
    let proxy = Proxy::start(format!("127.0.0.1:{}", s3.port));

    let mut cluster = Cluster::start(Spec::default(), &[], dir.path());
    let endpoint = format!("http://127.0.0.1:{}", proxy.port);
    start_bucket_site(&mut cluster, "bucket-big", "big", &endpoint, &[]);
    cluster.wait_live(1, Duration::from_secs(60));

    let sql = "SELECT sum(l_quantity) AS q, count(*) AS n FROM lineitem";
    let before = proxy.bytes_from_server();
    let answer = cluster.sql(sql);
    let fetched = proxy.bytes_from_server() - before;
    assert!(answer.ok, "{answer:?}\n{}", cluster.log_tails());
    assert_eq!(answer.stdout, single_node_csv(&big, sql));
    let ranged = s3
        .requests_for("GET /shoal-sites/big/lineitem/part-1.parquet")
        .iter()
        .filter(|l| l.contains("\" 206 "))
        .count();
    assert!(
        ranged > 0,
        "no range reads: {:?}",
        s3.requests_for("part-1")
    );
    // One decimal column of sixteen (and the footer): far less than the file.
    assert!(
        fetched * 4 < file_size,
        "fetched {fetched} bytes of a {file_size}-byte file for one column"
    );
    eprintln!(
        "FIGURE range reads: {fetched} bytes fetched of a {file_size}-byte file ({:.1}%) in {ranged} ranged GETs",
        100.0 * fetched as f64 / file_size as f64
    );
}

#[test]
fn a_stalled_store_fails_the_statement_naming_the_object_and_the_site_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let sites = harness::sites(dir.path());
    let s3 = S3Server::start(dir.path());
    s3.create_bucket(BUCKET);
    s3.upload_dir(BUCKET, &sites[0], "stall");
    let proxy = Proxy::start(format!("127.0.0.1:{}", s3.port));

    let mut cluster = Cluster::start(Spec::default(), &[], dir.path());
    let endpoint = format!("http://127.0.0.1:{}", proxy.port);
    start_bucket_site(
        &mut cluster,
        "bucket-stall",
        "stall",
        &endpoint,
        &["--store-timeout", "1s"],
    );
    cluster.wait_live(1, Duration::from_secs(60));

    proxy.stall(true);
    let started = Instant::now();
    let answer = cluster.sql(CHECK_SQL);
    let took = started.elapsed();
    assert!(!answer.ok, "{answer:?}");
    assert!(
        answer.stderr.contains("stall/lineitem/part-"),
        "the error names the object: {}",
        answer.stderr
    );
    // 1 s per try, 4 tries, with backoff in between: well under the statement's own limits.
    assert!(took < Duration::from_secs(30), "took {took:?}");
    eprintln!(
        "FIGURE a stalled store failed the statement after {:.2} s (1 s store timeout, 3 retries)",
        took.as_secs_f64()
    );

    proxy.stall(false);
    assert!(cluster.all_running(), "no process died of the stall");
    let again = cluster.sql(CHECK_SQL);
    assert!(again.ok, "{again:?}");
    assert_eq!(again.stdout, single_node_csv(&sites[..1], CHECK_SQL));
}
