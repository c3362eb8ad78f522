//! Score Parquet where it lies, from Rust: an embedded cluster of three sites, one
//! `predict_proba` aggregate, its result and what it moved.
//!
//! ```text
//! cargo run -p shoal-examples --example embedded_predict
//! ```

use datafusion::arrow::util::pretty::pretty_format_batches;
use shoal_engine::tpch::generate_lineitem;
use shoal_engine::{CoordinatorOptions, EmbeddedCluster};
use std::path::Path;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // Three site folders, each holding its own share of TPC-H lineitem.
    let data = repo.join("target/example-data");
    let sites = generate_lineitem(&data, 0.002, 3, 1)?;

    let options = CoordinatorOptions {
        models_dir: Some(repo.join("tests/data/models")),
        ..Default::default()
    };
    let cluster =
        EmbeddedCluster::start_with_policy(options, &sites, shoal_engine::demo_site_policy())
            .await?;

    let out = cluster
        .sql(
            "SELECT l_linestatus, count(*) AS n, \
             avg(predict_proba('return_risk', l_quantity, l_extendedprice, l_discount, l_tax)) AS risk \
             FROM lineitem GROUP BY l_linestatus ORDER BY l_linestatus",
        )
        .await?;
    println!("{}", pretty_format_batches(&out.batches)?);
    println!("{}", out.report.summary());
    anyhow::ensure!(out.report.distributed, "the scan ran on the sites");

    cluster.stop().await;
    Ok(())
}
