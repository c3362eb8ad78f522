//! Sufficient statistics of a linear model, mergeable across sites: row count, means and
//! centred co-moments of the features and the label (Chan et al.'s pairwise update, so
//! features with large means lose no precision the way raw sums of squares would).
//!
//! Linear regression is solved exactly from them (ridge, intercept unpenalised, as
//! scikit-learn's `Ridge(alpha)`), and the features' means and standard deviations scale
//! the inputs of the models trained by federated averaging.

use super::wire::{Reader, Writer};
use datafusion::common::{DataFusionError, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct Gram {
    pub rows: f64,
    /// Means of the features, then the label's last.
    pub mean: Vec<f64>,
    /// Centred co-moments Σ (v - mean)(v - mean)ᵀ over features and label, row-major,
    /// (d + 1) × (d + 1).
    pub comoment: Vec<f64>,
}

impl Gram {
    pub fn new(features: usize) -> Self {
        let width = features + 1;
        Self {
            rows: 0.0,
            mean: vec![0.0; width],
            comoment: vec![0.0; width * width],
        }
    }

    pub fn features(&self) -> usize {
        self.mean.len() - 1
    }

    fn width(&self) -> usize {
        self.mean.len()
    }

    /// Adds rows given as columns (features, then the label), all of one length.
    pub fn add_columns(&mut self, columns: &[&[f64]]) {
        let width = self.width();
        debug_assert_eq!(columns.len(), width);
        let n = columns.first().map_or(0, |c| c.len());
        if n == 0 {
            return;
        }
        let mut batch = Gram::new(width - 1);
        batch.rows = n as f64;
        for (j, column) in columns.iter().enumerate() {
            batch.mean[j] = column.iter().sum::<f64>() / n as f64;
        }
        for a in 0..width {
            for b in a..width {
                let (ma, mb) = (batch.mean[a], batch.mean[b]);
                let s: f64 = columns[a]
                    .iter()
                    .zip(columns[b].iter())
                    .map(|(x, y)| (x - ma) * (y - mb))
                    .sum();
                batch.comoment[a * width + b] = s;
                batch.comoment[b * width + a] = s;
            }
        }
        self.merge(&batch);
    }

    pub fn merge(&mut self, other: &Gram) {
        if other.rows == 0.0 {
            return;
        }
        if self.rows == 0.0 {
            *self = other.clone();
            return;
        }
        let width = self.width();
        let n = self.rows + other.rows;
        let delta: Vec<f64> = (0..width).map(|j| other.mean[j] - self.mean[j]).collect();
        let factor = self.rows * other.rows / n;
        for a in 0..width {
            for b in 0..width {
                self.comoment[a * width + b] +=
                    other.comoment[a * width + b] + delta[a] * delta[b] * factor;
            }
        }
        for (j, d) in delta.iter().enumerate() {
            self.mean[j] += d * other.rows / n;
        }
        self.rows = n;
    }

    /// Population standard deviation of each feature (0 for a constant one).
    pub fn feature_std(&self) -> Vec<f64> {
        let width = self.width();
        (0..self.features())
            .map(|j| {
                if self.rows == 0.0 {
                    0.0
                } else {
                    (self.comoment[j * width + j] / self.rows).max(0.0).sqrt()
                }
            })
            .collect()
    }

    /// Ridge regression: minimises Σ (y - b - w·x)² + l2 ‖w‖² with the intercept b
    /// unpenalised. Returns (w, b) and the mean squared error on the training rows.
    pub fn solve_ridge(&self, l2: f64) -> Result<(Vec<f64>, f64, f64)> {
        let d = self.features();
        let width = self.width();
        if self.rows < 1.0 {
            return Err(DataFusionError::Plan(
                "linear regression needs at least one row".into(),
            ));
        }
        let mut a: Vec<f64> = (0..d * d)
            .map(|i| self.comoment[(i / d) * width + i % d])
            .collect();
        for j in 0..d {
            a[j * d + j] += l2;
        }
        let rhs: Vec<f64> = (0..d).map(|j| self.comoment[j * width + d]).collect();
        let w = solve_spd(&mut a, &rhs, d).ok_or_else(|| {
            DataFusionError::Plan(
                "the features are collinear (or one is constant): the normal equations have no \
                 unique solution; add OPTIONS (l2 = ...) or drop the redundant feature"
                    .into(),
            )
        })?;
        let b = self.mean[d]
            - w.iter()
                .zip(&self.mean[..d])
                .map(|(w, m)| w * m)
                .sum::<f64>();
        // SSE = Syy - 2 wᵀSxy + wᵀSxx w, from the centred co-moments.
        let syy = self.comoment[d * width + d];
        let mut sse = syy;
        for i in 0..d {
            sse -= 2.0 * w[i] * self.comoment[i * width + d];
            for j in 0..d {
                sse += w[i] * w[j] * self.comoment[i * width + j];
            }
        }
        Ok((w, b, sse.max(0.0) / self.rows))
    }

    pub fn encode(&self, out: &mut Writer) {
        out.f64(self.rows).f64s(&self.mean).f64s(&self.comoment);
    }

    pub fn decode(input: &mut Reader) -> Result<Self> {
        let rows = input.f64()?;
        let mean = input.f64s()?;
        let comoment = input.f64s()?;
        if mean.is_empty() || comoment.len() != mean.len() * mean.len() {
            return Err(DataFusionError::Internal(
                "a linear statistics state has inconsistent sizes".into(),
            ));
        }
        Ok(Self {
            rows,
            mean,
            comoment,
        })
    }
}

/// Solves A x = b for a symmetric positive definite A (Cholesky); None when A is not
/// (numerically) positive definite.
fn solve_spd(a: &mut [f64], b: &[f64], n: usize) -> Option<Vec<f64>> {
    let scale = (0..n)
        .map(|i| a[i * n + i].abs())
        .fold(0.0, f64::max)
        .max(1e-300);
    for j in 0..n {
        let mut diagonal = a[j * n + j];
        for k in 0..j {
            diagonal -= a[j * n + k] * a[j * n + k];
        }
        if diagonal <= scale * 1e-12 {
            return None;
        }
        let pivot = diagonal.sqrt();
        a[j * n + j] = pivot;
        for i in j + 1..n {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = s / pivot;
        }
    }
    let mut y = vec![0.0; n];
    for i in 0..n {
        let s: f64 = (0..i).map(|k| a[i * n + k] * y[k]).sum();
        y[i] = (b[i] - s) / a[i * n + i];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|k| a[k * n + i] * x[k]).sum();
        x[i] = (y[i] - s) / a[i * n + i];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gram_of(rows: &[[f64; 3]]) -> Gram {
        let columns: Vec<Vec<f64>> = (0..3)
            .map(|j| rows.iter().map(|r| r[j]).collect())
            .collect();
        let refs: Vec<&[f64]> = columns.iter().map(Vec::as_slice).collect();
        let mut g = Gram::new(2);
        g.add_columns(&refs);
        g
    }

    #[test]
    fn merged_partials_equal_one_pass_and_recover_an_exact_plane() -> Result<()> {
        // y = 3 + 2 x1 - 0.5 x2, with a large offset on x1 to test precision.
        let rows: Vec<[f64; 3]> = (0..200)
            .map(|i| {
                let x1 = 1e6 + (i as f64 * 0.37).sin() * 10.0;
                let x2 = (i as f64 * 1.3).cos() * 4.0;
                [x1, x2, 3.0 + 2.0 * x1 - 0.5 * x2]
            })
            .collect();
        let whole = gram_of(&rows);
        let mut merged = gram_of(&rows[..70]);
        merged.merge(&gram_of(&rows[70..150]));
        merged.merge(&gram_of(&rows[150..]));
        for (a, b) in whole.comoment.iter().zip(&merged.comoment) {
            assert!((a - b).abs() <= 1e-6 * a.abs().max(1.0), "{a} vs {b}");
        }
        let (w, b, mse) = merged.solve_ridge(0.0)?;
        assert!(
            (w[0] - 2.0).abs() < 1e-8 && (w[1] + 0.5).abs() < 1e-8,
            "{w:?}"
        );
        assert!((b - 3.0).abs() < 1e-3, "{b}");
        assert!(mse < 1e-9);
        Ok(())
    }

    #[test]
    fn a_constant_feature_without_l2_is_reported_as_collinear() {
        let rows: Vec<[f64; 3]> = (0..10).map(|i| [1.0, i as f64, i as f64 * 2.0]).collect();
        let err = gram_of(&rows).solve_ridge(0.0).unwrap_err().to_string();
        assert!(err.contains("collinear"), "{err}");
        assert!(gram_of(&rows).solve_ridge(1.0).is_ok());
    }

    #[test]
    fn encoding_round_trips() -> Result<()> {
        let g = gram_of(&[[1.0, 2.0, 3.0], [4.0, 5.0, 7.0]]);
        let mut w = Writer::default();
        g.encode(&mut w);
        let bytes = w.finish();
        assert_eq!(Gram::decode(&mut Reader::new(&bytes, "gram"))?, g);
        Ok(())
    }
}
