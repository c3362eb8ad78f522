//! The check a site runs on every plan fragment before it reads a byte: which of its tables
//! the fragment reads, where their rows and columns go, and whether what comes out of the
//! fragment (what leaves the site) is allowed by the site's rules.
//!
//! It follows the fragment bottom-up and keeps, for every column of every node, where its
//! values come from ([`Source`]: table, column, and whether they are raw, model outputs,
//! group keys or aggregates), and for every node whose rows are still one-per-row of which
//! tables. Operators it does not know are treated conservatively: each output column is
//! taken to carry every input column of the same name, or every input column if none has
//! its name. The aggregates that turn a restricted table's rows into groups get a
//! [`GroupGuardExec`](super::GroupGuardExec) that checks each group's size as it is
//! produced.

use super::guard::{GroupGuardExec, GroupRule, NoisePlan};
use super::lineage::{
    Node, Origin, Source, Via, bare_column, by_name, by_name_node, by_position, leaving_columns,
    model_call, multiplies_rows, released, releases_no_value,
};
use super::refusal::Refusal;
use super::rules::{Egress, Noise, SitePolicy, SmallGroups, TableRules};
use crate::locality::scan_site;
use datafusion::error::{DataFusionError, Result};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::ScalarFunctionExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateInputMode};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::union::{InterleaveExec, UnionExec};
use datafusion::physical_plan::{ChildrenPropertiesMode, ExecutionPlan, ReplaceChildrenOptions};
use datafusion_distributed::{DistributedLeafExec, NetworkBoundaryExt};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// What a site learned about a fragment it accepted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FragmentDecision {
    /// Table -> the columns the fragment reads from it.
    pub reads: BTreeMap<String, BTreeSet<String>>,
    /// One line per table read: its egress and what holds it (e.g. "aggregates:
    /// min_group_rows 10, refuse").
    pub rules: Vec<String>,
    /// Aggregates that got a group-size guard.
    pub guarded_aggregates: usize,
    /// Tables whose aggregates this fragment releases with noise: each spends its
    /// `epsilon_per_statement` from the site's budget before the fragment runs.
    pub noise: BTreeMap<String, Noise>,
}

/// Which bytes a statement's models are, to match a table's `models` allow-list.
pub trait ModelIdentity {
    /// Content sha256 of `model` as this fragment will run it (the statement's pin).
    fn pinned(&self, model: &str) -> Option<String>;
    /// Content sha256 the registry lists under `name` (e.g. `name@v3`).
    fn registered(&self, name: &str) -> Option<String>;
}

/// A registry listing as the coordinator has it: a statement calling `m` runs the bytes
/// the registry lists under `m` (what `EXPLAIN` previews with).
#[derive(Debug, Clone, Default)]
pub struct ListedModels(pub Vec<shoal_operators::model::ModelInfo>);

impl ModelIdentity for ListedModels {
    fn pinned(&self, model: &str) -> Option<String> {
        self.registered(model)
    }

    fn registered(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.hash.clone())
    }
}

impl ModelIdentity for () {
    fn pinned(&self, _model: &str) -> Option<String> {
        None
    }

    fn registered(&self, _name: &str) -> Option<String> {
        None
    }
}

/// Checks `plan` against `policy` and returns it with group guards in place.
pub fn enforce(
    site: &str,
    policy: &SitePolicy,
    models: &dyn ModelIdentity,
    plan: Arc<dyn ExecutionPlan>,
) -> Result<(Arc<dyn ExecutionPlan>, FragmentDecision)> {
    let mut walk = Walk {
        site,
        policy,
        models,
        decision: FragmentDecision::default(),
    };
    let node = walk.visit(plan)?;
    walk.check_egress(&node)?;
    let mut decision = walk.decision;
    decision.rules = decision
        .reads
        .keys()
        .map(|table| describe_rules(table, policy.table(table)))
        .collect();
    Ok((node.plan, decision))
}

fn describe_rules(table: &str, rules: &TableRules) -> String {
    let noise = rules.noise.as_ref().map_or(String::new(), |n| {
        format!(
            ", noise epsilon {} per statement of {} per {}",
            n.epsilon_per_statement,
            n.epsilon_budget,
            humantime::format_duration(n.budget_window)
        )
    });
    let rules_text = match rules.egress {
        Egress::Rows if rules.never_leave.is_empty() => format!("{table}: rows"),
        Egress::Rows => format!(
            "{table}: rows, never_leave {:?}",
            rules.never_leave.iter().collect::<Vec<_>>()
        ),
        egress => format!(
            "{table}: {egress}, min_group_rows {} ({})",
            rules.min_group_rows,
            match rules.small_groups {
                SmallGroups::Refuse => "refuse",
                SmallGroups::Suppress => "suppress",
            }
        ),
    };
    rules_text + &noise
}

struct Walk<'a> {
    site: &'a str,
    policy: &'a SitePolicy,
    models: &'a dyn ModelIdentity,
    decision: FragmentDecision,
}

impl Walk<'_> {
    fn restricted(&self, table: &str) -> bool {
        self.policy.table(table).egress != Egress::Rows
    }

    fn refuse(&self, table: &str, key: &str, detail: String) -> DataFusionError {
        let rules = self.policy.table(table);
        let rule = match (key, rules.egress) {
            ("never_leave", _) => "keeps some columns on the site".to_string(),
            ("models", _) => "allows only listed models".to_string(),
            (_, Egress::Aggregates) => "is aggregates-only".to_string(),
            (_, Egress::Predictions) => "releases only predictions".to_string(),
            (_, Egress::Rows) => "releases rows".to_string(),
        };
        Refusal {
            site: self.site.to_string(),
            table: table.to_string(),
            rule,
            detail,
            key: key.to_string(),
        }
        .into()
    }

    fn visit(&mut self, plan: Arc<dyn ExecutionPlan>) -> Result<Node> {
        if plan.is_network_boundary() {
            // Another stage's output: checked by the sites that produced it.
            return Ok(Node {
                columns: vec![Origin::new(); plan.schema().fields().len()],
                plan,
                rows_from: BTreeSet::new(),
                joined: false,
            });
        }
        if let Some(leaf) = plan.downcast_ref::<DistributedLeafExec>() {
            // The coordinator's view of a stage (EXPLAIN): one scan per task; this site's.
            let variants = leaf.variants();
            let mine = variants
                .iter()
                .find(|v| scan_site(v).is_some_and(|(site, _)| site == self.site))
                .or_else(|| variants.first())
                .cloned();
            if let Some(variant) = mine {
                let node = self.visit(variant)?;
                return Ok(Node { plan, ..node });
            }
        }
        let children: Vec<Node> = plan
            .children()
            .into_iter()
            .map(|child| self.visit(child.clone()))
            .collect::<Result<_>>()?;
        let changed = children
            .iter()
            .zip(plan.children())
            .any(|(new, old)| !Arc::ptr_eq(&new.plan, old));
        let plan = if changed {
            plan.replace_children(
                children.iter().map(|c| c.plan.clone()).collect(),
                ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
            )?
        } else {
            plan
        };
        if let Some((_, config)) = scan_site(&plan) {
            return self.scan(plan.clone(), config);
        }
        if plan.downcast_ref::<AggregateExec>().is_some() {
            return self.aggregate(plan, children);
        }
        let joined = children.iter().any(|c| c.joined) || multiplies_rows(&plan, &children);
        let rows_from = children
            .iter()
            .flat_map(|c| c.rows_from.iter().cloned())
            .collect();
        let columns = if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
            let input = &children[0].columns;
            projection
                .expr()
                .iter()
                .map(|p| self.expression(&p.expr, input))
                .collect::<Result<_>>()?
        } else if let Some(filter) = plan.downcast_ref::<FilterExec>() {
            let input = &children[0].columns;
            match filter.projection() {
                Some(indices) => indices.iter().map(|i| input[*i].clone()).collect(),
                None => input.clone(),
            }
        } else if plan.downcast_ref::<UnionExec>().is_some()
            || plan.downcast_ref::<InterleaveExec>().is_some()
        {
            by_position(plan.schema().fields().len(), &children)
        } else if plan.name() == "ParquetSinkExec" {
            // Rows written to the site's own disk stay on the site; what leaves is the
            // count of rows written, per file.
            return Ok(Node {
                columns: vec![Origin::new(); plan.schema().fields().len()],
                plan,
                rows_from: BTreeSet::new(),
                joined: false,
            });
        } else {
            by_name(&plan, &children)
        };
        Ok(Node {
            plan,
            columns,
            rows_from,
            joined,
        })
    }

    fn scan(
        &mut self,
        plan: Arc<dyn ExecutionPlan>,
        config: &datafusion::datasource::physical_plan::FileScanConfig,
    ) -> Result<Node> {
        let tables: BTreeSet<String> = config
            .file_groups
            .iter()
            .flat_map(|g| g.files())
            .filter_map(|f| f.object_meta.location.parts().next())
            .map(|part| part.as_ref().to_string())
            .collect();
        // What each output column is made of: the scan may compute expressions of the file's
        // columns itself (DataFusion pushes projections, model calls included, into scans).
        let file_schema = config.file_source().table_schema().table_schema().clone();
        let file_columns: Vec<Origin> = file_schema
            .fields()
            .iter()
            .map(|field| {
                tables
                    .iter()
                    .map(|table| Source {
                        table: table.clone(),
                        column: field.name().clone(),
                        via: Via::Raw,
                    })
                    .collect()
            })
            .collect();
        let columns: Vec<Origin> = match config.file_source().projection() {
            Some(projection) => projection
                .iter()
                .map(|p| self.expression(&p.expr, &file_columns))
                .collect::<Result<_>>()?,
            None => file_columns,
        };
        for table in &tables {
            let read = self.decision.reads.entry(table.clone()).or_default();
            read.extend(columns.iter().flatten().map(|s| s.column.clone()));
        }
        // A shape this check does not follow: every output column carries every column.
        let columns = if columns.len() == plan.schema().fields().len() {
            columns
        } else {
            let all: Origin = columns.into_iter().flatten().collect();
            vec![all; plan.schema().fields().len()]
        };
        Ok(Node {
            plan,
            columns,
            rows_from: tables,
            joined: false,
        })
    }

    /// Where an expression's value comes from; checks the models it calls.
    fn expression(&self, expr: &Arc<dyn PhysicalExpr>, input: &[Origin]) -> Result<Origin> {
        if let Some(column) = expr.downcast_ref::<Column>() {
            return Ok(input.get(column.index()).cloned().unwrap_or_default());
        }
        if let Some(function) = expr.downcast_ref::<ScalarFunctionExpr>()
            && let Some(model) = model_call(function)
        {
            let mut origin = Origin::new();
            for arg in function.args().iter().skip(1) {
                for source in self.expression(arg, input)? {
                    self.check_model(&source.table, &model)?;
                    origin.insert(match source.via {
                        Via::Raw => Source {
                            via: Via::Model(model.clone()),
                            ..source
                        },
                        _ => source,
                    });
                }
            }
            return Ok(origin);
        }
        let mut origin = Origin::new();
        for child in expr.children() {
            origin.extend(self.expression(child, input)?);
        }
        Ok(origin)
    }

    fn check_model(&self, table: &str, model: &str) -> Result<()> {
        let rules = self.policy.table(table);
        let sha256 = self.models.pinned(model);
        if rules.allows_model(model, sha256.as_deref(), &|name| {
            self.models.registered(name)
        }) {
            return Ok(());
        }
        Err(self.refuse(
            table,
            "models",
            format!(
                "model '{model}' is not in its allow-list {:?}",
                rules.models.clone().unwrap_or_default()
            ),
        ))
    }

    fn aggregate(&mut self, plan: Arc<dyn ExecutionPlan>, children: Vec<Node>) -> Result<Node> {
        let planned = plan.clone();
        let Some(aggregate) = planned.downcast_ref::<AggregateExec>() else {
            return Ok(by_name_node(plan, &children));
        };
        let input = &children[0];
        let restricted: Vec<String> = input
            .rows_from
            .iter()
            .filter(|t| self.restricted(t))
            .cloned()
            .collect();
        let group_by = aggregate.group_expr();
        let mut columns: Vec<Origin> = Vec::new();
        for (expr, _) in group_by.expr() {
            let origin = self.expression(expr, &input.columns)?;
            self.never_leave(&origin, "in a GROUP BY key")?;
            columns.push(released(origin, Via::GroupKey));
        }
        if group_by.has_grouping_set() {
            columns.push(Origin::new());
        }
        let partial_output = matches!(
            aggregate.mode().output_mode(),
            datafusion::physical_plan::aggregates::AggregateOutputMode::Partial
        );
        for function in aggregate.aggr_expr() {
            let mut origin = Origin::new();
            for arg in function.expressions() {
                origin.extend(self.expression(&arg, &input.columns)?);
            }
            self.never_leave(&origin, &format!("inside {}()", function.fun().name()))?;
            if let Some(table) = origin
                .iter()
                .find(|s| matches!(s.via, Via::Raw | Via::Model(_)) && self.restricted(&s.table))
            {
                let name = function.fun().name().to_ascii_lowercase();
                if !releases_no_value(&name) {
                    return Err(self.refuse(
                        &table.table,
                        "egress",
                        format!(
                            "{name}() returns a row's value (allowed: count, sum, avg, var, stddev, \
                             covar, corr, regr_*, evaluate, compare_models)"
                        ),
                    ));
                }
                if function.is_distinct() {
                    return Err(self.refuse(
                        &table.table,
                        "egress",
                        format!("{name}(DISTINCT ...) sends the distinct values themselves"),
                    ));
                }
            }
            let fields = if partial_output {
                function.state_fields()?.len()
            } else {
                1
            };
            let origin = released(origin, Via::Aggregate);
            columns.extend(std::iter::repeat_n(origin, fields));
        }
        if columns.len() != plan.schema().fields().len() {
            // An aggregate shape this check does not know: every column carries every input.
            let all: Origin = input.columns.iter().flatten().cloned().collect();
            columns = vec![released(all, Via::Aggregate); plan.schema().fields().len()];
        }
        let mut plan = plan;
        if let Some(table) = self.strictest(&restricted) {
            if aggregate.mode().input_mode() != AggregateInputMode::Raw {
                return Err(self.refuse(
                    &table,
                    "egress",
                    "its rows reach an aggregate that merges states, not rows".into(),
                ));
            }
            if input.joined {
                return Err(self.refuse(
                    &table,
                    "min_group_rows",
                    "an aggregate over a join, union or unnest on the site cannot count the table's own rows \
                     per group"
                        .into(),
                ));
            }
            let rules = self.policy.table(&table);
            let noise = match &rules.noise {
                Some(noise) => {
                    let plan = self.noise_plan(aggregate, &input.columns, &table, noise)?;
                    self.decision.noise.insert(table.clone(), noise.clone());
                    Some(plan)
                }
                None => None,
            };
            let rule = GroupRule {
                noise,
                site: self.site.to_string(),
                table: table.clone(),
                min_rows: restricted
                    .iter()
                    .map(|t| self.policy.table(t).min_group_rows)
                    .max()
                    .unwrap_or(rules.min_group_rows),
                small_groups: if restricted
                    .iter()
                    .any(|t| self.policy.table(t).small_groups == SmallGroups::Refuse)
                {
                    SmallGroups::Refuse
                } else {
                    SmallGroups::Suppress
                },
            };
            plan = GroupGuardExec::wrap(plan, rule)?;
            self.decision.guarded_aggregates += 1;
        }
        Ok(Node {
            plan,
            columns,
            rows_from: BTreeSet::new(),
            joined: false,
        })
    }

    /// How an aggregate over `table` is released under its `noise`: which input columns
    /// are clamped to their bounds, which output columns get noise and of what
    /// sensitivity. Only count, sum and avg have a noisy form here.
    fn noise_plan(
        &self,
        aggregate: &AggregateExec,
        input: &[Origin],
        table: &str,
        noise: &Noise,
    ) -> Result<NoisePlan> {
        let rules = self.policy.table(table);
        let refuse = |detail: String| self.refuse(table, "noise", detail);
        if aggregate.group_expr().has_grouping_set() {
            return Err(refuse(
                "GROUPING SETS, ROLLUP and CUBE count a row in several groups; under noise \
                 group by plain keys"
                    .into(),
            ));
        }
        if !matches!(
            aggregate.mode().output_mode(),
            datafusion::physical_plan::aggregates::AggregateOutputMode::Partial
        ) {
            return Err(refuse(
                "the aggregate would be finished on the site; noise is added to partial \
                 aggregates"
                    .into(),
            ));
        }
        let mut plan = NoisePlan {
            epsilon: noise.epsilon_per_statement,
            clamps: BTreeMap::new(),
            releases: Vec::new(),
        };
        let mut column = aggregate.group_expr().num_group_exprs();
        for function in aggregate.aggr_expr() {
            let name = function.fun().name().to_ascii_lowercase();
            let states = function.state_fields()?;
            let sensitivity = match name.as_str() {
                "count" => 1.0,
                "sum" | "avg" | "mean" => {
                    let args = function.expressions();
                    let index = match args.as_slice() {
                        [arg] => bare_column(arg),
                        _ => None,
                    };
                    let source = index.and_then(|i| {
                        let origin = input.get(i)?;
                        let source = origin.iter().next()?;
                        (origin.len() == 1 && source.via == Via::Raw && source.table == table)
                            .then(|| (i, source.column.clone()))
                    });
                    let Some((index, column_name)) = source else {
                        return Err(refuse(format!(
                            "{name}() under noise takes one column of the table (with bounds), \
                             not an expression"
                        )));
                    };
                    let Some((low, high)) = rules.bounds.get(&column_name).copied() else {
                        return Err(self.refuse(
                            table,
                            "bounds",
                            format!(
                                "{name}({column_name}) under noise needs clamping bounds for \
                                 column '{column_name}'"
                            ),
                        ));
                    };
                    plan.clamps.insert(index, (low, high));
                    low.abs().max(high.abs())
                }
                other => {
                    return Err(refuse(format!(
                        "{other}() has no noisy form here; under noise the table releases \
                         count, sum and avg"
                    )));
                }
            };
            for (k, field) in states.iter().enumerate() {
                let is_count = name == "count" || field.name().ends_with("[count]");
                plan.releases.push((
                    column + k,
                    if is_count { 1.0 } else { sensitivity },
                    is_count,
                ));
            }
            column += states.len();
        }
        Ok(plan)
    }

    /// The restricted table with the largest `min_group_rows` (its rule names the guard).
    fn strictest(&self, tables: &[String]) -> Option<String> {
        tables
            .iter()
            .max_by_key(|t| self.policy.table(t).min_group_rows)
            .cloned()
    }

    fn never_leave(&self, origin: &Origin, place: &str) -> Result<()> {
        for source in origin {
            if self
                .policy
                .table(&source.table)
                .never_leave
                .contains(&source.column)
            {
                return Err(self.refuse(
                    &source.table,
                    "never_leave",
                    format!("column '{}' would leave the site {place}", source.column),
                ));
            }
        }
        Ok(())
    }

    /// What leaves the fragment: its root's rows and columns.
    fn check_egress(&self, root: &Node) -> Result<()> {
        // The most specific rule first: a never_leave column names itself.
        for (index, origin) in root.columns.iter().enumerate() {
            let name = root.plan.schema().field(index).name().clone();
            self.never_leave(origin, &format!("as output column '{name}'"))?;
        }
        for table in &root.rows_from {
            if self.policy.table(table).egress == Egress::Aggregates {
                return Err(self.refuse(
                    table,
                    "egress",
                    "its rows would leave the site".to_string() + &leaving_columns(root, table),
                ));
            }
        }
        for origin in &root.columns {
            for source in origin {
                let rules = self.policy.table(&source.table);
                match (rules.egress, &source.via) {
                    (Egress::Rows, _) | (_, Via::GroupKey | Via::Aggregate) => {}
                    (Egress::Predictions, Via::Model(_)) => {}
                    (Egress::Predictions, Via::Raw) if rules.row_keys.contains(&source.column) => {}
                    (Egress::Predictions, Via::Raw) => {
                        return Err(self.refuse(
                            &source.table,
                            "egress",
                            format!(
                                "column '{}' is a raw feature; only model outputs and row_keys {:?} \
                                 may leave the site",
                                source.column,
                                rules.row_keys.iter().collect::<Vec<_>>()
                            ),
                        ));
                    }
                    (Egress::Aggregates, Via::Raw) => {
                        return Err(self.refuse(
                            &source.table,
                            "egress",
                            format!("column '{}' would leave the site row by row", source.column),
                        ));
                    }
                    (Egress::Aggregates, Via::Model(model)) => {
                        return Err(self.refuse(
                            &source.table,
                            "egress",
                            format!("predictions of '{model}' would leave the site row by row"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}
