//! Committing a sink's files on the workers that wrote them: all or nothing. A run's commit
//! is one call per site; if one fails, the sites that had committed take their part back,
//! so a run id is committed on every site that wrote or on none (as far as the sites that
//! committed can still be reached).

use super::Pipelines;
use crate::error::{Error, Result};
use crate::protocol::{
    ACTION_SINK_ABORT, ACTION_SINK_COMMIT, ACTION_SINK_ROLLBACK, ACTION_SINK_STATUS, SinkCommit,
    SinkRun,
};
use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::UInt64Type;
use shoal_operators::sink::staging::{ManifestFile, SiteManifest, is_waves_path};
use std::collections::BTreeMap;

impl Pipelines {
    /// Commits the sink's files on each worker that wrote some; if any commit fails, aborts
    /// everywhere and, for a whole run (not a wave: a wave's commits are checkpoints a
    /// resumed run keeps), takes back the sites' commits already made.
    pub(super) async fn commit(
        &self,
        run: &SinkRun,
        manifest: Vec<RecordBatch>,
        inputs: &BTreeMap<String, Vec<String>>,
    ) -> Result<Vec<ManifestFile>> {
        let mut per_site: BTreeMap<String, Vec<ManifestFile>> = BTreeMap::new();
        // A site that read inputs but wrote no rows commits too: it covered those inputs.
        for site in inputs.keys() {
            per_site.entry(site.clone()).or_default();
        }
        for batch in &manifest {
            let text = |i: usize| batch.column(i).as_string::<i32>().clone();
            let (site, file, sha) = (text(0), text(1), text(4));
            let rows = batch.column(2).as_primitive::<UInt64Type>();
            let bytes = batch.column(3).as_primitive::<UInt64Type>();
            for r in 0..batch.num_rows() {
                per_site
                    .entry(site.value(r).to_string())
                    .or_default()
                    .push(ManifestFile {
                        site: site.value(r).to_string(),
                        file: file.value(r).to_string(),
                        rows: rows.value(r),
                        bytes: bytes.value(r),
                        sha256: sha.value(r).to_string(),
                    });
            }
        }
        let whole_run = !is_waves_path(&run.path);
        let mut committed = Vec::new();
        let mut committed_sites = Vec::new();
        for (site, files) in per_site {
            let site_manifest = SiteManifest {
                run_id: run.run_id.clone(),
                path: run.path.clone(),
                files,
                inputs: inputs.get(&site).cloned().unwrap_or_default(),
            };
            let outcome = async {
                let body = SinkCommit {
                    target: run.target,
                    manifest: site_manifest.clone(),
                };
                let body = serde_json::to_vec(&body).map_err(|e| Error::Malformed {
                    what: "site manifest".into(),
                    message: e.to_string(),
                })?;
                self.workers.call(&site, ACTION_SINK_COMMIT, body).await
            }
            .await;
            if let Err(e) = outcome {
                if whole_run {
                    self.take_back(run, &committed_sites).await;
                }
                // Workers not yet committed drop their staging; the error names the site.
                let _ = self.workers.on_every_worker(ACTION_SINK_ABORT, run).await;
                return Err(Error::SinkAction {
                    action: ACTION_SINK_COMMIT.into(),
                    run_id: run.run_id.clone(),
                    worker: site,
                    source: Box::new(e),
                });
            }
            committed.extend(site_manifest.files);
            committed_sites.push(site);
        }
        Ok(committed)
    }

    /// Takes back `run` on the sites that committed it; a site that cannot is logged (the
    /// run then stays committed there, and a re-run of the id reports that site's part).
    async fn take_back(&self, run: &SinkRun, sites: &[String]) {
        let Ok(body) = serde_json::to_vec(run) else {
            return;
        };
        for site in sites {
            if let Err(e) = self
                .workers
                .call(site, ACTION_SINK_ROLLBACK, body.clone())
                .await
            {
                tracing::error!(
                    "run '{}' stays committed on site '{site}': taking it back failed: {e}",
                    run.run_id
                );
            }
        }
    }

    /// The manifests of `run` already committed on live workers.
    pub(super) async fn committed_manifests(&self, run: &SinkRun) -> Result<Vec<SiteManifest>> {
        let mut found = Vec::new();
        for reply in self
            .workers
            .ask_every_worker(ACTION_SINK_STATUS, run)
            .await?
        {
            found.extend(
                serde_json::from_slice::<Option<SiteManifest>>(&reply).map_err(|e| {
                    Error::Malformed {
                        what: format!("{ACTION_SINK_STATUS} reply"),
                        message: e.to_string(),
                    }
                })?,
            );
        }
        Ok(found)
    }
}
