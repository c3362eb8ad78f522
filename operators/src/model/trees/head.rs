//! What a TreeEnsemble node makes of the summed leaf scores: a regressor's values, or a
//! classifier's labels and probabilities. The rules (base values, binary classifiers with one
//! vote column, the label of a two-class model, the post transforms) follow ONNX Runtime's
//! CPU kernel so that answers agree with it; the tests compare both on several models.

use super::attributes::{Attributes, Unsupported};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostTransform {
    None,
    Logistic,
    Softmax,
}

impl PostTransform {
    pub fn parse(name: &str) -> Result<Self, Unsupported> {
        match name {
            "NONE" => Ok(Self::None),
            "LOGISTIC" => Ok(Self::Logistic),
            "SOFTMAX" => Ok(Self::Softmax),
            other => Err(format!("post_transform {other}")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    Sum,
    Average,
}

#[derive(Debug)]
pub enum Head {
    Regressor {
        targets: usize,
        base_values: Vec<f32>,
        aggregate: Aggregate,
    },
    Classifier {
        labels: Vec<i64>,
        base_values: Vec<f32>,
        post: PostTransform,
        /// Two classes, all votes for one column: the other column is derived.
        binary_case: bool,
        weights_all_positive: bool,
    },
}

/// A classifier's outputs for a batch.
pub struct Classified {
    pub labels: Vec<i64>,
    /// rows x classes, row-major.
    pub probabilities: Vec<f32>,
}

impl Head {
    pub fn regressor(attrs: &Attributes<'_>) -> Result<(Self, usize), Unsupported> {
        let targets = usize::try_from(attrs.int_or("n_targets", 0))
            .ok()
            .filter(|t| *t > 0)
            .ok_or("n_targets is missing")?;
        let post = PostTransform::parse(&attrs.string_or("post_transform", "NONE"))?;
        if post != PostTransform::None {
            return Err("a regressor with a post transform".into());
        }
        let aggregate = match attrs.string_or("aggregate_function", "SUM").as_str() {
            "SUM" => Aggregate::Sum,
            "AVERAGE" => Aggregate::Average,
            other => return Err(format!("aggregate_function {other}")),
        };
        let base_values = attrs.floats("base_values")?;
        Ok((
            Self::Regressor {
                targets,
                base_values,
                aggregate,
            },
            targets,
        ))
    }

    pub fn classifier(
        attrs: &Attributes<'_>,
        class_ids: &[i64],
        weights: &[f32],
    ) -> Result<(Self, usize), Unsupported> {
        if attrs.has("classlabels_strings") {
            return Err("string class labels".into());
        }
        let labels = attrs.ints("classlabels_int64s");
        if labels.is_empty() {
            return Err("no class labels".into());
        }
        let post = PostTransform::parse(&attrs.string_or("post_transform", "NONE"))?;
        let mut vote_columns: Vec<i64> = class_ids.to_vec();
        vote_columns.sort_unstable();
        vote_columns.dedup();
        let classes = labels.len();
        Ok((
            Self::Classifier {
                binary_case: classes == 2 && vote_columns.len() == 1,
                weights_all_positive: weights.iter().all(|w| *w >= 0.0),
                labels,
                base_values: attrs.floats("base_values")?,
                post,
            },
            classes,
        ))
    }

    /// A regressor's values, `rows x targets`, from summed scores.
    pub fn regress(&self, mut scores: Vec<f32>, trees: usize) -> Vec<f32> {
        let Head::Regressor {
            targets,
            base_values,
            aggregate,
        } = self
        else {
            return scores;
        };
        let targets = *targets;
        // One target: a single base value is the origin. Several: one base value per target.
        let base: Vec<f32> = if targets == 1 {
            vec![if base_values.len() == 1 {
                base_values[0]
            } else {
                0.0
            }]
        } else if base_values.len() == targets {
            base_values.clone()
        } else {
            vec![0.0; targets]
        };
        for row in scores.chunks_mut(targets) {
            for (score, base) in row.iter_mut().zip(&base) {
                if *aggregate == Aggregate::Average {
                    *score /= trees as f32;
                }
                *score += base;
            }
        }
        scores
    }

    /// A classifier's labels and probabilities from summed scores; `scored[k]` says whether
    /// column k received votes.
    pub fn classify(&self, scores: &[f32], scored: &[bool], rows: usize) -> Classified {
        let Head::Classifier {
            labels,
            base_values,
            post,
            binary_case,
            weights_all_positive,
        } = self
        else {
            return Classified {
                labels: Vec::new(),
                probabilities: Vec::new(),
            };
        };
        let classes = labels.len();
        let mut out = Classified {
            labels: Vec::with_capacity(rows),
            probabilities: Vec::with_capacity(rows * classes),
        };
        let mut row_scores: Vec<f32> = Vec::with_capacity(classes);
        let mut has: Vec<bool> = Vec::with_capacity(classes);
        for row in scores.chunks(classes) {
            row_scores.clear();
            row_scores.extend_from_slice(row);
            has.clear();
            has.extend_from_slice(scored);
            let (label, second) = if classes > 2 {
                for (k, base) in base_values.iter().enumerate().take(classes) {
                    row_scores[k] += base;
                    has[k] = true;
                }
                (labels[argmax(&row_scores, &has)], None)
            } else {
                let mut additional = None;
                let mut keep_two = true;
                match base_values.len() {
                    2 if has[1] => {
                        row_scores[1] = base_values[1] + row_scores[0];
                        row_scores[0] = -row_scores[1];
                    }
                    2 => {
                        row_scores[1] += base_values[1];
                        row_scores[0] += base_values[0];
                    }
                    1 => {
                        row_scores[0] += base_values[0];
                        keep_two = has[1];
                    }
                    0 => {
                        additional = Some(Additional::MixedNegative);
                        keep_two = has[1];
                    }
                    _ => {}
                }
                let positive = if keep_two && has[1] {
                    row_scores[1]
                } else if has[0] {
                    row_scores[0]
                } else {
                    0.0
                };
                let label = if *binary_case {
                    let (extra, winner) = match (*weights_all_positive, positive) {
                        (true, p) if p > 0.5 => (Additional::PositiveWinsPositive, 1),
                        (true, _) => (Additional::PositiveWinsNegative, 0),
                        (false, p) if p > 0.0 => (Additional::MixedPositive, 1),
                        (false, _) => (Additional::MixedNegative, 0),
                    };
                    additional = Some(extra);
                    labels[winner]
                } else {
                    i64::from(positive > 0.0)
                };
                (label, (!keep_two).then_some(additional))
            };
            out.labels.push(label);
            match second {
                // One score column: the other is derived from it.
                Some(additional) => {
                    let s = row_scores[0];
                    match additional {
                        Some(
                            Additional::PositiveWinsPositive | Additional::PositiveWinsNegative,
                        ) => {
                            out.probabilities.extend_from_slice(&[1.0 - s, s]);
                        }
                        Some(Additional::MixedPositive | Additional::MixedNegative) => {
                            if *post == PostTransform::Logistic {
                                out.probabilities
                                    .extend_from_slice(&[logistic(-s), logistic(s)]);
                            } else {
                                out.probabilities.extend_from_slice(&[-s, s]);
                            }
                        }
                        None => out.probabilities.extend_from_slice(&[s, 0.0]),
                    }
                }
                None => {
                    transform(&mut row_scores, *post);
                    out.probabilities.extend_from_slice(&row_scores);
                }
            }
        }
        out
    }
}

/// How the second column of a one-column binary classifier is written.
#[derive(Debug, Clone, Copy)]
enum Additional {
    PositiveWinsPositive,
    PositiveWinsNegative,
    MixedPositive,
    MixedNegative,
}

/// First class with the highest score among those that have one.
fn argmax(scores: &[f32], has: &[bool]) -> usize {
    let mut best: Option<usize> = None;
    for k in 0..scores.len() {
        if has[k] && best.is_none_or(|b| scores[k] > scores[b]) {
            best = Some(k);
        }
    }
    best.unwrap_or(0)
}

/// ONNX Runtime's logistic: computed on |x| and mirrored, so it is exact at both ends.
pub fn logistic(x: f32) -> f32 {
    let v = 1.0 / (1.0 + (-x.abs()).exp());
    if x < 0.0 { 1.0 - v } else { v }
}

fn transform(scores: &mut [f32], post: PostTransform) {
    match post {
        PostTransform::None => {}
        PostTransform::Logistic => scores.iter_mut().for_each(|s| *s = logistic(*s)),
        PostTransform::Softmax => {
            let max = scores.iter().copied().fold(-f32::MAX, f32::max);
            let mut sum = 0.0f32;
            for s in scores.iter_mut() {
                *s = (*s - max).exp();
                sum += *s;
            }
            scores.iter_mut().for_each(|s| *s /= sum);
        }
    }
}
