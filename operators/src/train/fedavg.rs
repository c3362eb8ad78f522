//! One round of federated averaging as a SQL aggregate:
//! `__shoal_fedavg_round('<round plan JSON>', f1, ..., fn, label)`.
//!
//! Partial aggregation runs where the rows are: each partial accumulator (one per partition
//! of a site's scan) keeps its rows in the worker's memory, and when DataFusion asks for its
//! state it trains from the round's global weights for the plan's local epochs and emits a
//! [`Contribution`]: row counts, losses and the (clipped) weight update. Only that state
//! crosses the network; the coordinator's final accumulator gathers the contributions and
//! [`super::combine`] averages them. The accumulator knows its site from the worker's codec.

use super::inputs::{argument_names, check_binary_label, literal_string, non_null_f64, row_hash};
use super::network::{Architecture, Objective, Scaling, SgdOptions, evaluate, train};
use super::wire::{Reader, Writer, binary_states};
use crate::cancel::CancelToken;
use crate::features::numeric::scale_standard;
use crate::runtime::run_on_cpu_pool;
use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, Signature, Volatility};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub const FEDAVG_ROUND: &str = "__shoal_fedavg_round";

/// What the coordinator sends every site for one round (the aggregate's first argument).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundPlan {
    pub architecture: Architecture,
    /// The global weights, on standardised inputs.
    pub weights: Vec<f64>,
    pub scaling: Scaling,
    pub sgd: SgdOptions,
    /// A site's update is scaled down to at most this L2 norm (0: no clipping).
    pub clip_norm: f64,
    /// A partition with fewer training rows sends no update, only its counts.
    pub min_rows: u64,
    /// Share of rows (by a hash of their values) held out for scoring, never trained on.
    pub holdout: f64,
}

impl RoundPlan {
    fn is_held_out(&self, hash: u64) -> bool {
        self.holdout > 0.0 && (hash % 1_000_000) as f64 / 1_000_000.0 < self.holdout
    }
}

/// What one partition of one site sends back for a round.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Contribution {
    pub site: String,
    pub train_rows: u64,
    /// Loss of the round's global weights over the training rows (summed).
    pub train_loss: f64,
    pub holdout_rows: u64,
    pub holdout_loss: f64,
    /// Held-out rows a classifier got right with the global weights.
    pub holdout_correct: u64,
    /// New local weights minus the global weights; empty when the partition had too few
    /// rows or the round only evaluates.
    pub update: Vec<f64>,
    /// Whether the update was scaled down to the clip norm.
    pub clipped: bool,
}

impl Contribution {
    pub fn encode(&self, out: &mut Writer) {
        out.str(&self.site)
            .u64(self.train_rows)
            .f64(self.train_loss)
            .u64(self.holdout_rows)
            .f64(self.holdout_loss)
            .u64(self.holdout_correct)
            .f64s(&self.update)
            .u64(self.clipped as u64);
    }

    pub fn decode(input: &mut Reader) -> Result<Self> {
        Ok(Self {
            site: input.str()?,
            train_rows: input.u64()?,
            train_loss: input.f64()?,
            holdout_rows: input.u64()?,
            holdout_loss: input.f64()?,
            holdout_correct: input.u64()?,
            update: input.f64s()?,
            clipped: input.u64()? != 0,
        })
    }

    /// Bytes this contribution takes on the wire (its encoded state).
    pub fn encoded_len(&self) -> usize {
        let mut w = Writer::default();
        self.encode(&mut w);
        w.finish().len()
    }
}

/// Encodes contributions as one state value.
pub fn encode_all(contributions: &[Contribution]) -> Vec<u8> {
    let mut w = Writer::default();
    w.u64(contributions.len() as u64);
    for c in contributions {
        c.encode(&mut w);
    }
    w.finish()
}

pub fn decode_all(bytes: &[u8]) -> Result<Vec<Contribution>> {
    let mut r = Reader::new(bytes, "federated round");
    let n = r.u64()?;
    (0..n).map(|_| Contribution::decode(&mut r)).collect()
}

#[derive(Debug, Clone)]
pub struct FedAvgRoundUdf {
    /// The site this function runs on (set by the worker's codec); "local" in one process.
    site: String,
    signature: Signature,
    /// The statement's cancellation: the local training stops when it fires.
    stop: CancelToken,
}

// Equal whatever the statement: one function, whichever statement's session holds it.
impl PartialEq for FedAvgRoundUdf {
    fn eq(&self, other: &Self) -> bool {
        self.site == other.site
    }
}

impl Eq for FedAvgRoundUdf {}

impl std::hash::Hash for FedAvgRoundUdf {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.site.hash(state);
    }
}

impl FedAvgRoundUdf {
    pub fn new(site: &str, stop: CancelToken) -> Self {
        Self {
            site: site.to_string(),
            signature: Signature::variadic_any(Volatility::Immutable),
            stop,
        }
    }
}

impl AggregateUDFImpl for FedAvgRoundUdf {
    fn name(&self) -> &str {
        FEDAVG_ROUND
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        if args.len() < 3 {
            return Err(DataFusionError::Plan(format!(
                "{FEDAVG_ROUND} takes a round plan, at least one feature and a label"
            )));
        }
        Ok(DataType::Binary)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format!("{}[contributions]", args.name),
            DataType::Binary,
            true,
        ))])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let plan: RoundPlan = serde_json::from_str(&literal_string(args.exprs, FEDAVG_ROUND)?)
            .map_err(|e| DataFusionError::Plan(format!("{FEDAVG_ROUND}: bad round plan: {e}")))?;
        plan.validate(FEDAVG_ROUND)?;
        let names = argument_names(args.exprs);
        if names.len() != plan.architecture.inputs + 2 {
            return Err(DataFusionError::Plan(format!(
                "{FEDAVG_ROUND}: the model takes {} feature(s), the call passes {}",
                plan.architecture.inputs,
                names.len().saturating_sub(2)
            )));
        }
        Ok(Box::new(FedAvgAccumulator {
            site: self.site.clone(),
            stop: self.stop.clone(),
            plan,
            names: names[1..].to_vec(),
            x: Vec::new(),
            y: Vec::new(),
            partial: Contribution::default(),
            merged: Vec::new(),
        }))
    }
}

#[derive(Debug)]
struct FedAvgAccumulator {
    site: String,
    stop: CancelToken,
    plan: RoundPlan,
    /// Feature names, then the label's.
    names: Vec<String>,
    /// Standardised training rows, row-major, and their (standardised) targets.
    x: Vec<f64>,
    y: Vec<f64>,
    /// Counts and held-out scores of the rows seen here.
    partial: Contribution,
    /// Contributions merged from other accumulators (the coordinator's side).
    merged: Vec<Contribution>,
}

impl FedAvgAccumulator {
    /// Trains on the rows kept here and returns this partition's contribution.
    /// Trains on the rows kept here and returns this partition's contribution. The SGD runs
    /// on the CPU pool, never on the runtime thread that called into the aggregate.
    fn local_contribution(&mut self) -> Result<Contribution> {
        let mut out = std::mem::take(&mut self.partial);
        out.site = self.site.clone();
        out.train_rows = self.y.len() as u64;
        let (x, y) = (std::mem::take(&mut self.x), std::mem::take(&mut self.y));
        let plan = &self.plan;
        let stop = &self.stop;
        let trains = plan.sgd.epochs > 0 && out.train_rows >= plan.min_rows.max(1);
        let (loss, local) = run_on_cpu_pool(|| -> Result<_> {
            let arch = &plan.architecture;
            let (loss, _) = evaluate(arch, &plan.weights, &x, &y);
            let local = if trains {
                let mut local = plan.weights.clone();
                let mut sgd = plan.sgd.clone();
                // Each site and partition shuffles differently, reproducibly.
                sgd.seed = row_hash(y.iter().take(16).copied(), sgd.seed ^ y.len() as u64);
                train(arch, &mut local, &x, &y, &sgd, stop)?;
                Some(local)
            } else {
                None
            };
            Ok((loss, local))
        })??;
        out.train_loss = loss;
        if let Some(local) = local {
            let mut update: Vec<f64> = local
                .iter()
                .zip(&plan.weights)
                .map(|(l, g)| l - g)
                .collect();
            let norm = update.iter().map(|u| u * u).sum::<f64>().sqrt();
            if plan.clip_norm > 0.0 && norm > plan.clip_norm {
                let scale = plan.clip_norm / norm;
                update.iter_mut().for_each(|u| *u *= scale);
                out.clipped = true;
            }
            out.update = update;
        }
        Ok(out)
    }

    fn all_contributions(&mut self) -> Result<Vec<Contribution>> {
        let mut all = std::mem::take(&mut self.merged);
        if !self.y.is_empty() || self.partial.holdout_rows > 0 {
            all.push(self.local_contribution()?);
        }
        Ok(all)
    }
}

impl Accumulator for FedAvgAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let arch = self.plan.architecture.clone();
        let d = arch.inputs;
        let columns = values[1..]
            .iter()
            .zip(&self.names)
            .enumerate()
            .map(|(i, (column, name))| {
                non_null_f64(column, name, if i < d { "feature" } else { "label" })
            })
            .collect::<Result<Vec<_>>>()?;
        let label = &columns[d];
        if arch.objective == Objective::Binary {
            check_binary_label(label, &self.names[d])?;
        }
        // Standardised with the feature library's kernel and the distributed statistics.
        let scaled = columns[..d]
            .iter()
            .enumerate()
            .map(|(j, column)| {
                let column: ArrayRef = Arc::new(column.clone());
                let scaling = &self.plan.scaling;
                scale_standard(&column, scaling.feature_mean[j], scaling.feature_std[j])
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let mut row = vec![0.0; d];
        let mut holdout_x = Vec::new();
        let mut holdout_y = Vec::new();
        for i in 0..label.len() {
            for (value, column) in row.iter_mut().zip(&scaled) {
                *value = column.value(i);
            }
            let target =
                (label.value(i) - self.plan.scaling.target_mean) / self.plan.scaling.target_std;
            let hash = row_hash(
                columns.iter().map(|c| c.value(i)),
                self.plan.sgd.seed.rotate_left(17),
            );
            if self.plan.is_held_out(hash) {
                holdout_x.extend_from_slice(&row);
                holdout_y.push(target);
            } else {
                self.x.extend_from_slice(&row);
                self.y.push(target);
            }
        }
        if !holdout_y.is_empty() {
            let (loss, correct) = evaluate(&arch, &self.plan.weights, &holdout_x, &holdout_y);
            self.partial.holdout_rows += holdout_y.len() as u64;
            self.partial.holdout_loss += loss;
            self.partial.holdout_correct += correct;
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Binary(Some(encode_all(
            &self.all_contributions()?,
        ))))
    }

    fn size(&self) -> usize {
        size_of_val(self)
            + (self.x.capacity() + self.y.capacity()) * 8
            + self
                .merged
                .iter()
                .map(|c| c.update.capacity() * 8 + 64)
                .sum::<usize>()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![ScalarValue::Binary(Some(encode_all(
            &self.all_contributions()?,
        )))])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        for bytes in binary_states(states) {
            self.merged.extend(decode_all(bytes)?);
        }
        Ok(())
    }
}
