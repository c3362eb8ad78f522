//! `evaluate('<metric>', score, label)` and
//! `compare_models('<metric>', score_a, score_b, label)` as SQL aggregates.
//!
//! `compare_models` scores two models on the same rows (an A/B comparison) and tests the
//! difference with a paired test on the per-row loss the metric is built on (0/1 error,
//! log loss, squared or absolute error): a struct of `a`, `b`, `difference` (b - a),
//! `p_value` and `test`. Both merge partial states from the sites.

use super::inputs::{argument_names, literal_string, non_null_f64};
use super::metrics::{Metric, MetricState, Moments, paired_p_value};
use super::wire::{Reader, Writer, binary_states};
use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields};
use datafusion::common::scalar::ScalarStructBuilder;
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Signature, Volatility,
};
use std::sync::Arc;

/// Both metric functions.
pub fn metric_udafs() -> Vec<Arc<AggregateUDF>> {
    vec![
        Arc::new(AggregateUDF::new_from_impl(MetricUdf::new(false))),
        Arc::new(AggregateUDF::new_from_impl(MetricUdf::new(true))),
    ]
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MetricUdf {
    /// `compare_models` (two scores) rather than `evaluate`.
    paired: bool,
    signature: Signature,
}

impl MetricUdf {
    fn new(paired: bool) -> Self {
        Self {
            paired,
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }

    fn arity(&self) -> usize {
        if self.paired { 4 } else { 3 }
    }

    fn comparison_fields() -> Fields {
        Fields::from(vec![
            Field::new("a", DataType::Float64, true),
            Field::new("b", DataType::Float64, true),
            Field::new("difference", DataType::Float64, true),
            Field::new("p_value", DataType::Float64, true),
            Field::new("test", DataType::Utf8, true),
        ])
    }
}

impl AggregateUDFImpl for MetricUdf {
    fn name(&self) -> &str {
        if self.paired {
            "compare_models"
        } else {
            "evaluate"
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        if args.len() != self.arity() {
            let usage = if self.paired {
                "compare_models('<metric>', score_a, score_b, label)"
            } else {
                "evaluate('<metric>', score, label)"
            };
            return Err(DataFusionError::Plan(format!(
                "{usage} takes {} arguments, got {}",
                self.arity(),
                args.len()
            )));
        }
        Ok(if self.paired {
            DataType::Struct(Self::comparison_fields())
        } else {
            DataType::Float64
        })
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format!("{}[metric]", args.name),
            DataType::Binary,
            true,
        ))])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let metric = Metric::parse(&literal_string(args.exprs, self.name())?)?;
        let names = argument_names(args.exprs);
        let models = if self.paired { 2 } else { 1 };
        Ok(Box::new(MetricAccumulator {
            states: vec![MetricState::new(metric); models],
            differences: Moments::default(),
            names,
        }))
    }
}

#[derive(Debug)]
struct MetricAccumulator {
    /// One state per model scored.
    states: Vec<MetricState>,
    /// Per-row loss of model b minus model a (paired only).
    differences: Moments,
    names: Vec<String>,
}

impl MetricAccumulator {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        for s in &self.states {
            s.encode(&mut w);
        }
        w.f64(self.differences.n)
            .f64(self.differences.mean)
            .f64(self.differences.m2);
        w.finish()
    }
}

impl Accumulator for MetricAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let last = values.len() - 1;
        let label = non_null_f64(&values[last], &self.names[last], "label")?;
        let scores = values[1..last]
            .iter()
            .zip(&self.names[1..last])
            .map(|(column, name)| non_null_f64(column, name, "score"))
            .collect::<Result<Vec<_>>>()?;
        let (_, loss) = self.states[0].metric.paired_loss();
        let label_name = &self.names[last];
        for row in 0..label.len() {
            let y = label.value(row);
            for (state, score) in self.states.iter_mut().zip(&scores) {
                state.add(score.value(row), y, label_name)?;
            }
            if let [a, b] = scores.as_slice() {
                self.differences
                    .add(loss(b.value(row), y) - loss(a.value(row), y));
            }
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let value = |s: &MetricState| ScalarValue::Float64(s.value());
        if let [a, b] = self.states.as_slice() {
            let (test, _) = a.metric.paired_loss();
            let difference = match (a.value(), b.value()) {
                (Some(a), Some(b)) => Some(b - a),
                _ => None,
            };
            let fields = MetricUdf::comparison_fields();
            let p_value = (self.differences.n > 0.0).then(|| paired_p_value(&self.differences));
            return ScalarStructBuilder::new()
                .with_scalar(fields[0].clone(), value(a))
                .with_scalar(fields[1].clone(), value(b))
                .with_scalar(fields[2].clone(), ScalarValue::Float64(difference))
                .with_scalar(fields[3].clone(), ScalarValue::Float64(p_value))
                .with_scalar(
                    fields[4].clone(),
                    ScalarValue::Utf8(Some(format!("paired z-test on per-row {test}"))),
                )
                .build();
        }
        Ok(value(&self.states[0]))
    }

    fn size(&self) -> usize {
        size_of_val(self)
            + self
                .states
                .iter()
                .map(|s| (s.positives.len() + s.negatives.len()) * 8)
                .sum::<usize>()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![ScalarValue::Binary(Some(self.encode()))])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        for bytes in binary_states(states) {
            let mut r = Reader::new(bytes, "metric");
            for state in self.states.iter_mut() {
                state.merge(&MetricState::decode(&mut r)?);
            }
            let other = Moments {
                n: r.f64()?,
                mean: r.f64()?,
                m2: r.f64()?,
            };
            self.differences.merge(&other);
        }
        Ok(())
    }
}
