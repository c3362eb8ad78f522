//! Data locality on top of datafusion-distributed's hooks: a scan task per site, reading
//! only that site's files, routed to that site's worker. Never round-robin for scans.
//!
//! File naming: the catalog scan lists files as `shoal://cluster/<site>/<path>`. When a
//! stage is split into tasks, each task's scan is rewritten to `shoal://<site>/<path>`; each
//! worker registers only its own `shoal://<its name>` store (rooted at its data folder), so
//! a misrouted task fails loudly rather than reading another site's data.

use crate::catalog::SiteCatalog;
use crate::error::Error;
use async_trait::async_trait;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, internal_err};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_distributed::{
    DesiredTaskCountEvent, DesiredTaskCountEventResponse, DesiredTaskCountHandler,
    DistributedLeafExec, RouteTasksEvent, RouteTasksEventResponse, RouteTasksHandler,
    ScaleUpLeafNodeEvent, ScaleUpLeafNodeEventResponse, ScaleUpLeafNodeHandler, WorkerResolver,
};
use object_store::path::Path as StorePath;
use std::collections::BTreeMap;
use std::sync::Arc;
use url::Url;

/// Store URL of catalog scans before they are split per site.
pub const CLUSTER_STORE: &str = "shoal://cluster";

/// Store URL a worker serves its own data folder under.
pub fn site_store_url(site: &str) -> String {
    format!("shoal://{site}")
}

/// The site a per-site scan reads from, if `plan` is one.
pub fn scan_site(plan: &Arc<dyn ExecutionPlan>) -> Option<(String, &FileScanConfig)> {
    let config = file_scan(plan)?;
    let url = Url::parse(config.object_store_url.as_str()).ok()?;
    if url.scheme() != "shoal" {
        return None;
    }
    let host = url.host_str()?;
    (host != "cluster").then(|| (host.to_string(), config))
}

fn file_scan(plan: &Arc<dyn ExecutionPlan>) -> Option<&FileScanConfig> {
    plan.downcast_ref::<DataSourceExec>()?
        .data_source()
        .downcast_ref::<FileScanConfig>()
}

fn cluster_scan(plan: &Arc<dyn ExecutionPlan>) -> Option<&FileScanConfig> {
    file_scan(plan).filter(|c| c.object_store_url.as_str().trim_end_matches('/') == CLUSTER_STORE)
}

/// Splits `shoal://cluster/<site>/<path>` files by site, keeping `<path>`.
fn files_by_site(config: &FileScanConfig) -> BTreeMap<String, Vec<PartitionedFile>> {
    let mut out: BTreeMap<String, Vec<PartitionedFile>> = BTreeMap::new();
    for file in config.file_groups.iter().flat_map(|g| g.files()) {
        let mut parts = file.object_meta.location.parts();
        let Some(site) = parts.next() else { continue };
        let mut local = file.clone();
        local.object_meta.location = StorePath::from_iter(parts);
        out.entry(site.as_ref().to_string())
            .or_default()
            .push(local);
    }
    out
}

/// The hooks, holding the catalog they route by.
#[derive(Debug, Clone)]
pub struct SiteLocality {
    catalog: Arc<SiteCatalog>,
}

impl SiteLocality {
    pub fn new(catalog: Arc<SiteCatalog>) -> Self {
        Self { catalog }
    }
}

#[async_trait]
impl DesiredTaskCountHandler for SiteLocality {
    async fn handle(
        &self,
        ev: DesiredTaskCountEvent<'_>,
    ) -> Option<Result<DesiredTaskCountEventResponse>> {
        let config = cluster_scan(ev.plan)?;
        // At least two tasks: with one, datafusion-distributed would run the scan on the
        // coordinator, which holds no data.
        let sites = files_by_site(config).len().max(2);
        Some(Ok(DesiredTaskCountEventResponse::desired(sites)))
    }
}

impl ScaleUpLeafNodeHandler for SiteLocality {
    fn handle(&self, ev: ScaleUpLeafNodeEvent) -> Option<Result<ScaleUpLeafNodeEventResponse>> {
        let config = cluster_scan(ev.plan)?;
        let target_partitions = ev.session_config.target_partitions();
        Some((|| {
            let tasks = assign_tasks(files_by_site(config), ev.task_count)?;
            // datafusion-distributed needs every task's variant to have the same partition
            // count; a site with fewer files (or byte ranges) than another gets empty groups.
            let partitions = tasks
                .iter()
                .map(|(_, files)| files.len().clamp(1, target_partitions.max(1)))
                .max()
                .unwrap_or(1);
            let variants = tasks
                .into_iter()
                .map(|(site, files)| {
                    let mut per_site = config.clone();
                    per_site.object_store_url = ObjectStoreUrl::parse(site_store_url(&site))?;
                    per_site.file_groups = spread(files, partitions);
                    Ok(DataSourceExec::from_data_source(per_site) as Arc<dyn ExecutionPlan>)
                })
                .collect::<Result<Vec<_>>>()?;
            let leaf = DistributedLeafExec::try_new(Arc::clone(ev.plan), variants)?;
            Ok(ScaleUpLeafNodeEventResponse::new(Arc::new(leaf)))
        })())
    }
}

impl RouteTasksHandler for SiteLocality {
    fn handle(&self, ev: RouteTasksEvent) -> Option<Result<RouteTasksEventResponse>> {
        let sites = stage_sites(ev.plan).ok()??;
        Some((|| {
            if sites.len() != ev.task_count {
                return internal_err!(
                    "stage has {} tasks but its scan has {} site variants",
                    ev.task_count,
                    sites.len()
                );
            }
            let urls = sites
                .iter()
                .map(|site| self.catalog.url_of(site).map_err(Into::into))
                .collect::<Result<Vec<_>>>()?;
            Ok(RouteTasksEventResponse::new(urls))
        })())
    }
}

/// The site of each task of the stage headed by `plan`, when the stage scans site files.
pub fn stage_sites(plan: &Arc<dyn ExecutionPlan>) -> Result<Option<Vec<String>>> {
    let mut found = None;
    plan.apply(|node| {
        if let Some(leaf) = node.downcast_ref::<DistributedLeafExec>()
            && cluster_scan(leaf.original()).is_some()
        {
            found = Some(
                leaf.variants()
                    .iter()
                    .filter_map(|v| scan_site(v).map(|(site, _)| site))
                    .collect(),
            );
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(found)
}

/// Gives every site at least one task and spreads extra tasks over the largest sites,
/// splitting their files (by byte range when a site has fewer files than tasks: Parquet
/// row groups are read by the range holding their midpoint, so no row is read twice).
fn assign_tasks(
    by_site: BTreeMap<String, Vec<PartitionedFile>>,
    task_count: usize,
) -> Result<Vec<(String, Vec<PartitionedFile>)>> {
    if task_count < by_site.len() {
        return Err(
            datafusion::error::DataFusionError::External(Box::new(Error::NoWorkers)).context(
                format!(
                    "{} site(s) hold the table's files but only {task_count} task(s) are available",
                    by_site.len()
                ),
            ),
        );
    }
    let bytes = |files: &[PartitionedFile]| files.iter().map(|f| f.object_meta.size).sum::<u64>();
    let mut shares: Vec<(String, Vec<PartitionedFile>, usize)> =
        by_site.into_iter().map(|(s, f)| (s, f, 1)).collect();
    let mut extra = task_count - shares.len();
    while extra > 0 && !shares.is_empty() {
        let busiest = (0..shares.len())
            .max_by_key(|&i| bytes(&shares[i].1) / shares[i].2 as u64)
            .unwrap_or(0);
        shares[busiest].2 += 1;
        extra -= 1;
    }
    let mut tasks = Vec::with_capacity(task_count);
    for (site, files, k) in shares {
        for group in split_files(files, k) {
            tasks.push((site.clone(), group));
        }
    }
    Ok(tasks)
}

fn split_files(files: Vec<PartitionedFile>, k: usize) -> Vec<Vec<PartitionedFile>> {
    let mut units = files;
    if units.len() < k {
        let pieces = k.div_ceil(units.len().max(1));
        units = units
            .into_iter()
            .flat_map(|f| {
                let size = f.object_meta.size as i64;
                let step = (size / pieces as i64).max(1);
                (0..pieces).map(move |i| {
                    let start = i as i64 * step;
                    let end = if i + 1 == pieces {
                        size
                    } else {
                        (start + step).min(size)
                    };
                    f.clone().with_range(start, end)
                })
            })
            .collect();
    }
    let mut buckets: Vec<(u64, Vec<PartitionedFile>)> = (0..k).map(|_| (0, Vec::new())).collect();
    units.sort_by_key(|f| std::cmp::Reverse(unit_bytes(f)));
    for unit in units {
        if let Some(bucket) = buckets.iter_mut().min_by_key(|(load, _)| *load) {
            bucket.0 += unit_bytes(&unit);
            bucket.1.push(unit);
        }
    }
    buckets.into_iter().map(|(_, files)| files).collect()
}

fn unit_bytes(f: &PartitionedFile) -> u64 {
    match &f.range {
        Some(r) => (r.end - r.start).max(0) as u64,
        None => f.object_meta.size,
    }
}

/// Spreads one task's files round-robin over exactly `partitions` groups (the worker reads
/// them in parallel); groups beyond the file count stay empty.
fn spread(files: Vec<PartitionedFile>, partitions: usize) -> Vec<FileGroup> {
    let n = partitions.max(1);
    let mut groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); n];
    for (i, f) in files.into_iter().enumerate() {
        groups[i % n].push(f);
    }
    groups.into_iter().map(FileGroup::new).collect()
}

/// Workers the planner may use: the live sites. Repeats a lone worker so a one-site cluster
/// still runs its scans on the site (two tasks) rather than on the coordinator.
#[derive(Debug, Clone)]
pub struct CatalogWorkerResolver {
    catalog: Arc<SiteCatalog>,
}

impl CatalogWorkerResolver {
    pub fn new(catalog: Arc<SiteCatalog>) -> Self {
        Self { catalog }
    }
}

impl WorkerResolver for CatalogWorkerResolver {
    fn get_urls(&self) -> Result<Vec<Url>> {
        let mut urls = self.catalog.live_urls();
        match urls.len() {
            // Nothing to distribute to: datafusion-distributed then plans one task, which
            // runs on the coordinator. Only queries that read no site data (SELECT 1,
            // SHOW MODELS) can be planned then: site tables exist only once workers report.
            0 => Ok(urls),
            1 => {
                urls.push(urls[0].clone());
                Ok(urls)
            }
            _ => Ok(urls),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, size: u64) -> PartitionedFile {
        PartitionedFile::new(path.to_string(), size)
    }

    #[test]
    fn every_site_gets_a_task_and_extra_tasks_split_the_largest() {
        let mut by_site = BTreeMap::new();
        by_site.insert("a".to_string(), vec![file("t/1.parquet", 100)]);
        by_site.insert(
            "b".to_string(),
            vec![file("t/2.parquet", 10), file("t/3.parquet", 10)],
        );
        let tasks = assign_tasks(by_site, 3).unwrap();
        let sites: Vec<&str> = tasks.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(sites, ["a", "a", "b"]);
        // Site a's single file is split into two byte ranges covering it exactly.
        let ranges: Vec<(i64, i64)> = tasks[..2]
            .iter()
            .map(|(_, f)| {
                let r = f[0].range.clone().unwrap();
                (r.start, r.end)
            })
            .collect();
        assert_eq!(ranges, [(0, 50), (50, 100)]);
        assert_eq!(tasks[2].1.len(), 2);
    }

    #[test]
    fn spread_gives_every_task_the_same_partition_count() {
        let groups = spread(vec![file("a/1.parquet", 10)], 2);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].files().len(), 1);
        assert!(groups[1].files().is_empty());
        let groups = spread((0..5).map(|i| file(&format!("b/{i}"), 1)).collect(), 2);
        let sizes: Vec<usize> = groups.iter().map(|g| g.files().len()).collect();
        assert_eq!(sizes, vec![3, 2]);
    }

    #[test]
    fn too_few_tasks_for_the_sites_is_an_error() {
        let mut by_site = BTreeMap::new();
        by_site.insert("a".to_string(), vec![file("x", 1)]);
        by_site.insert("b".to_string(), vec![file("y", 1)]);
        assert!(assign_tasks(by_site, 1).is_err());
    }

    #[test]
    fn cluster_paths_are_split_by_site() {
        let source = Arc::new(datafusion::datasource::physical_plan::ParquetSource::new(
            Arc::new(datafusion::arrow::datatypes::Schema::empty()),
        ));
        let config = datafusion::datasource::physical_plan::FileScanConfigBuilder::new(
            ObjectStoreUrl::parse(CLUSTER_STORE).unwrap(),
            source,
        )
        .with_file_groups(vec![FileGroup::new(vec![
            file("w1/t/a.parquet", 1),
            file("w2/t/b.parquet", 1),
        ])])
        .build();
        let by_site = files_by_site(&config);
        assert_eq!(
            by_site["w1"][0].object_meta.location.as_ref(),
            "t/a.parquet"
        );
        assert_eq!(
            by_site["w2"][0].object_meta.location.as_ref(),
            "t/b.parquet"
        );
    }
}
