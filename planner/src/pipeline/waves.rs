//! Resumable runs of map-only outputs (scan, features, predict, filter, sink): the output is
//! written in waves, each wave reading a few pending input files per site, and each site's part
//! of a wave is committed on its own with the input files it covered. The committed waves
//! are the run's checkpoints: a resumed run reads only the files no committed wave covers,
//! so every input row lands in the output exactly once.
//!
//! Only map-only outputs can be cut this way: each output row then comes from one input row,
//! and the sink runs on the site that read it. Outputs with aggregates, joins, sorts or
//! limits need every row at once and run as one unit.

use super::sink_node_of;
use crate::placement::file_key;
use crate::site_table::SiteTableProvider;
use datafusion::catalog::TableProvider;
use datafusion::catalog::default_table_source::{provider_as_source, source_as_provider};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, plan_err};
use datafusion::logical_expr::{Extension, LogicalPlan, TableScan};
use shoal_operators::sink::ParquetSinkNode;
use std::collections::BTreeSet;
use std::sync::Arc;

/// One input file of a resumable run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputFile {
    /// Checkpoint key, the same on every replica (see [`file_key`]).
    pub key: String,
    /// The site planned to read it.
    pub site: String,
    pub path: String,
    pub rows: u64,
}

/// Whether `plan` is map-only over one site table (see the module comment).
pub fn is_map_only(plan: &LogicalPlan) -> bool {
    let mut ok = true;
    let mut scans = 0;
    let _ = plan.apply(|node| {
        match node {
            LogicalPlan::Projection(_) | LogicalPlan::Filter(_) | LogicalPlan::SubqueryAlias(_) => {
            }
            LogicalPlan::TableScan(scan) => {
                scans += 1;
                ok &= site_table(scan).is_some();
            }
            LogicalPlan::Extension(_) if sink_node_of(node).is_some() => {}
            _ => ok = false,
        }
        Ok(if ok {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    });
    ok && scans == 1
}

fn site_table(scan: &TableScan) -> Option<Arc<dyn TableProvider>> {
    let provider = source_as_provider(&scan.source).ok()?;
    provider.is::<SiteTableProvider>().then_some(provider)
}

/// The input files of a map-only plan, each once, with the site planned to read it.
pub fn input_files(plan: &LogicalPlan) -> Result<Vec<InputFile>> {
    let mut files = Vec::new();
    plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && let Some(provider) = site_table(scan)
            && let Some(table) = provider.downcast_ref::<SiteTableProvider>()
        {
            files.extend(
                table
                    .cluster_table()
                    .files
                    .iter()
                    .map(|(site, f)| InputFile {
                        key: file_key(site, f),
                        site: site.to_string(),
                        path: f.path.clone(),
                        rows: f.rows,
                    }),
            );
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(files)
}

/// What a run over the sites that are up leaves out: the files of the plan's table that
/// only down sites hold (None when every file has a live holder).
pub fn not_read(plan: &LogicalPlan) -> Result<Option<crate::Coverage>> {
    let mut coverage = crate::Coverage::default();
    plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && let Some(provider) = site_table(scan)
            && let Some(table) = provider.downcast_ref::<SiteTableProvider>()
            && !table.cluster_table().lost.is_empty()
        {
            coverage.add_table(table.cluster_table());
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok((coverage.files_not_read_count > 0).then_some(coverage))
}

/// The next wave: up to `per_site` pending files of every site (so every site works, its
/// files read in parallel as in a run without waves), in path order.
pub fn next_wave(pending: &[InputFile], per_site: usize) -> Vec<InputFile> {
    let mut taken: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    let mut wave: Vec<InputFile> = pending
        .iter()
        .filter(|f| {
            let count = taken.entry(f.site.as_str()).or_default();
            *count += 1;
            *count <= per_site.max(1)
        })
        .cloned()
        .collect();
    wave.sort_by(|a, b| (&a.site, &a.path).cmp(&(&b.site, &b.path)));
    wave
}

/// `plan` reading only the files of `wave`, its sink writing to `path` under run id
/// `wave_id` (the wave's own staging and commit).
pub fn wave_plan(
    plan: &LogicalPlan,
    wave: &[InputFile],
    path: &str,
    wave_id: &str,
) -> Result<LogicalPlan> {
    let keys: BTreeSet<&str> = wave.iter().map(|f| f.key.as_str()).collect();
    let rewritten = plan.clone().transform_up(|node| match node {
        LogicalPlan::TableScan(scan) => {
            let Some(provider) = site_table(&scan) else {
                return Ok(Transformed::no(LogicalPlan::TableScan(scan)));
            };
            let Some(table) = provider.downcast_ref::<SiteTableProvider>() else {
                return Ok(Transformed::no(LogicalPlan::TableScan(scan)));
            };
            let restricted =
                table.restricted(|site, file| keys.contains(file_key(site, file).as_str()));
            let mut scan = scan.clone();
            scan.source = provider_as_source(Arc::new(restricted));
            Ok(Transformed::yes(LogicalPlan::TableScan(scan)))
        }
        LogicalPlan::Extension(_) => match sink_node_of(&node) {
            Some(sink) => {
                let retargeted = ParquetSinkNode::new(
                    sink.input.clone(),
                    path.into(),
                    wave_id.into(),
                    sink.target,
                )?;
                Ok(Transformed::yes(LogicalPlan::Extension(Extension {
                    node: Arc::new(retargeted),
                })))
            }
            None => Ok(Transformed::no(node)),
        },
        other => Ok(Transformed::no(other)),
    })?;
    if !rewritten.transformed {
        return plan_err!("the output has no site table to read in waves");
    }
    Ok(rewritten.data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(site: &str, path: &str) -> InputFile {
        InputFile {
            key: format!("{site}{path}"),
            site: site.into(),
            path: path.into(),
            rows: 1,
        }
    }

    #[test]
    fn a_wave_takes_up_to_k_pending_files_per_site() {
        let pending = vec![
            file("a", "1"),
            file("a", "2"),
            file("a", "5"),
            file("b", "3"),
            file("c", "4"),
        ];
        let paths =
            |k| -> Vec<String> { next_wave(&pending, k).into_iter().map(|f| f.path).collect() };
        assert_eq!(paths(1), ["1", "3", "4"]);
        assert_eq!(paths(2), ["1", "2", "3", "4"]);
        assert!(next_wave(&[], 2).is_empty());
    }
}
