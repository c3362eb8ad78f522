//! The worker's egress gate: every plan fragment the worker is sent passes the site's own
//! policy before it is registered, so before a byte is read (see
//! [`shoal_planner::policy`]). A refused fragment fails with the refusal; an accepted one
//! runs with its group guards, and its root counts what it sends. Both end in one audit line.

use super::audit::{AuditLog, AuditRecord};
use super::models::RemoteModels;
use super::privacy_budget::PrivacyBudget;
use super::sent_ledger::SentLedger;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{ChildrenPropertiesMode, ExecutionPlan, ReplaceChildrenOptions};
use datafusion_distributed::BroadcastExec;
use datafusion_distributed::{
    WorkerPlanRewriteEvent, WorkerPlanRewriteEventResponse, WorkerPlanRewriteHandler,
};
use futures::StreamExt;
use parking_lot::Mutex;
use shoal_operators::ShoalOptions;
use shoal_operators::udf::model_pins::Pins;
use shoal_planner::policy::{self, GroupGuardExec, ModelIdentity, Refusal, SitePolicy};
use shoal_planner::stand_in::inner_with_children;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Clone)]
pub struct EgressGate {
    site: String,
    policy: Arc<SitePolicy>,
    audit: Arc<AuditLog>,
    budget: Arc<PrivacyBudget>,
    models: Arc<RemoteModels>,
    sent: Arc<SentLedger>,
}

impl EgressGate {
    pub fn new(
        site: String,
        policy: Arc<SitePolicy>,
        audit: Arc<AuditLog>,
        budget: Arc<PrivacyBudget>,
        models: Arc<RemoteModels>,
        sent: Arc<SentLedger>,
    ) -> Self {
        Self {
            site,
            policy,
            audit,
            budget,
            models,
            sent,
        }
    }

    /// Spends the fragment's epsilon on each noised table, or refuses it.
    fn spend(&self, decision: &policy::FragmentDecision) -> Result<f64> {
        let mut spent = 0.0;
        for (table, noise) in &decision.noise {
            spent += self.budget.spend(table, noise).map_err(|detail| Refusal {
                site: self.site.clone(),
                table: table.clone(),
                rule: "releases noisy aggregates within a budget".into(),
                detail,
                key: "noise.epsilon_budget".into(),
            })?;
        }
        Ok(spent)
    }
}

/// The statement's pinned model bytes, and the registry's names for them.
struct StatementModels<'a> {
    pins: Pins,
    registry: &'a RemoteModels,
}

impl ModelIdentity for StatementModels<'_> {
    fn pinned(&self, model: &str) -> Option<String> {
        self.pins.versions.get(model).cloned()
    }

    fn registered(&self, name: &str) -> Option<String> {
        self.registry.registered_hash(name)
    }
}

impl WorkerPlanRewriteHandler for EgressGate {
    fn rewrite_worker_plan(
        &self,
        ev: WorkerPlanRewriteEvent,
    ) -> Result<WorkerPlanRewriteEventResponse> {
        let options = ev.session_config.options();
        let statement = options
            .extensions
            .get::<ShoalOptions>()
            .map(|o| o.statement.clone())
            .unwrap_or_default();
        let identity = StatementModels {
            pins: Pins::from_config(options)?,
            registry: &self.models,
        };
        let record = AuditRecord {
            site: self.site.clone(),
            user: statement.user.clone(),
            statement: statement.key.clone(),
            digest: statement.digest.clone(),
            ..AuditRecord::default()
        };
        let checked = policy::enforce(&self.site, &self.policy, &identity, ev.plan).and_then(
            |(plan, decision)| {
                let spent = self.spend(&decision)?;
                Ok((plan, decision, spent))
            },
        );
        match checked {
            Ok((plan, decision, spent)) => {
                let record = AuditRecord {
                    decision: "ran".into(),
                    epsilon_spent: spent,
                    rule: decision.rules.join("; "),
                    tables: decision
                        .reads
                        .into_iter()
                        .map(|(t, c)| (t, c.into_iter().collect()))
                        .collect(),
                    ..record
                };
                let part = Arc::new(PartAudit {
                    record,
                    audit: self.audit.clone(),
                    sent: self.sent.clone(),
                });
                Ok(WorkerPlanRewriteEventResponse::new(audit_output(
                    plan, part,
                )?))
            }
            Err(error) => {
                let refusal = refusal_of(&error);
                let message = error.to_string();
                let reason = policy::refusal_text(&message)
                    .unwrap_or(&message)
                    .to_string();
                self.audit.append(&AuditRecord {
                    time: AuditRecord::now(),
                    decision: "refused".into(),
                    rule: refusal.map_or_else(|| "error".into(), |r| r.key.clone()),
                    reason: Some(reason.clone()),
                    tables: refusal
                        .map(|r| [(r.table.clone(), Vec::new())].into())
                        .unwrap_or_default(),
                    ..record
                });
                // Policy at work, not a fault: the audit log has it.
                tracing::info!(site = %self.site, user = %statement.user, "{reason}");
                Err(error)
            }
        }
    }
}

/// Counts what the fragment sends. datafusion-distributed replaces a fragment's root
/// `RepartitionExec` or `BroadcastExec` with the producer head it runs (recognised by type),
/// so those stay on top and what they send is counted just below them.
fn audit_output(
    plan: Arc<dyn ExecutionPlan>,
    part: Arc<PartAudit>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let producer_head = plan.downcast_ref::<RepartitionExec>().is_some()
        || plan.downcast_ref::<BroadcastExec>().is_some();
    if !producer_head {
        return Ok(AuditedRoot::wrap(plan, part));
    }
    let children: Vec<Arc<dyn ExecutionPlan>> = plan
        .children()
        .into_iter()
        .map(|child| AuditedRoot::wrap(child.clone(), part.clone()))
        .collect();
    plan.replace_children(
        children,
        ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
    )
}

fn refusal_of(error: &DataFusionError) -> Option<&Refusal> {
    match error {
        DataFusionError::External(inner) => inner.downcast_ref::<Refusal>(),
        _ => None,
    }
}

/// What one accepted fragment's audit line starts from.
#[derive(Debug)]
struct PartAudit {
    record: AuditRecord,
    audit: Arc<AuditLog>,
    /// The per-statement counts the statement's report reads.
    sent: Arc<SentLedger>,
}

/// The fragment's output, counting what it sends; stands in for the node it wraps (see
/// [`shoal_planner::stand_in`]). Its audit line is written when
/// every output partition has ended (or, for partitions never run, when the plan is
/// dropped), with the refusal a group guard raised while running, if any.
#[derive(Debug)]
struct AuditedRoot {
    inner: Arc<dyn ExecutionPlan>,
    part: Arc<PartAudit>,
    progress: Arc<Progress>,
}

#[derive(Debug, Default)]
struct Progress {
    /// Bytes by recipient (see [`AuditRecord::sent_to`]).
    sent: Mutex<std::collections::BTreeMap<String, u64>>,
    ended: AtomicU64,
    written: std::sync::atomic::AtomicBool,
    refusal: Mutex<Option<String>>,
}

impl AuditedRoot {
    fn wrap(inner: Arc<dyn ExecutionPlan>, part: Arc<PartAudit>) -> Arc<dyn ExecutionPlan> {
        Arc::new(Self {
            inner,
            part,
            progress: Arc::new(Progress::default()),
        })
    }

    fn partitions(&self) -> u64 {
        self.inner
            .properties()
            .output_partitioning()
            .partition_count() as u64
    }
}

/// Writes the line once, from whatever the fragment did so far.
fn write_line(plan: &Arc<dyn ExecutionPlan>, part: &PartAudit, progress: &Progress) {
    if progress.written.swap(true, Ordering::AcqRel) {
        return;
    }
    let mut rows_scanned = 0u64;
    let mut suppressed = 0u64;
    let _ = plan.apply(|node| {
        if node.name() == "DataSourceExec" {
            rows_scanned += node
                .metrics()
                .and_then(|m| m.output_rows())
                .unwrap_or_default() as u64;
        }
        if let Some(guard) = node.downcast_ref::<GroupGuardExec>() {
            suppressed += guard.suppressed_groups() as u64;
        }
        Ok(TreeNodeRecursion::Continue)
    });
    let refusal = progress.refusal.lock().clone();
    let sent_to = progress.sent.lock().clone();
    let mut record = AuditRecord {
        time: AuditRecord::now(),
        rows_scanned,
        bytes_sent: sent_to.values().sum(),
        sent_to,
        groups_suppressed: suppressed,
        ..part.record.clone()
    };
    if let Some(reason) = refusal {
        record.decision = "refused".into();
        record.rule = policy_key(&reason).unwrap_or("policy").to_string();
        record.reason = Some(reason);
    }
    part.audit.append(&record);
}

/// The policy key a refusal message names: `... (policy min_group_rows); ...`.
fn policy_key(message: &str) -> Option<&str> {
    let start = message.find("(policy ")? + "(policy ".len();
    let end = message[start..].find(')')?;
    Some(&message[start..start + end])
}

/// Counts one partition's end, however it ends; the last writes the line.
struct PartitionEnd {
    plan: Arc<dyn ExecutionPlan>,
    part: Arc<PartAudit>,
    progress: Arc<Progress>,
    partitions: u64,
}

impl Drop for PartitionEnd {
    fn drop(&mut self) {
        if self.progress.ended.fetch_add(1, Ordering::AcqRel) + 1 >= self.partitions {
            write_line(&self.plan, &self.part, &self.progress);
        }
    }
}

impl Drop for AuditedRoot {
    fn drop(&mut self) {
        // Only if something ran: a plan dropped unexecuted (a rewrite along the way) says
        // nothing.
        if self.progress.ended.load(Ordering::Acquire) > 0 {
            write_line(&self.inner, &self.part, &self.progress);
        }
    }
}

shoal_planner::display_as_stood_in!(AuditedRoot, inner);

impl ExecutionPlan for AuditedRoot {
    shoal_planner::stand_in_for!(inner);

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(Self {
            inner: inner_with_children(&self.inner, children)?,
            part: self.part.clone(),
            progress: self.progress.clone(),
        }))
    }

    fn metrics(&self) -> Option<datafusion::physical_plan::metrics::MetricsSet> {
        self.inner.metrics()
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let end = PartitionEnd {
            plan: self.inner.clone(),
            part: self.part.clone(),
            progress: self.progress.clone(),
            partitions: self.partitions(),
        };
        // Who asked for this partition: the site's gate names the caller of the request
        // being handled.
        let recipient = crate::security::current_caller()
            .unwrap_or_else(|| super::audit::NEXT_STAGE.to_string());
        let stream = self.inner.execute(partition, context)?;
        let schema = stream.schema();
        let counted = stream.inspect(move |batch| {
            let progress = &end.progress;
            match batch {
                Ok(batch) => {
                    let bytes = batch.get_array_memory_size() as u64;
                    *progress.sent.lock().entry(recipient.clone()).or_default() += bytes;
                    let part = &end.part;
                    part.sent.add(&part.record.statement, &recipient, bytes);
                }
                Err(e) => {
                    let message = e.to_string();
                    if let Some(refusal) = policy::refusal_text(&message) {
                        progress.refusal.lock().get_or_insert(refusal.to_string());
                    }
                }
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, counted)))
    }
}
