//! Model-quality metrics as mergeable states: computed as partial aggregates on the sites,
//! merged on the coordinator, so only counts and sums leave a site.
//!
//! ROC AUC comes from score histograms of [`AUC_BINS`] equal bins over [0, 1]: pairs of a
//! positive and a negative row whose scores share a bin count as half-ordered, so the AUC
//! is off by at most half the share of (positive, negative) pairs falling in one bin,
//! `Σ_b pos_b · neg_b / (2 · P · N)`; `evaluate('auc_error_bound', ...)` reports that bound
//! for the data at hand (0 when no bin holds both classes).

use super::wire::{Reader, Writer};
use datafusion::common::{DataFusionError, Result};

pub const AUC_BINS: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    Accuracy,
    Precision,
    Recall,
    F1,
    LogLoss,
    Auc,
    AucErrorBound,
    Mse,
    Mae,
    R2,
}

impl Metric {
    pub const NAMES: &'static [&'static str] = &[
        "accuracy",
        "precision",
        "recall",
        "f1",
        "log_loss",
        "auc",
        "auc_error_bound",
        "mse",
        "mae",
        "r2",
    ];

    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "accuracy" => Metric::Accuracy,
            "precision" => Metric::Precision,
            "recall" => Metric::Recall,
            "f1" => Metric::F1,
            "log_loss" | "logloss" => Metric::LogLoss,
            "auc" | "roc_auc" => Metric::Auc,
            "auc_error_bound" => Metric::AucErrorBound,
            "mse" => Metric::Mse,
            "mae" => Metric::Mae,
            "r2" => Metric::R2,
            other => {
                return Err(DataFusionError::Plan(format!(
                    "unknown metric '{other}'; metrics: {}",
                    Self::NAMES.join(", ")
                )));
            }
        })
    }

    /// Metrics over a 0/1 label.
    pub fn is_classification(self) -> bool {
        !matches!(self, Metric::Mse | Metric::Mae | Metric::R2)
    }

    /// Metrics that need the score to be a probability.
    fn needs_probability(self) -> bool {
        matches!(self, Metric::LogLoss | Metric::Auc | Metric::AucErrorBound)
    }

    /// Per-row loss the paired comparison of two models tests, and its name.
    pub fn paired_loss(self) -> (&'static str, fn(f64, f64) -> f64) {
        match self {
            Metric::Accuracy | Metric::Precision | Metric::Recall | Metric::F1 => {
                ("0/1 error", |p, y| ((p >= 0.5) != (y >= 0.5)) as u8 as f64)
            }
            Metric::LogLoss | Metric::Auc | Metric::AucErrorBound => ("log loss", log_loss),
            Metric::Mse | Metric::R2 => ("squared error", |p, y| (p - y) * (p - y)),
            Metric::Mae => ("absolute error", |p, y| (p - y).abs()),
        }
    }
}

/// Log loss of one row, with the probability clipped as scikit-learn does.
pub fn log_loss(p: f64, y: f64) -> f64 {
    let p = p.clamp(1e-15, 1.0 - 1e-15);
    if y >= 0.5 { -p.ln() } else { -(1.0 - p).ln() }
}

/// Running mean and centred sum of squares (Welford), mergeable (Chan).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Moments {
    pub n: f64,
    pub mean: f64,
    pub m2: f64,
}

impl Moments {
    pub fn add(&mut self, v: f64) {
        self.n += 1.0;
        let delta = v - self.mean;
        self.mean += delta / self.n;
        self.m2 += delta * (v - self.mean);
    }

    pub fn merge(&mut self, o: &Moments) {
        if o.n == 0.0 {
            return;
        }
        let n = self.n + o.n;
        let delta = o.mean - self.mean;
        self.m2 += o.m2 + delta * delta * self.n * o.n / n;
        self.mean += delta * o.n / n;
        self.n = n;
    }

    pub fn variance(&self) -> f64 {
        if self.n > 1.0 {
            self.m2 / (self.n - 1.0)
        } else {
            0.0
        }
    }

    fn encode(&self, w: &mut Writer) {
        w.f64(self.n).f64(self.mean).f64(self.m2);
    }

    fn decode(r: &mut Reader) -> Result<Self> {
        Ok(Self {
            n: r.f64()?,
            mean: r.f64()?,
            m2: r.f64()?,
        })
    }
}

/// Everything one metric needs, for rows of (score, label).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricState {
    pub metric: Metric,
    /// [true positive, false positive, true negative, false negative] at threshold 0.5.
    pub confusion: [u64; 4],
    pub log_loss: f64,
    pub squared_error: f64,
    pub absolute_error: f64,
    pub label: Moments,
    /// Score histograms of positive and negative rows (AUC only).
    pub positives: Vec<u64>,
    pub negatives: Vec<u64>,
}

impl MetricState {
    pub fn new(metric: Metric) -> Self {
        let bins = if matches!(metric, Metric::Auc | Metric::AucErrorBound) {
            AUC_BINS
        } else {
            0
        };
        Self {
            metric,
            confusion: [0; 4],
            log_loss: 0.0,
            squared_error: 0.0,
            absolute_error: 0.0,
            label: Moments::default(),
            positives: vec![0; bins],
            negatives: vec![0; bins],
        }
    }

    /// Adds one row; `label_name` names the label in errors.
    pub fn add(&mut self, score: f64, label: f64, label_name: &str) -> Result<()> {
        if self.metric.is_classification() && label != 0.0 && label != 1.0 {
            return Err(DataFusionError::Execution(format!(
                "metric '{}': label '{label_name}' must be 0 or 1, found {label}",
                Metric::NAMES[self.metric as usize]
            )));
        }
        if self.metric.needs_probability() && !(0.0..=1.0).contains(&score) {
            return Err(DataFusionError::Execution(format!(
                "metric '{}' needs a probability score in [0, 1] (predict_proba), found {score}",
                Metric::NAMES[self.metric as usize]
            )));
        }
        let positive = label >= 0.5;
        let predicted = score >= 0.5;
        let cell = match (predicted, positive) {
            (true, true) => 0,
            (true, false) => 1,
            (false, false) => 2,
            (false, true) => 3,
        };
        self.confusion[cell] += 1;
        if self.metric.needs_probability() {
            self.log_loss += log_loss(score, label);
        }
        let error = score - label;
        self.squared_error += error * error;
        self.absolute_error += error.abs();
        self.label.add(label);
        if !self.positives.is_empty() {
            let bin = ((score * AUC_BINS as f64) as usize).min(AUC_BINS - 1);
            if positive {
                self.positives[bin] += 1;
            } else {
                self.negatives[bin] += 1;
            }
        }
        Ok(())
    }

    pub fn merge(&mut self, o: &MetricState) {
        for (a, b) in self.confusion.iter_mut().zip(o.confusion) {
            *a += b;
        }
        self.log_loss += o.log_loss;
        self.squared_error += o.squared_error;
        self.absolute_error += o.absolute_error;
        self.label.merge(&o.label);
        for (a, b) in self.positives.iter_mut().zip(&o.positives) {
            *a += b;
        }
        for (a, b) in self.negatives.iter_mut().zip(&o.negatives) {
            *a += b;
        }
    }

    pub fn rows(&self) -> u64 {
        self.confusion.iter().sum()
    }

    /// The metric's value; None on no rows (or an undefined ratio, e.g. precision with no
    /// positive prediction), which SQL shows as NULL.
    pub fn value(&self) -> Option<f64> {
        let n = self.rows() as f64;
        if n == 0.0 {
            return None;
        }
        let [tp, fp, tn, fn_] = self.confusion.map(|c| c as f64);
        let ratio = |a: f64, b: f64| (b > 0.0).then(|| a / b);
        match self.metric {
            Metric::Accuracy => Some((tp + tn) / n),
            Metric::Precision => ratio(tp, tp + fp),
            Metric::Recall => ratio(tp, tp + fn_),
            Metric::F1 => ratio(2.0 * tp, 2.0 * tp + fp + fn_),
            Metric::LogLoss => Some(self.log_loss / n),
            Metric::Auc => self.auc().map(|(auc, _)| auc),
            Metric::AucErrorBound => self.auc().map(|(_, bound)| bound),
            Metric::Mse => Some(self.squared_error / n),
            Metric::Mae => Some(self.absolute_error / n),
            Metric::R2 => ratio(self.squared_error, self.label.m2).map(|r| 1.0 - r),
        }
    }

    /// (AUC, its binning error bound); None when one class is missing.
    fn auc(&self) -> Option<(f64, f64)> {
        let p: u64 = self.positives.iter().sum();
        let n: u64 = self.negatives.iter().sum();
        if p == 0 || n == 0 {
            return None;
        }
        let mut negatives_below = 0u64;
        let (mut ordered, mut tied) = (0.0, 0.0);
        for (pos, neg) in self.positives.iter().zip(&self.negatives) {
            ordered += *pos as f64 * negatives_below as f64;
            tied += *pos as f64 * *neg as f64;
            negatives_below += neg;
        }
        let pairs = p as f64 * n as f64;
        Some(((ordered + 0.5 * tied) / pairs, 0.5 * tied / pairs))
    }

    pub fn encode(&self, w: &mut Writer) {
        w.u64(self.metric as u64)
            .u64s(&self.confusion)
            .f64(self.log_loss)
            .f64(self.squared_error)
            .f64(self.absolute_error);
        self.label.encode(w);
        w.u64s(&self.positives).u64s(&self.negatives);
    }

    pub fn decode(r: &mut Reader) -> Result<Self> {
        let metric_index = r.u64()? as usize;
        let metric = Metric::parse(Metric::NAMES.get(metric_index).copied().unwrap_or("?"))?;
        let confusion = r.u64s()?;
        let mut state = MetricState::new(metric);
        state.confusion = confusion.try_into().map_err(|_| {
            DataFusionError::Internal("a metric state's confusion matrix is not 2×2".into())
        })?;
        state.log_loss = r.f64()?;
        state.squared_error = r.f64()?;
        state.absolute_error = r.f64()?;
        state.label = Moments::decode(r)?;
        state.positives = r.u64s()?;
        state.negatives = r.u64s()?;
        Ok(state)
    }
}

/// Two-sided p-value of a paired test on per-row loss differences (normal approximation,
/// fine for the row counts evaluation runs on); 1 when there is no difference at all.
pub fn paired_p_value(differences: &Moments) -> f64 {
    if differences.n < 2.0 {
        return 1.0;
    }
    let se = (differences.variance() / differences.n).sqrt();
    if se == 0.0 {
        return if differences.mean == 0.0 { 1.0 } else { 0.0 };
    }
    let z = (differences.mean / se).abs();
    erfc(z / std::f64::consts::SQRT_2)
}

/// Complementary error function (Numerical Recipes' Chebyshev fit, relative error < 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_of(metric: Metric, rows: &[(f64, f64)]) -> MetricState {
        let mut s = MetricState::new(metric);
        for (score, label) in rows {
            s.add(*score, *label, "y").ok();
        }
        s
    }

    #[test]
    fn classification_metrics_match_hand_counts() {
        let rows = [(0.9, 1.0), (0.8, 0.0), (0.3, 1.0), (0.1, 0.0), (0.6, 1.0)];
        // tp 2 (0.9, 0.6), fp 1 (0.8), tn 1 (0.1), fn 1 (0.3).
        let v = |m| state_of(m, &rows).value().unwrap_or(f64::NAN);
        assert_eq!(v(Metric::Accuracy), 0.6);
        assert!((v(Metric::Precision) - 2.0 / 3.0).abs() < 1e-12);
        assert!((v(Metric::Recall) - 2.0 / 3.0).abs() < 1e-12);
        assert!((v(Metric::F1) - 2.0 / 3.0).abs() < 1e-12);
        // Positives 0.9, 0.3, 0.6 against negatives 0.8, 0.1: 4 of 6 pairs ordered.
        assert!((v(Metric::Auc) - 4.0 / 6.0).abs() < 1e-12);
        assert_eq!(v(Metric::AucErrorBound), 0.0);
        let expected_log_loss =
            -(0.9f64.ln() + 0.2f64.ln() + 0.3f64.ln() + 0.9f64.ln() + 0.6f64.ln()) / 5.0;
        assert!((v(Metric::LogLoss) - expected_log_loss).abs() < 1e-12);
    }

    #[test]
    fn merged_states_equal_one_state_and_survive_encoding() -> Result<()> {
        let rows: Vec<(f64, f64)> = (0..500)
            .map(|i| (((i * 37) % 101) as f64 / 100.0, (i % 3 == 0) as u8 as f64))
            .collect();
        for metric in [Metric::Auc, Metric::R2, Metric::LogLoss, Metric::F1] {
            let whole = state_of(metric, &rows);
            let mut merged = state_of(metric, &rows[..123]);
            let mut w = Writer::default();
            state_of(metric, &rows[123..]).encode(&mut w);
            let bytes = w.finish();
            merged.merge(&MetricState::decode(&mut Reader::new(&bytes, "metric"))?);
            let (a, b) = (whole.value().unwrap_or(0.0), merged.value().unwrap_or(1.0));
            assert!((a - b).abs() < 1e-9, "{metric:?}: {a} vs {b}");
        }
        Ok(())
    }

    #[test]
    fn regression_metrics_and_bad_inputs() {
        let rows = [(1.0, 1.5), (2.0, 2.0), (3.5, 3.0)];
        let s = state_of(Metric::R2, &rows);
        // SSE 0.5; labels 1.5, 2, 3 have SST 1.1667.
        assert!((s.value().unwrap_or(0.0) - (1.0 - 0.5 / (7.0 / 6.0))).abs() < 1e-12);
        let mut auc = MetricState::new(Metric::Auc);
        let err = auc.add(1.7, 1.0, "y").unwrap_err().to_string();
        assert!(err.contains("probability score in [0, 1]"), "{err}");
        let err = auc.add(0.5, 2.0, "y").unwrap_err().to_string();
        assert!(err.contains("label 'y' must be 0 or 1"), "{err}");
    }

    #[test]
    fn p_values_follow_the_normal_tail() {
        let mut d = Moments::default();
        for i in 0..10_000 {
            d.add(if i % 2 == 0 { 1.0 } else { -1.0 });
        }
        assert!(paired_p_value(&d) > 0.9);
        let mut shifted = Moments::default();
        for i in 0..10_000 {
            shifted.add(0.1 + if i % 2 == 0 { 1.0 } else { -1.0 });
        }
        assert!(paired_p_value(&shifted) < 1e-10);
        assert!((erfc(1.0) - 0.157_299_207).abs() < 1e-7);
    }
}
