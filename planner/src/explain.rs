//! EXPLAIN of a distributed plan: the stages, and which worker runs each scan task.

use crate::catalog::SiteCatalog;
use crate::locality::scan_site;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::error::Result;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_distributed::{DistributedLeafExec, NetworkBoundaryExt, Stage, display_plan_ascii};
use std::fmt::Write;
use std::sync::Arc;

/// The stage tree followed by the placement of every task that reads site data.
/// `models` is what the statement's model calls resolve to, for the sites' allow-lists.
pub fn explain_stages(
    plan: &Arc<dyn ExecutionPlan>,
    catalog: &SiteCatalog,
    models: &dyn crate::policy::ModelIdentity,
) -> Result<String> {
    let mut out = display_plan_ascii(plan.as_ref(), false);
    if plan.name() != "DistributedExec" {
        out.push_str("\nPlacement: runs on the coordinator alone (no site data read)\n");
        return Ok(out);
    }
    out.push_str("\nPlacement:\n  head stage: coordinator\n");
    let mut stages = Vec::new();
    plan.apply(|node| {
        if let Some(nb) = node.as_network_boundary()
            && let Stage::Local(stage) = nb.input_stage()
        {
            stages.push((stage.num, stage.tasks, stage.plan.clone()));
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    stages.sort_by_key(|(num, _, _)| *num);
    stages.dedup_by_key(|(num, _, _)| *num);
    let mut decisions = String::new();
    for (num, tasks, stage_plan) in stages {
        let mut placed = false;
        let mut sites = std::collections::BTreeSet::new();
        stage_plan.apply(|node| {
            // The stage ends at its network boundaries: below them is another stage.
            if node.is_network_boundary() {
                return Ok(TreeNodeRecursion::Jump);
            }
            let Some(leaf) = node.downcast_ref::<DistributedLeafExec>() else {
                return Ok(TreeNodeRecursion::Continue);
            };
            for (task, variant) in leaf.variants().iter().enumerate() {
                if let Some((site, config)) = scan_site(variant) {
                    let url = catalog
                        .url_of(&site)
                        .map(|u| u.to_string())
                        .unwrap_or_else(|_| "unknown".into());
                    let files: Vec<String> = config
                        .file_groups
                        .iter()
                        .flat_map(|g| g.files())
                        .map(|f| match &f.range {
                            Some(r) => {
                                format!("{}[{}..{}]", f.object_meta.location, r.start, r.end)
                            }
                            None => f.object_meta.location.to_string(),
                        })
                        .collect();
                    let _ = writeln!(
                        out,
                        "  stage {num} task {task}: worker '{site}' ({url}) scans {}",
                        files.join(", ")
                    );
                    placed = true;
                    sites.insert(site);
                }
            }
            Ok(TreeNodeRecursion::Stop)
        })?;
        if !placed {
            let _ = writeln!(
                out,
                "  stage {num}: {tasks} task(s) on live workers (no site data read; inputs arrive over the network)"
            );
        }
        for site in sites {
            let _ = writeln!(
                decisions,
                "  stage {num} on '{site}': {}",
                preview(&site, catalog, models, &stage_plan)
            );
        }
    }
    if !decisions.is_empty() {
        out.push_str(
            "\nSite policies (as each site published them; each site checks every task itself):\n",
        );
        out.push_str(&decisions);
    }
    Ok(out)
}

/// What `site`'s published policy decides for a stage's tasks there.
fn preview(
    site: &str,
    catalog: &SiteCatalog,
    models: &dyn crate::policy::ModelIdentity,
    stage: &Arc<dyn ExecutionPlan>,
) -> String {
    let Some(policy) = catalog.policy_of(site) else {
        return "no policy published (the site decides when the task arrives)".into();
    };
    match crate::policy::enforce(site, &policy, models, stage.clone()) {
        Ok((_, decision)) => {
            let guards = match decision.guarded_aggregates {
                0 => String::new(),
                n => format!("; group sizes checked on {n} aggregate(s)"),
            };
            format!("allowed ({}){guards}", decision.rules.join("; "))
        }
        Err(e) => {
            let message = e.to_string();
            format!(
                "refused: {}",
                crate::policy::refusal_text(&message).unwrap_or(&message)
            )
        }
    }
}
