//! What a query moved: Parquet bytes the sites scanned against bytes the coordinator received,
//! bytes the sites exchanged (shuffles, broadcasts), and what each site sent to whom.

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::error::Result;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_distributed::{DistributedMetricsFormat, rewrite_distributed_plan_with_metrics};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QueryReport {
    /// Parquet bytes read by the scans on the sites.
    pub bytes_scanned: u64,
    /// Bytes the coordinator received from workers (Arrow IPC over Flight).
    pub bytes_to_coordinator: u64,
    pub rows_returned: u64,
    /// Whether the query ran on workers at all (false for e.g. `SELECT 1`, `SHOW MODELS`).
    pub distributed: bool,
    pub elapsed_ms: u64,
    /// Times the query was planned again and re-run because workers were lost mid-query.
    #[serde(default)]
    pub retries: u32,
    /// The workers lost along the way, in the order they were found lost.
    #[serde(default)]
    pub lost_workers: Vec<String>,
    /// For each lost worker, when the coordinator found it lost, in ms since the
    /// statement started.
    #[serde(default)]
    pub lost_at_ms: Vec<u64>,
    /// Groups the sites' policies dropped as too small (`small_groups = "suppress"`).
    #[serde(default)]
    pub groups_suppressed: u64,
    /// Bytes workers received from other workers (Arrow IPC over Flight): shuffles and
    /// broadcasts between stages that run on the sites.
    #[serde(default)]
    pub bytes_between_sites: u64,
    /// Per site, the Arrow bytes it sent by recipient (`coordinator`, a peer site, or `next
    /// stage` for a shuffle or broadcast output), as the site's own egress gate counted
    /// them (the audit log's `sent_to`).
    #[serde(default)]
    pub sent_by_site: BTreeMap<String, BTreeMap<String, u64>>,
    /// Set when the statement answered from the sites that were up (`shoal.query.partial`)
    /// and some files were held only by sites that were down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage: Option<Coverage>,
    /// Per site that was asked for a GPU and scored on the CPU instead
    /// (`shoal.inference.device_fallback`), why.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub device_fallbacks: BTreeMap<String, Vec<String>>,
}

/// What a statement answered from the live sites did not read.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Coverage {
    /// The tables read without some of their files (each counted once, however many
    /// times the statement scans it).
    #[serde(default)]
    pub tables: std::collections::BTreeSet<String>,
    /// The down sites that held the files not read.
    pub sites_not_read: std::collections::BTreeSet<String>,
    /// `table: site/path` of the files not read (each replica's holders were all down):
    /// the first [`Coverage::LISTED_FILES`]; `files_not_read_count` counts them all.
    pub files_not_read: Vec<String>,
    #[serde(default)]
    pub files_not_read_count: u64,
    /// Rows of the files not read, and of every file of the tables read (Parquet footers;
    /// 0 for formats whose row counts are unknown until read).
    pub rows_not_read: u64,
    pub rows_total: u64,
    pub bytes_not_read: u64,
    pub bytes_total: u64,
}

impl Coverage {
    /// Files named in a report: a site down with its thousands of files must not make the
    /// report (kept on the coordinator, sent to the client) that large.
    pub const LISTED_FILES: usize = 100;

    pub fn add_table(&mut self, table: &crate::catalog::ClusterTable) {
        if !self.tables.insert(table.name.clone()) {
            return;
        }
        for lost in &table.lost {
            self.sites_not_read.extend(lost.holders.iter().cloned());
            self.files_not_read_count += 1;
            if self.files_not_read.len() < Self::LISTED_FILES {
                self.files_not_read.push(format!(
                    "{}: {}/{}",
                    table.name,
                    lost.holders.join("|"),
                    lost.file.path
                ));
            }
            self.rows_not_read += lost.file.rows;
            self.bytes_not_read += lost.file.size_bytes;
        }
        let all = table
            .files
            .iter()
            .map(|(_, f)| f)
            .chain(table.lost.iter().map(|l| &l.file));
        for file in all {
            self.rows_total += file.rows;
            self.bytes_total += file.size_bytes;
        }
    }

    /// `PARTIAL answer: not read 2 file(s) of down site(s) 'w2': 10067 of 30201 rows (33.3%)`.
    pub fn summary(&self) -> String {
        let (part, whole, unit) = if self.rows_total > 0 {
            (self.rows_not_read, self.rows_total, "rows")
        } else {
            (self.bytes_not_read, self.bytes_total, "bytes")
        };
        let share = if whole == 0 {
            0.0
        } else {
            100.0 * part as f64 / whole as f64
        };
        format!(
            "PARTIAL answer: not read {} file(s) of down site(s) '{}': {part} of {whole} {unit} \
             ({share:.1}%)",
            self.files_not_read_count,
            self.sites_not_read
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join("', '")
        )
    }
}

impl QueryReport {
    /// Reads the metrics of an executed plan; waits for the workers' metrics to arrive.
    pub async fn from_executed_plan(
        plan: Arc<dyn ExecutionPlan>,
        rows_returned: u64,
        elapsed: Duration,
    ) -> Result<Self> {
        let distributed = plan.name() == "DistributedExec";
        let plan =
            rewrite_distributed_plan_with_metrics(plan, DistributedMetricsFormat::Aggregated)
                .await?;
        let mut bytes_scanned = 0u64;
        plan.apply(|node| {
            if node.name() == "DataSourceExec" || node.name() == "DistributedLeafExec" {
                bytes_scanned += metric(node.as_ref(), "bytes_scanned");
                return Ok(TreeNodeRecursion::Jump);
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        let mut groups_suppressed = 0u64;
        plan.apply(|node| {
            if node.name() == "AggregateExec" {
                groups_suppressed += metric(node.as_ref(), "suppressed_groups");
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        let mut bytes_to_coordinator = 0u64;
        let mut bytes_between_sites = 0u64;
        plan.apply(|node| {
            // The first network boundaries under the root are where the coordinator's head
            // stage receives data; below them is worker-to-worker traffic.
            if node.name().starts_with("Network") {
                bytes_to_coordinator += metric(node.as_ref(), "bytes_transferred");
                for child in node.children() {
                    child.apply(|below| {
                        if below.name().starts_with("Network") {
                            bytes_between_sites += metric(below.as_ref(), "bytes_transferred");
                        }
                        Ok(TreeNodeRecursion::Continue)
                    })?;
                }
                return Ok(TreeNodeRecursion::Jump);
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        Ok(Self {
            bytes_scanned,
            bytes_to_coordinator,
            rows_returned,
            distributed,
            elapsed_ms: elapsed.as_millis() as u64,
            retries: 0,
            lost_workers: Vec::new(),
            lost_at_ms: Vec::new(),
            groups_suppressed,
            bytes_between_sites,
            sent_by_site: BTreeMap::new(),
            coverage: None,
            device_fallbacks: BTreeMap::new(),
        })
    }

    /// What each site says it sent (see [`QueryReport::sent_by_site`]), and where it
    /// scored on the CPU against the statement's device, why.
    pub fn set_from_sites(
        &mut self,
        sites: impl IntoIterator<Item = (String, BTreeMap<String, u64>, Vec<String>)>,
    ) {
        for (site, sent, fallbacks) in sites {
            if !sent.is_empty() {
                self.sent_by_site.insert(site.clone(), sent);
            }
            if !fallbacks.is_empty() {
                self.device_fallbacks.insert(site, fallbacks);
            }
        }
    }

    /// One line per site: `site-1 sent 1.2 KiB (coordinator 1.0 KiB, site-2 0.2 KiB)`.
    pub fn per_site_lines(&self) -> Vec<String> {
        self.sent_by_site
            .iter()
            .map(|(site, to)| {
                let parts: Vec<String> = to
                    .iter()
                    .map(|(recipient, bytes)| format!("{recipient} {}", human_bytes(*bytes)))
                    .collect();
                format!(
                    "{site} sent {} ({})",
                    human_bytes(to.values().sum()),
                    parts.join(", ")
                )
            })
            .collect()
    }

    /// One line per site that scored on the CPU though asked for a GPU:
    /// `site-2 scored on cpu: CUDA provider not available (...)`.
    pub fn device_fallback_lines(&self) -> Vec<String> {
        self.device_fallbacks
            .iter()
            .map(|(site, reasons)| format!("{site} scored on cpu: {}", reasons.join("; ")))
            .collect()
    }

    /// bytes received by the coordinator / bytes scanned on the sites.
    pub fn moved_ratio(&self) -> f64 {
        if self.bytes_scanned == 0 {
            return 0.0;
        }
        self.bytes_to_coordinator as f64 / self.bytes_scanned as f64
    }

    pub fn summary(&self) -> String {
        let mut summary = self.moved_summary();
        if let Some(coverage) = &self.coverage {
            summary.push_str("; ");
            summary.push_str(&coverage.summary());
        }
        if self.retries > 0 {
            let at: Vec<String> = self.lost_at_ms.iter().map(|ms| ms.to_string()).collect();
            summary.push_str(&format!(
                "; re-run {} time(s) after losing worker(s) '{}' (found lost at {} ms)",
                self.retries,
                self.lost_workers.join("', '"),
                at.join(", ")
            ));
        }
        for line in self.device_fallback_lines() {
            summary.push_str("; ");
            summary.push_str(&line);
        }
        if self.groups_suppressed > 0 {
            summary.push_str(&format!(
                "; {} group(s) suppressed by site policies (fewer rows than min_group_rows)",
                self.groups_suppressed
            ));
        }
        summary
    }

    fn moved_summary(&self) -> String {
        if !self.distributed {
            return format!(
                "{} row(s) in {} ms, answered by the coordinator (no site data read)",
                self.rows_returned, self.elapsed_ms
            );
        }
        let mut summary = format!(
            "{} row(s) in {} ms; scanned {} on the sites, moved {} to the coordinator ({:.3}% of scanned)",
            self.rows_returned,
            self.elapsed_ms,
            human_bytes(self.bytes_scanned),
            human_bytes(self.bytes_to_coordinator),
            100.0 * self.moved_ratio()
        );
        if self.bytes_between_sites > 0 {
            summary.push_str(&format!(
                " and {} between sites",
                human_bytes(self.bytes_between_sites)
            ));
        }
        let per_site = self.per_site_lines();
        if !per_site.is_empty() {
            summary.push_str(&format!("; by site: {}", per_site.join("; ")));
        }
        summary
    }
}

fn metric(node: &dyn ExecutionPlan, name: &str) -> u64 {
    // Summed by hand: `MetricsSet::sum_by_name` skips custom metrics such as
    // datafusion-distributed's byte counters.
    node.metrics().map_or(0, |set| {
        set.iter()
            .filter(|m| m.value().name() == name)
            .map(|m| m.value().as_usize() as u64)
            .sum()
    })
}

pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
