//! The largest training a site accepts. The training aggregates allocate in proportion to
//! their shapes (a Gram matrix is features², a network's weights are layer by layer) and
//! loop in proportion to their epochs, so every shape and count is checked against these
//! bounds where the aggregate is created, on the worker, whoever built the plan: a plan
//! past them is an error naming the bound, never an abort or a core spinning for ever.

use super::fedavg::RoundPlan;
use super::network::Architecture;
use datafusion::common::{DataFusionError, Result};

/// Feature columns a model may train on (a Gram matrix of 1024² is 8 MiB).
pub const MAX_FEATURES: usize = 1024;
/// Hidden layers of a network, and units in each.
pub const MAX_HIDDEN_LAYERS: usize = 4;
pub const MAX_HIDDEN_UNITS: usize = 1024;
/// Passes over a site's rows per round.
pub const MAX_EPOCHS: usize = 1000;
/// Rows per SGD step.
pub const MAX_BATCH_SIZE: usize = 1_000_000;

fn out_of_bounds(function: &str, message: String) -> DataFusionError {
    DataFusionError::ResourcesExhausted(format!("{function}: {message}"))
}

/// Refuses more features than [`MAX_FEATURES`].
pub fn check_features(function: &str, features: usize) -> Result<()> {
    if features > MAX_FEATURES {
        return Err(out_of_bounds(
            function,
            format!("{features} features, over the limit of {MAX_FEATURES}"),
        ));
    }
    Ok(())
}

impl Architecture {
    /// The number of weights, or an error naming the bound the shape passes.
    pub fn checked_param_count(&self, function: &str) -> Result<usize> {
        check_features(function, self.inputs)?;
        if self.inputs == 0 {
            return Err(DataFusionError::Plan(format!(
                "{function}: a model needs a feature"
            )));
        }
        if self.hidden.len() > MAX_HIDDEN_LAYERS
            || self.hidden.iter().any(|&h| h == 0 || h > MAX_HIDDEN_UNITS)
        {
            return Err(out_of_bounds(
                function,
                format!(
                    "hidden layers {:?}: at most {MAX_HIDDEN_LAYERS} layers of 1 to \
                     {MAX_HIDDEN_UNITS} units",
                    self.hidden
                ),
            ));
        }
        // Within the bounds above the count fits easily in a usize.
        Ok(self.param_count())
    }
}

impl RoundPlan {
    /// Checks every size and count of the plan against the bounds and against each other
    /// (weights for the architecture, scaling for the features).
    pub fn validate(&self, function: &str) -> Result<()> {
        let params = self.architecture.checked_param_count(function)?;
        let bad = |message: String| Err(DataFusionError::Plan(format!("{function}: {message}")));
        if self.weights.len() != params {
            return bad(format!(
                "{} weights for a model of {params}",
                self.weights.len()
            ));
        }
        let inputs = self.architecture.inputs;
        let scaling = &self.scaling;
        if scaling.feature_mean.len() != inputs || scaling.feature_std.len() != inputs {
            return bad(format!(
                "feature scaling for {inputs} features has the wrong length"
            ));
        }
        if self.sgd.epochs > MAX_EPOCHS {
            return Err(out_of_bounds(
                function,
                format!("{} epochs, over the limit of {MAX_EPOCHS}", self.sgd.epochs),
            ));
        }
        if self.sgd.batch_size == 0 || self.sgd.batch_size > MAX_BATCH_SIZE {
            return bad(format!(
                "batch size {} is not in 1..={MAX_BATCH_SIZE}",
                self.sgd.batch_size
            ));
        }
        let finite = [
            self.sgd.learning_rate,
            self.sgd.l2,
            self.clip_norm,
            self.holdout,
            scaling.target_mean,
            scaling.target_std,
        ]
        .into_iter()
        .chain(scaling.feature_mean.iter().copied())
        .chain(scaling.feature_std.iter().copied())
        .chain(self.weights.iter().copied())
        .all(f64::is_finite);
        if !finite || !(0.0..1.0).contains(&self.holdout) {
            return bad("the round plan has a value that is not finite or out of range".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::network::{Objective, Scaling, SgdOptions};

    fn plan(hidden: Vec<usize>, epochs: usize) -> RoundPlan {
        let architecture = Architecture {
            inputs: 3,
            hidden,
            objective: Objective::Binary,
        };
        RoundPlan {
            weights: vec![0.0; architecture.checked_param_count("test").unwrap_or(0)],
            architecture,
            scaling: Scaling::identity(3),
            sgd: SgdOptions {
                learning_rate: 0.1,
                l2: 0.0,
                epochs,
                batch_size: 32,
                seed: 0,
            },
            clip_norm: 0.0,
            min_rows: 0,
            holdout: 0.0,
        }
    }

    #[test]
    fn plans_past_the_bounds_are_refused_naming_them() {
        assert!(plan(vec![8], 1).validate("f").is_ok());
        let err = plan(vec![1 << 30], 1)
            .validate("f")
            .unwrap_err()
            .to_string();
        assert!(err.contains("hidden layers"), "{err}");
        let err = plan(vec![8], 1 << 50)
            .validate("f")
            .unwrap_err()
            .to_string();
        assert!(err.contains("epochs, over the limit"), "{err}");
        let mut short = plan(vec![8], 1);
        short.weights.pop();
        let err = short.validate("f").unwrap_err().to_string();
        assert!(err.contains("weights for a model of"), "{err}");
        let mut nan = plan(vec![], 1);
        nan.sgd.learning_rate = f64::NAN;
        assert!(nan.validate("f").is_err());
        assert!(check_features("f", MAX_FEATURES + 1).is_err());
    }
}
