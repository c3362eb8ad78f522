//! The coordinator's half of a federated round: averages the sites' updates weighted by
//! their training rows, after the privacy rules (a site below the minimum row count does
//! not contribute; updates are clipped on the sites; Gaussian noise calibrated to the clip
//! norm is added to the average).

use super::fedavg::Contribution;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Privacy {
    /// L2 bound on each site's update (0: none).
    pub clip_norm: f64,
    /// Noise standard deviation as a multiple of the average's sensitivity (0: none).
    pub noise_multiplier: f64,
    /// A site with fewer training rows in total does not contribute.
    pub min_site_rows: u64,
}

/// What one site did in one round.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SiteRound {
    pub train_rows: u64,
    pub holdout_rows: u64,
    /// Bytes of state the site sent (its encoded contributions).
    pub bytes_sent: u64,
    /// Whether its update entered the average.
    pub contributed: bool,
    pub clipped: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoundSummary {
    pub sites: BTreeMap<String, SiteRound>,
    /// Mean loss of the round's starting weights over every training row.
    pub train_loss: f64,
    /// Mean loss and accuracy (classifiers) of the starting weights on the held-out rows.
    pub holdout_loss: Option<f64>,
    pub holdout_accuracy: Option<f64>,
    /// Standard deviation of the noise added to each averaged coordinate.
    pub noise_std: f64,
}

/// Applies one round: `weights += average update (+ noise)`; returns what happened.
pub fn combine(
    weights: &mut [f64],
    contributions: &[Contribution],
    privacy: &Privacy,
) -> Result<RoundSummary, String> {
    let mut summary = RoundSummary::default();
    let mut per_site: BTreeMap<&str, Vec<&Contribution>> = BTreeMap::new();
    for c in contributions {
        per_site.entry(&c.site).or_default().push(c);
    }
    let (mut train_rows, mut train_loss) = (0u64, 0.0);
    let (mut holdout_rows, mut holdout_loss, mut holdout_correct) = (0u64, 0.0, 0u64);
    let mut sum = vec![0.0; weights.len()];
    let mut weight_total = 0.0;
    let mut largest_site = 0.0f64;
    for (site, parts) in &per_site {
        let mut round = SiteRound::default();
        for c in parts {
            round.train_rows += c.train_rows;
            round.holdout_rows += c.holdout_rows;
            round.bytes_sent += c.encoded_len() as u64;
            round.clipped |= c.clipped;
            train_loss += c.train_loss;
            holdout_loss += c.holdout_loss;
            holdout_correct += c.holdout_correct;
        }
        train_rows += round.train_rows;
        holdout_rows += round.holdout_rows;
        round.contributed = round.train_rows >= privacy.min_site_rows.max(1)
            && parts.iter().any(|c| !c.update.is_empty());
        if round.contributed {
            for c in parts.iter().filter(|c| c.update.len() == weights.len()) {
                let w = c.train_rows as f64;
                for (s, u) in sum.iter_mut().zip(&c.update) {
                    *s += w * u;
                }
                weight_total += w;
            }
            largest_site = largest_site.max(round.train_rows as f64);
        }
        summary.sites.insert(site.to_string(), round);
    }
    summary.train_loss = if train_rows > 0 {
        train_loss / train_rows as f64
    } else {
        0.0
    };
    if holdout_rows > 0 {
        summary.holdout_loss = Some(holdout_loss / holdout_rows as f64);
        summary.holdout_accuracy = Some(holdout_correct as f64 / holdout_rows as f64);
    }
    if weight_total == 0.0 {
        return Ok(summary);
    }
    // One site changes the weighted average by at most clip_norm × its share of the rows.
    if privacy.noise_multiplier > 0.0 && privacy.clip_norm > 0.0 {
        summary.noise_std =
            privacy.noise_multiplier * privacy.clip_norm * largest_site / weight_total;
    }
    let average: Vec<f64> = sum.iter().map(|s| s / weight_total).collect();
    // Central noise from OpenDP's Gaussian mechanism, drawn from the OS-seeded generator:
    // never from the statement's `seed`, which a client knows.
    let noisy = crate::privacy::gaussian(&average, summary.noise_std)?;
    for (w, step) in weights.iter_mut().zip(noisy) {
        *w += step;
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(site: &str, rows: u64, update: Vec<f64>) -> Contribution {
        Contribution {
            site: site.into(),
            train_rows: rows,
            train_loss: rows as f64 * 0.5,
            update,
            ..Default::default()
        }
    }

    #[test]
    fn updates_are_averaged_by_rows_and_small_sites_left_out() {
        let mut weights = vec![1.0, 1.0];
        let parts = [
            part("a", 300, vec![1.0, 0.0]),
            part("a", 100, vec![1.0, 0.0]),
            part("b", 400, vec![0.0, 1.0]),
            part("c", 5, vec![100.0, 100.0]),
        ];
        let privacy = Privacy {
            min_site_rows: 10,
            ..Default::default()
        };
        let summary = combine(&mut weights, &parts, &privacy).unwrap();
        assert_eq!(weights, vec![1.5, 1.5]);
        assert!(!summary.sites["c"].contributed && summary.sites["a"].contributed);
        assert_eq!(summary.sites["a"].train_rows, 400);
        assert!((summary.train_loss - 0.5).abs() < 1e-12);
        assert!(summary.sites["b"].bytes_sent > 0);
    }

    #[test]
    fn noise_is_scaled_to_the_clip_norm_and_the_largest_share() {
        let mut weights = vec![0.0; 1000];
        let parts = [
            part("a", 100, vec![0.0; 1000]),
            part("b", 300, vec![0.0; 1000]),
        ];
        let privacy = Privacy {
            clip_norm: 2.0,
            noise_multiplier: 1.0,
            min_site_rows: 0,
        };
        let summary = combine(&mut weights, &parts, &privacy).unwrap();
        assert!((summary.noise_std - 1.5).abs() < 1e-12);
        let var = weights.iter().map(|w| w * w).sum::<f64>() / 1000.0;
        assert!((var.sqrt() - 1.5).abs() < 0.15, "{}", var.sqrt());
    }
}
