//! `__shoal_linear_stats(f1, ..., fn, label)`: the [`Gram`] statistics as a SQL aggregate,
//! partial on each site, gathered on the coordinator. Its result is every partial's
//! statistics with the site that sent it ([`decode_stats`]), so a training report can say
//! what each site sent; [`merge_sites`] gives the statistics of all rows.

use super::gram::Gram;
use super::inputs::{argument_names, non_null_f64};
use super::wire::{Reader, Writer, binary_states};
use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, Signature, Volatility};
use std::sync::Arc;

pub const LINEAR_STATS: &str = "__shoal_linear_stats";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LinearStatsUdf {
    /// The site this function runs on (set by the worker's codec); "local" in one process.
    site: String,
    signature: Signature,
}

impl LinearStatsUdf {
    pub fn new(site: &str) -> Self {
        Self {
            site: site.to_string(),
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

/// One partial's statistics and the site that sent them.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteStats {
    pub site: String,
    pub gram: Gram,
}

impl SiteStats {
    fn encode(&self, w: &mut Writer) {
        w.str(&self.site);
        self.gram.encode(w);
    }

    /// Bytes this partial takes on the wire.
    pub fn encoded_len(&self) -> usize {
        let mut w = Writer::default();
        self.encode(&mut w);
        w.finish().len()
    }
}

/// Decodes the aggregate's result (or state).
pub fn decode_stats(bytes: &[u8]) -> Result<Vec<SiteStats>> {
    let mut r = Reader::new(bytes, "linear statistics");
    let n = r.u64()?;
    (0..n)
        .map(|_| {
            Ok(SiteStats {
                site: r.str()?,
                gram: Gram::decode(&mut r)?,
            })
        })
        .collect()
}

fn encode_stats(parts: &[SiteStats]) -> Vec<u8> {
    let mut w = Writer::default();
    w.u64(parts.len() as u64);
    for p in parts {
        p.encode(&mut w);
    }
    w.finish()
}

/// The statistics of every row; None when no partial arrived.
pub fn merge_sites(parts: &[SiteStats]) -> Option<Gram> {
    let mut iter = parts.iter();
    let mut all = iter.next()?.gram.clone();
    for p in iter {
        all.merge(&p.gram);
    }
    Some(all)
}

impl AggregateUDFImpl for LinearStatsUdf {
    fn name(&self) -> &str {
        LINEAR_STATS
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        if args.len() < 2 {
            return Err(DataFusionError::Plan(format!(
                "{LINEAR_STATS} takes at least one feature and a label"
            )));
        }
        Ok(DataType::Binary)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format!("{}[stats]", args.name),
            DataType::Binary,
            true,
        ))])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let names = argument_names(args.exprs);
        super::bounds::check_features(self.name(), names.len().saturating_sub(1))?;
        Ok(Box::new(LinearStatsAccumulator {
            local: SiteStats {
                site: self.site.clone(),
                gram: Gram::new(names.len() - 1),
            },
            merged: Vec::new(),
            names,
        }))
    }
}

#[derive(Debug)]
struct LinearStatsAccumulator {
    /// Statistics of the rows seen here.
    local: SiteStats,
    /// Partials merged from other accumulators (the coordinator's side).
    merged: Vec<SiteStats>,
    names: Vec<String>,
}

impl LinearStatsAccumulator {
    fn all(&self) -> Vec<SiteStats> {
        let mut all = self.merged.clone();
        if self.local.gram.rows > 0.0 {
            all.push(self.local.clone());
        }
        all
    }
}

impl Accumulator for LinearStatsAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let last = values.len() - 1;
        let columns = values
            .iter()
            .zip(&self.names)
            .enumerate()
            .map(|(i, (c, name))| non_null_f64(c, name, if i < last { "feature" } else { "label" }))
            .collect::<Result<Vec<_>>>()?;
        let slices: Vec<&[f64]> = columns.iter().map(|c| c.values().as_ref()).collect();
        self.local.gram.add_columns(&slices);
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Binary(Some(encode_stats(&self.all()))))
    }

    fn size(&self) -> usize {
        let gram = &self.local.gram;
        size_of_val(self) + (gram.mean.len() + gram.comoment.len()) * 8 * (1 + self.merged.len())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.evaluate()?])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        for bytes in binary_states(states) {
            self.merged.extend(decode_stats(bytes)?);
        }
        Ok(())
    }
}
