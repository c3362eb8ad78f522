//! The options of `CREATE MODEL` (and of a pipeline's `train` node), checked and expanded
//! into the trials to run.

use super::statement::OptionValue;
use serde::{Deserialize, Serialize};
use shoal_operators::train::bounds;
use shoal_operators::train::combine::Privacy;
use shoal_operators::train::network::Objective;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Exact least squares (ridge) from the sites' sufficient statistics.
    Linear,
    /// Binary logistic regression by federated averaging.
    Logistic,
    /// A one-hidden-layer ReLU network by federated averaging.
    Mlp,
}

impl ModelKind {
    pub fn parse(kind: &str) -> Result<Self, String> {
        match kind {
            "linear" | "linear_regression" => Ok(ModelKind::Linear),
            "logistic" | "logistic_regression" => Ok(ModelKind::Logistic),
            "mlp" => Ok(ModelKind::Mlp),
            other => Err(format!(
                "unknown model kind '{other}': train linear, logistic or mlp"
            )),
        }
    }
}

/// The options one federated training runs with (one trial of a search).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hyper {
    pub learning_rate: f64,
    pub l2: f64,
    pub rounds: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub hidden: usize,
}

impl Hyper {
    fn set(&mut self, key: &str, value: f64) {
        match key {
            "learning_rate" => self.learning_rate = value,
            "l2" => self.l2 = value,
            "rounds" => self.rounds = value as usize,
            "epochs" => self.epochs = value as usize,
            "batch_size" => self.batch_size = value as usize,
            "hidden" => self.hidden = value as usize,
            _ => {}
        }
    }

    /// "learning_rate=0.1, l2=0" for the keys a search varies.
    pub fn describe(&self, keys: &[String]) -> String {
        let value = |k: &str| match k {
            "learning_rate" => self.learning_rate.to_string(),
            "l2" => self.l2.to_string(),
            "rounds" => self.rounds.to_string(),
            "epochs" => self.epochs.to_string(),
            "batch_size" => self.batch_size.to_string(),
            "hidden" => self.hidden.to_string(),
            _ => String::new(),
        };
        keys.iter()
            .map(|k| format!("{k}={}", value(k)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Search {
    Grid,
    Random,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub kind: ModelKind,
    pub objective: Objective,
    pub base: Hyper,
    pub privacy: Privacy,
    /// Share of each site's rows held out for scoring (by a hash of the row).
    pub holdout: f64,
    pub seed: u64,
    pub search: Option<Search>,
    /// Random search: how many combinations to try.
    pub trials: usize,
    /// The searched keys and their candidate values, in the order written.
    pub searched: Vec<(String, Vec<f64>)>,
}

/// Trials a search may run unless the coordinator says otherwise (`--max-search-trials`).
pub const DEFAULT_MAX_SEARCH_TRIALS: usize = 64;

const SEARCHABLE: &[&str] = &[
    "learning_rate",
    "l2",
    "rounds",
    "epochs",
    "batch_size",
    "hidden",
];
const OTHER_KEYS: &[&str] = &[
    "clip_norm",
    "noise_multiplier",
    "min_site_rows",
    "holdout",
    "seed",
    "search",
    "trials",
    "objective",
];
/// Options that mean something for exact linear regression.
const LINEAR_KEYS: &[&str] = &["l2", "min_site_rows"];

fn number(key: &str, value: &OptionValue) -> Result<f64, String> {
    match value {
        OptionValue::Number(n) => Ok(*n),
        other => Err(format!("option '{key}' takes a number, found {other}")),
    }
}

fn text<'a>(key: &str, value: &'a OptionValue) -> Result<&'a str, String> {
    match value {
        OptionValue::Text(s) => Ok(s),
        other => Err(format!(
            "option '{key}' takes a word or string, found {other}"
        )),
    }
}

fn unknown_key(key: &str) -> String {
    let all = SEARCHABLE.iter().chain(OTHER_KEYS);
    let nearest = all
        .clone()
        .min_by(|a, b| strsim::levenshtein(key, a).cmp(&strsim::levenshtein(key, b)))
        .filter(|k| strsim::levenshtein(key, k) <= 3);
    let options: Vec<&str> = all.copied().collect();
    match nearest {
        Some(k) => format!(
            "unknown option '{key}' (did you mean '{k}'?); options: {}",
            options.join(", ")
        ),
        None => format!("unknown option '{key}'; options: {}", options.join(", ")),
    }
}

/// Checks a value against its bounds: (lowest, highest, whole number).
fn check_range(key: &str, v: f64) -> Result<(), String> {
    let (lo, hi, whole) = match key {
        "learning_rate" => (1e-9, 100.0, false),
        "l2" => (0.0, 1e6, false),
        "rounds" => (1.0, 10_000.0, true),
        "epochs" => (1.0, bounds::MAX_EPOCHS as f64, true),
        "batch_size" => (1.0, bounds::MAX_BATCH_SIZE as f64, true),
        "hidden" => (1.0, bounds::MAX_HIDDEN_UNITS as f64, true),
        "clip_norm" | "noise_multiplier" => (0.0, 1e9, false),
        "min_site_rows" => (0.0, 1e15, true),
        "holdout" => (0.0, 0.9, false),
        "seed" => (0.0, 9e15, true),
        "trials" => (1.0, DEFAULT_MAX_SEARCH_TRIALS as f64, true),
        _ => (f64::MIN, f64::MAX, false),
    };
    if !(lo..=hi).contains(&v) || (whole && v.fract() != 0.0) {
        let kind = if whole { "a whole number" } else { "a number" };
        return Err(format!(
            "option '{key}' must be {kind} in [{lo}, {hi}], found {v}"
        ));
    }
    Ok(())
}

impl TrainConfig {
    pub fn from_options(
        kind: ModelKind,
        options: &[(String, OptionValue)],
    ) -> Result<Self, String> {
        let mut config = TrainConfig {
            kind,
            objective: match kind {
                ModelKind::Linear => Objective::Regression,
                _ => Objective::Binary,
            },
            base: Hyper {
                learning_rate: 0.5,
                l2: 0.0,
                rounds: 20,
                epochs: 1,
                batch_size: 32,
                hidden: 16,
            },
            privacy: Privacy::default(),
            holdout: 0.0,
            seed: 0,
            search: None,
            trials: 8,
            searched: Vec::new(),
        };
        let mut holdout_given = false;
        for (key, value) in options {
            let key = key.as_str();
            if !SEARCHABLE.contains(&key) && !OTHER_KEYS.contains(&key) {
                return Err(unknown_key(key));
            }
            if kind == ModelKind::Linear && !LINEAR_KEYS.contains(&key) {
                return Err(format!(
                    "option '{key}' does not apply to linear regression (solved exactly from the \
                     sites' statistics); it takes: {}",
                    LINEAR_KEYS.join(", ")
                ));
            }
            if key == "objective" {
                config.objective = match text(key, value)? {
                    "binary" | "classification" => Objective::Binary,
                    "regression" if kind == ModelKind::Mlp => Objective::Regression,
                    other => {
                        return Err(format!(
                            "option 'objective' = '{other}': logistic is binary; mlp takes \
                             'binary' or 'regression'"
                        ));
                    }
                };
                continue;
            }
            if key == "search" {
                config.search = Some(match text(key, value)? {
                    "grid" => Search::Grid,
                    "random" => Search::Random,
                    other => {
                        return Err(format!(
                            "option 'search' = '{other}': use 'grid' or 'random'"
                        ));
                    }
                });
                continue;
            }
            if let OptionValue::List(items) = value {
                if !SEARCHABLE.contains(&key) {
                    return Err(format!(
                        "option '{key}' takes one value; lists are for searched options: {}",
                        SEARCHABLE.join(", ")
                    ));
                }
                let values = items
                    .iter()
                    .map(|v| number(key, v).and_then(|n| check_range(key, n).map(|_| n)))
                    .collect::<Result<Vec<f64>, String>>()?;
                config.searched.push((key.to_string(), values));
                continue;
            }
            let v = number(key, value)?;
            check_range(key, v)?;
            match key {
                "clip_norm" => config.privacy.clip_norm = v,
                "noise_multiplier" => config.privacy.noise_multiplier = v,
                "min_site_rows" => config.privacy.min_site_rows = v as u64,
                "holdout" => {
                    config.holdout = v;
                    holdout_given = true;
                }
                "seed" => config.seed = v as u64,
                "trials" => config.trials = v as usize,
                other => config.base.set(other, v),
            }
        }
        if config.privacy.noise_multiplier > 0.0 && config.privacy.clip_norm == 0.0 {
            return Err(
                "option 'noise_multiplier' needs 'clip_norm': the noise is calibrated to the \
                 clipped update's norm"
                    .into(),
            );
        }
        if kind == ModelKind::Logistic && config.searched.iter().any(|(k, _)| k == "hidden") {
            return Err("option 'hidden' applies to mlp, not logistic".into());
        }
        match (config.search, config.searched.is_empty()) {
            (None, false) => {
                return Err(format!(
                    "option '{}' has a list of values: add search = 'grid' or search = 'random'",
                    config.searched[0].0
                ));
            }
            (Some(_), true) => {
                return Err(
                    "search needs at least one option with a list of values, e.g. \
                            learning_rate = [0.1, 0.5]"
                        .into(),
                );
            }
            (Some(_), false) if !holdout_given => config.holdout = 0.2,
            (Some(_), false) if config.holdout == 0.0 => {
                return Err(
                    "a search scores its trials on held-out rows: holdout must be > 0".into(),
                );
            }
            _ => {}
        }
        Ok(config)
    }

    /// How many combinations the searched lists span (saturating: a grid past u128 is
    /// counted as u128::MAX). Computed from the list lengths: nothing is materialised.
    pub fn grid_size(&self) -> u128 {
        self.searched.iter().fold(1u128, |n, (_, values)| {
            n.saturating_mul(values.len() as u128)
        })
    }

    /// Refuses a search that would run more than `max_trials` trials, naming the count.
    pub fn check_search_size(&self, max_trials: usize) -> Result<(), String> {
        let planned = match self.search {
            None => return Ok(()),
            Some(Search::Grid) => self.grid_size(),
            Some(Search::Random) => self.grid_size().min(self.trials as u128),
        };
        if planned <= max_trials as u128 {
            return Ok(());
        }
        let lists: Vec<String> = self
            .searched
            .iter()
            .map(|(key, values)| format!("{key} ({} values)", values.len()))
            .collect();
        let count = if planned == u128::MAX {
            "more than 10^38".to_string()
        } else {
            planned.to_string()
        };
        Err(format!(
            "the search over {} is {count} trials, over the limit of {max_trials} \
             (--max-search-trials); search = 'random' with trials = N tries N of them",
            lists.join(" x ")
        ))
    }

    /// The trials to run: one without a search; the grid's combinations, or `trials`
    /// combinations of it drawn at random without repeats. Only the trials returned are
    /// built (a random draw picks combination numbers, then builds those), so a search
    /// is as large as [`Self::check_search_size`] allows, whatever its grid.
    pub fn trials(&self) -> Vec<Hyper> {
        let total = self.grid_size();
        let numbers: Vec<u128> = match self.search {
            Some(Search::Random) if total > self.trials as u128 => {
                use rand::{Rng, SeedableRng};
                let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed);
                let mut picked = std::collections::BTreeSet::new();
                while picked.len() < self.trials {
                    picked.insert(rng.random_range(0..total));
                }
                picked.into_iter().collect()
            }
            _ => (0..total).collect(),
        };
        numbers.into_iter().map(|n| self.combination(n)).collect()
    }

    /// Combination number `n` of the grid, the last searched key varying fastest (the
    /// order of a nested loop over the keys as written).
    fn combination(&self, mut n: u128) -> Hyper {
        let mut hyper = self.base.clone();
        for (key, values) in self.searched.iter().rev() {
            let len = values.len().max(1) as u128;
            if let Some(v) = values.get((n % len) as usize) {
                hyper.set(key, *v);
            }
            n /= len;
        }
        hyper
    }

    pub fn searched_keys(&self) -> Vec<String> {
        self.searched.iter().map(|(k, _)| k.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[(&str, OptionValue)]) -> Vec<(String, OptionValue)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn a_grid_expands_to_every_combination_and_random_draws_a_subset() -> Result<(), String> {
        let list =
            |v: &[f64]| OptionValue::List(v.iter().map(|n| OptionValue::Number(*n)).collect());
        let options = opts(&[
            ("search", OptionValue::Text("grid".into())),
            ("learning_rate", list(&[0.1, 0.5])),
            ("hidden", list(&[4.0, 8.0, 16.0])),
        ]);
        let grid = TrainConfig::from_options(ModelKind::Mlp, &options)?;
        assert_eq!(grid.trials().len(), 6);
        assert_eq!(grid.holdout, 0.2);
        let mut random = options.clone();
        random[0].1 = OptionValue::Text("random".into());
        random.push(("trials".into(), OptionValue::Number(4.0)));
        let random = TrainConfig::from_options(ModelKind::Mlp, &random)?;
        let trials = random.trials();
        assert_eq!(trials.len(), 4);
        assert!(trials.iter().all(|t| grid.trials().contains(t)));
        Ok(())
    }

    #[test]
    fn a_search_is_sized_before_anything_is_built() -> Result<(), String> {
        let list =
            |n: usize| OptionValue::List((1..=n).map(|i| OptionValue::Number(i as f64)).collect());
        let mut options = opts(&[("search", OptionValue::Text("grid".into()))]);
        for key in ["rounds", "epochs", "batch_size", "hidden", "l2"] {
            options.push((key.into(), list(25)));
        }
        options.push(("learning_rate".into(), list(25)));
        let grid = TrainConfig::from_options(ModelKind::Mlp, &options)?;
        assert_eq!(grid.grid_size(), 25u128.pow(6));
        let err = grid.check_search_size(64).unwrap_err();
        assert!(
            err.contains("244140625 trials") && err.contains("--max-search-trials"),
            "{err}"
        );
        options[0].1 = OptionValue::Text("random".into());
        options.push(("trials".into(), OptionValue::Number(10.0)));
        let random = TrainConfig::from_options(ModelKind::Mlp, &options)?;
        random.check_search_size(64)?;
        let trials = random.trials();
        assert_eq!(trials.len(), 10);
        assert!(trials.iter().all(|t| (1..=25).contains(&t.epochs)));
        Ok(())
    }

    #[test]
    fn bad_options_are_named() {
        let err = |kind, o: &[(&str, OptionValue)]| {
            TrainConfig::from_options(kind, &opts(o)).unwrap_err()
        };
        assert!(
            err(
                ModelKind::Logistic,
                &[("learning_rat", OptionValue::Number(0.1))]
            )
            .contains("did you mean 'learning_rate'")
        );
        assert!(
            err(ModelKind::Linear, &[("rounds", OptionValue::Number(3.0))])
                .contains("does not apply to linear")
        );
        assert!(
            err(ModelKind::Logistic, &[("rounds", OptionValue::Number(0.5))])
                .contains("'rounds' must be a whole number")
        );
        assert!(
            err(
                ModelKind::Logistic,
                &[("noise_multiplier", OptionValue::Number(1.0))]
            )
            .contains("needs 'clip_norm'")
        );
        assert!(
            err(
                ModelKind::Logistic,
                &[("l2", OptionValue::List(vec![OptionValue::Number(0.0)]))]
            )
            .contains("add search")
        );
    }
}
