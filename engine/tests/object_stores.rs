//! Sites whose data is a bucket prefix, read through `object_store` from a real
//! S3-compatible server (moto's, started per test): a table split between a local folder
//! and two prefixes answers as single-node DataFusion does over the same files; a large
//! file is read by ranges (only the columns asked); a stalled server fails the statement
//! naming the object, within the worker's store timeout, and the site serves again after;
//! an `object_store` sink commits into the bucket (data files, then the manifest), its run
//! is then a table that answers as single node, and running it again changes nothing; a
//! files table (a folder of text files) in a prefix is listed and read there.

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

/// `local-1` over the folder `local` and `bucket-2` over `s3://BUCKET/sites/site-2`.
fn folder_and_bucket_cluster(
    dir: &std::path::Path,
    local: &std::path::Path,
    s3: &S3Server,
) -> Cluster {
    let mut cluster = Cluster::start(Spec::default(), &[("local-1", local.to_path_buf())], dir);
    start_bucket_site(
        &mut cluster,
        "bucket-2",
        "sites/site-2",
        &s3.endpoint(),
        &[],
    );
    cluster.wait_live(2, Duration::from_secs(60));
    cluster
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

#[test]
fn an_object_store_sink_commits_into_the_bucket_and_its_run_is_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let sites = harness::sites(dir.path());
    let s3 = S3Server::start(dir.path());
    s3.create_bucket(BUCKET);
    s3.upload_dir(BUCKET, &sites[1], "sites/site-2");
    // What a crashed earlier attempt of this run id left (data files, no manifest), and
    // another run that never committed: neither is ever read, and the first is removed.
    let store = s3.store(BUCKET);
    let some_parquet = std::fs::read(sites[1].join("lineitem/part-3.parquet")).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for key in [
        "sites/site-2/scores/run-nightly/part-left-by-a-crash.parquet",
        "sites/site-2/scores/run-crashed/part-x.parquet",
    ] {
        runtime
            .block_on(object_store::ObjectStoreExt::put(
                &store,
                &key.into(),
                some_parquet.clone().into(),
            ))
            .unwrap();
    }

    let cluster = folder_and_bucket_cluster(dir.path(), &sites[0], &s3);

    let file = dir.path().join("scores-back.toml");
    // Scores every row where it lies and writes the scores back beside the site's data.
    let text = harness::scoring_pipeline("[params]\npath = \"scores\"", "object_store", "${path}");
    std::fs::write(&file, text).unwrap();
    let started = Instant::now();
    let (ok, out, err) = cluster.run(&file, &["--run-id", "nightly"]);
    assert!(ok, "{out}{err}\n{}", cluster.log_tails());
    let took = started.elapsed();

    // In the bucket: the run's files and, last, its manifest; the crash's leftover is gone.
    let run = s3.objects(BUCKET, "sites/site-2/scores/run-nightly");
    let keys: Vec<&str> = run.iter().map(|(k, ..)| k.as_str()).collect();
    assert!(
        keys.contains(&"sites/site-2/scores/run-nightly/_manifest.json"),
        "{keys:?}"
    );
    assert!(
        !keys.iter().any(|k| k.contains("left-by-a-crash")),
        "{keys:?}"
    );
    assert!(
        keys.iter().any(|k| k.contains("part-bucket-2-")),
        "{keys:?}"
    );
    let manifest_put =
        s3.requests_for("PUT /shoal-sites/sites/site-2/scores/run-nightly/_manifest.json");
    assert_eq!(manifest_put.len(), 1, "{manifest_put:?}");
    // The folder site wrote through the same interface, beside its data.
    assert!(sites[0].join("scores/run-nightly/_manifest.json").is_file());

    // The committed run is the sites' table `scores`, equal to single node over the same
    // files (the bucket's copied down, the uncommitted run included and left out alike).
    let mirror = dir.path().join("mirror-2");
    s3.download_dir(BUCKET, "sites/site-2", &mirror);
    let on_both = [sites[0].clone(), mirror];
    let sql = "SELECT count(*) AS n, round(sum(price_hat), 2) AS total, \
               sum(l_orderkey) AS keys FROM scores";
    let answer = cluster.sql(sql);
    assert!(answer.ok, "{answer:?}\n{}", cluster.log_tails());
    assert_eq!(answer.stdout, single_node_csv(&on_both, sql));
    let scored: u64 = answer
        .stdout
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let lineitem = single_node_csv(&sites[..2], "SELECT count(*) AS n FROM lineitem");
    assert_eq!(
        lineitem.lines().nth(1).unwrap(),
        scored.to_string(),
        "every row scored once"
    );
    eprintln!(
        "FIGURE object_store sink: {scored} rows scored and committed on a folder and an S3 prefix in {:.2} s",
        took.as_secs_f64()
    );

    // The same run id again: already committed, not one object changed.
    let before = s3.objects(BUCKET, "sites/site-2/scores");
    let (ok, out, err) = cluster.run(&file, &["--run-id", "nightly"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("run already committed"), "{out}");
    assert_eq!(s3.objects(BUCKET, "sites/site-2/scores"), before);

    // A sink into a folder of the site's own data is refused, and writes nothing there.
    let (ok, _, err) = cluster.run(&file, &["--run-id", "mixed", "--set", "path=lineitem"]);
    assert!(!ok, "{err}");
    assert!(err.contains("is a folder of the site's own data"), "{err}");
    assert!(
        s3.objects(BUCKET, "sites/site-2/lineitem/run-mixed")
            .is_empty()
    );
    assert!(!sites[0].join("lineitem/run-mixed").exists());
    let again = cluster.sql(CHECK_SQL);
    assert!(again.ok, "{again:?}");
}

/// `notes/<a|b>/<n>.txt` in `site`: 12 text files a folder, enough for the default
/// policy's groups of 10.
fn write_notes(site: &std::path::Path) {
    for (folder, mood) in [("a", "lovely"), ("b", "dull")] {
        let dir = site.join("notes").join(folder);
        std::fs::create_dir_all(&dir).unwrap();
        for n in 0..12 {
            let text = format!("note {n}: the room was {mood}. ").repeat(n + 1);
            std::fs::write(dir.join(format!("{n:02}.txt")), text).unwrap();
        }
    }
}

#[test]
fn a_files_table_in_a_bucket_prefix_is_listed_and_read_there_as_in_a_folder() {
    let dir = tempfile::tempdir().unwrap();
    let sites = harness::sites(dir.path());
    write_notes(&sites[0]);
    write_notes(&sites[1]);
    let s3 = S3Server::start(dir.path());
    s3.create_bucket(BUCKET);
    s3.upload_dir(BUCKET, &sites[1], "sites/site-2");
    let cluster = folder_and_bucket_cluster(dir.path(), &sites[0], &s3);

    let object = "/shoal-sites/sites/site-2/notes/a/00.txt";
    // Requests that read the object (the upload's PUT is in the log too).
    let reads = || -> Vec<String> {
        s3.requests_for(object)
            .into_iter()
            .filter(|l| l.contains("\"GET ") || l.contains("\"HEAD "))
            .collect()
    };
    // Counting the files lists the prefix and reads none of them.
    let listed = "SELECT count(*) AS files, sum(size) AS bytes FROM notes";
    let answer = cluster.sql(listed);
    assert!(answer.ok, "{answer:?}\n{}", cluster.log_tails());
    assert_eq!(answer.stdout, single_node_csv(&sites[..2], listed));
    assert!(
        reads().is_empty(),
        "content read to count files: {:?}",
        reads()
    );

    let sql = "SELECT split_part(path, '/', 1) AS folder, count(*) AS files, \
               sum(token_count(arrow_cast(content, 'Utf8'))) AS tokens FROM notes \
               GROUP BY 1 ORDER BY 1";
    let answer = cluster.sql(sql);
    assert!(answer.ok, "{answer:?}\n{}", cluster.log_tails());
    assert_eq!(answer.stdout, single_node_csv(&sites[..2], sql));
    assert!(
        !reads().is_empty(),
        "the bucket site read its files through the S3 API: {:?}",
        s3.requests_for(object)
    );
}
