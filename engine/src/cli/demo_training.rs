//! The demo's second half: train where the data is, evaluate and A/B-compare per site, and
//! predict with the new models, on the `visits` table of every site.

use super::output::section;
use anyhow::Context;
use datafusion::arrow::util::pretty::pretty_format_batches;
use shoal_engine::EmbeddedCluster;
use std::time::Instant;

const FEATURES: &str = "age, bmi, systolic_bp, glucose, prior_visits";

pub async fn run(cluster: &EmbeddedCluster, sites: &[std::path::PathBuf]) -> anyhow::Result<()> {
    let per_site = cluster
        .sql("SELECT site() AS site, count(*) AS visits, avg(readmitted) AS readmitted_rate FROM visits GROUP BY site() ORDER BY 1")
        .await?;
    section(
        "visits held by each site (each site's policy, examples/site-policy.toml, lets only aggregates of 10+ of its rows out)",
    );
    println!("{}", pretty_format_batches(&per_site.batches)?);

    let trainings = [
        format!(
            "CREATE MODEL readmission OPTIONS (rounds = 15, learning_rate = 0.5, holdout = 0.2) \
             AS TRAIN logistic PREDICTING readmitted FROM (SELECT {FEATURES}, readmitted FROM visits)"
        ),
        format!(
            "CREATE MODEL readmission_mlp OPTIONS (rounds = 10, hidden = 8, learning_rate = 0.2, holdout = 0.2) \
             AS TRAIN mlp PREDICTING readmitted FROM (SELECT {FEATURES}, readmitted FROM visits)"
        ),
        format!(
            "CREATE MODEL visit_cost AS TRAIN linear PREDICTING cost FROM (SELECT {FEATURES}, cost FROM visits)"
        ),
    ];
    for sql in &trainings {
        section(sql);
        let started = Instant::now();
        let out = cluster.sql(sql).await?;
        println!("{}", pretty_format_batches(&out.batches)?);
        println!(
            "trained in {:.1}s; each site sent only statistics and model updates (bytes_per_site), never rows",
            started.elapsed().as_secs_f64()
        );
        print_training_rate(cluster, sql).await?;
    }

    let ab = format!(
        "SELECT site() AS site, \
         evaluate('auc', predict_proba('readmission', {FEATURES}), readmitted) AS auc_logistic, \
         evaluate('auc', predict_proba('readmission_mlp', {FEATURES}), readmitted) AS auc_mlp, \
         compare_models('log_loss', predict_proba('readmission', {FEATURES}), \
                        predict_proba('readmission_mlp', {FEATURES}), readmitted) AS mlp_vs_logistic \
         FROM visits GROUP BY site() ORDER BY 1"
    );
    section(&ab);
    let out = cluster.sql(&ab).await?;
    println!("{}", pretty_format_batches(&out.batches)?);
    println!("{}", out.report.summary());

    let cost = format!(
        "SELECT site() AS site, round(avg(cost), 1) AS avg_cost, \
         round(avg(predict('visit_cost', {FEATURES})), 1) AS avg_predicted, \
         evaluate('r2', predict('visit_cost', {FEATURES}), cost) AS r2, \
         evaluate('mae', predict('visit_cost', {FEATURES}), cost) AS mae \
         FROM visits GROUP BY site() ORDER BY 1"
    );
    section(&cost);
    let out = cluster.sql(&cost).await?;
    println!("{}", pretty_format_batches(&out.batches)?);

    // What the sites refuse: a patient's rows. EXPLAIN shows each site's decision before
    // anything runs; running it fails with the site's reason, and the site logs it.
    let rows = format!(
        "SELECT age, bmi, glucose, prior_visits, \
         round(predict_proba('readmission', {FEATURES}), 3) AS p_readmission \
         FROM visits WHERE glucose > 200 ORDER BY glucose DESC, age LIMIT 5"
    );
    section(&format!("EXPLAIN {rows}"));
    let explain = cluster.sql(&format!("EXPLAIN {rows}")).await?;
    print_policy_lines(&explain.batches)?;
    section(&rows);
    match cluster.sql(&rows).await {
        Ok(_) => anyhow::bail!("the sites let a patient's rows out: their policy is not enforced"),
        Err(e) => println!("refused: {}", e.to_status().message()),
    }
    if let Some(line) = sites
        .iter()
        .filter_map(|site| {
            shoal_engine::worker::audit::read_all(&shoal_engine::worker::audit::default_dir(site))
                .ok()
        })
        .flatten()
        .rfind(|r| r.decision == "refused")
    {
        println!(
            "the site's audit log ({}):\n{}",
            line.site,
            serde_json::to_string(&line)?
        );
    }

    // What they allow: the same question as an aggregate over groups of enough patients.
    let bands = format!(
        "SELECT CASE WHEN glucose > 160 THEN 'over 160' WHEN glucose > 120 THEN '120-160' \
         ELSE 'up to 120' END AS glucose, count(*) AS patients, \
         round(avg(predict_proba('readmission', {FEATURES})), 3) AS p_readmission, \
         round(avg(predict('visit_cost', {FEATURES})), 0) AS expected_cost \
         FROM visits GROUP BY 1 ORDER BY 1"
    );
    section(&bands);
    let out = cluster.sql(&bands).await?;
    println!("{}", pretty_format_batches(&out.batches)?);
    println!("{}", out.report.summary());

    section("SHOW MODELS (trained versions are registered beside the shipped models)");
    let models = cluster.sql("SELECT name, size_bytes, outputs FROM shoal.models WHERE name LIKE '%@v%' ORDER BY name").await?;
    println!("{}", pretty_format_batches(&models.batches)?);
    Ok(())
}

/// Rows of local SGD per second, from the model's training metadata.
async fn print_training_rate(cluster: &EmbeddedCluster, sql: &str) -> anyhow::Result<()> {
    let name = sql.split_whitespace().nth(2).context("model name")?;
    let Some(dir) = cluster.coordinator.options().models_dir.clone() else {
        return Ok(());
    };
    let text = std::fs::read_to_string(dir.join(format!("{name}@v1.json")))?;
    let report: serde_json::Value = serde_json::from_str(&text)?;
    let rate = report["rows_per_second"].as_f64().unwrap_or(0.0);
    println!("training rate: {:.0} rows/s across the sites", rate);
    Ok(())
}

/// The per-site policy lines of an EXPLAIN.
fn print_policy_lines(batches: &[datafusion::arrow::array::RecordBatch]) -> anyhow::Result<()> {
    let mut in_policies = false;
    for batch in batches {
        let lines = batch
            .column(0)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::StringArray>()
            .context("EXPLAIN returns text")?;
        for line in lines.iter().flatten().flat_map(str::lines) {
            in_policies |= line.starts_with("Site policies");
            if in_policies {
                println!("{line}");
            }
        }
    }
    Ok(())
}
