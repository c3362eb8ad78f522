//! `ai.onnx.ml`'s linear models, as skl2onnx exports LogisticRegression (LinearClassifier,
//! then a Normalizer) and LinearRegression (LinearRegressor): one GEMM each, with the
//! label and score tails ONNX Runtime gives them.

use super::{Compiler, Elem};
use crate::model::dense::steps::{Norm, Step, Unary};
use crate::model::trees::attributes::{Attributes, Unsupported};
use crate::model::trees::proto::NodeProto;
use shoal_kernels::Layer;

impl Compiler {
    /// `LinearRegressor`: `x @ coefficients^T + intercepts`, one column per target.
    pub(super) fn linear_regressor(&mut self, node: &NodeProto) -> Result<(), Unsupported> {
        let attrs = Attributes::new(node);
        if attrs.string_or("post_transform", "NONE") != "NONE" {
            return Err("LinearRegressor with a post_transform".into());
        }
        let targets = usize::try_from(attrs.int_or("targets", 1))
            .map_err(|_| "LinearRegressor with negative targets".to_string())?;
        let (x, layer) = self.linear_layer(node, &attrs, targets)?;
        let out = self.slot(|out| Step::Gemm { x, out, layer });
        self.name(&node.output, 0, Elem::F32, out, vec![targets])
    }

    /// `LinearClassifier` with integer labels: the scores' GEMM, the label of each row's
    /// first largest raw score, and the scores after `post_transform` (none, logistic or
    /// softmax). A binary classifier with one row of coefficients is left to ONNX Runtime,
    /// whose second-class scores for it follow rules of their own.
    pub(super) fn linear_classifier(&mut self, node: &NodeProto) -> Result<(), Unsupported> {
        let attrs = Attributes::new(node);
        let labels = attrs.ints("classlabels_ints");
        if labels.is_empty() {
            return Err("LinearClassifier without integer class labels".into());
        }
        let classes = attrs.floats("intercepts")?.len();
        if classes < 2 || classes != labels.len() {
            return Err(format!(
                "LinearClassifier of {classes} score columns for {} labels",
                labels.len()
            ));
        }
        let (x, layer) = self.linear_layer(node, &attrs, classes)?;
        let raw = self.slot(|out| Step::Gemm { x, out, layer });
        let best = self.slot(|out| Step::ArgMax {
            x: raw,
            cols: classes,
            out,
        });
        let label = self.slot(|out| Step::Classes {
            indices: best,
            classes: labels,
            out,
        });
        let scores = match attrs.string_or("post_transform", "NONE").as_str() {
            "NONE" => raw,
            "LOGISTIC" => self.slot(|out| Step::Unary {
                op: Unary::Sigmoid,
                x: raw,
                out,
            }),
            "SOFTMAX" => self.slot(|out| Step::Softmax {
                x: raw,
                cols: classes,
                out,
            }),
            other => return Err(format!("LinearClassifier with post_transform {other}")),
        };
        self.name(&node.output, 0, Elem::I64, label, vec![])?;
        self.name(&node.output, 1, Elem::F32, scores, vec![classes])
    }

    /// `Normalizer` (MAX, L1 or L2) of a float matrix, as ONNX Runtime computes it.
    pub(super) fn normalizer(&mut self, node: &NodeProto) -> Result<(), Unsupported> {
        let (x, dims) = self.rows(Self::input(node, 0)?)?;
        let norm = match Attributes::new(node).string_or("norm", "MAX").as_str() {
            "MAX" => Norm::Max,
            "L1" => Norm::L1,
            "L2" => Norm::L2,
            other => return Err(format!("Normalizer {other}")),
        };
        let [cols] = dims.as_slice() else {
            return Err("Normalizer of other than a matrix".into());
        };
        let cols = *cols;
        self.push(
            node,
            |out| Step::Normalize { x, cols, norm, out },
            Elem::F32,
            dims,
        )
    }

    /// The layer of a linear model: `outputs` rows of coefficients over the input's columns
    /// and one intercept each (none: zeros).
    fn linear_layer(
        &self,
        node: &NodeProto,
        attrs: &Attributes<'_>,
        outputs: usize,
    ) -> Result<(usize, Layer), Unsupported> {
        let (x, dims) = self.rows(Self::input(node, 0)?)?;
        let [width] = dims.as_slice() else {
            return Err(format!("{} of other than a matrix", node.op_type));
        };
        let width = *width;
        let coefficients = attrs.floats("coefficients")?;
        if Some(coefficients.len()) != outputs.checked_mul(width) || outputs == 0 {
            return Err(format!(
                "{} of {} coefficients for {outputs} outputs of {width} features",
                node.op_type,
                coefficients.len()
            ));
        }
        let mut intercepts = attrs.floats("intercepts")?;
        if intercepts.is_empty() {
            intercepts = vec![0.0; outputs];
        }
        if intercepts.len() != outputs {
            return Err(format!(
                "{} of {} intercepts for {outputs} outputs",
                node.op_type,
                intercepts.len()
            ));
        }
        // Coefficients come one row per output; the layer wants one row per feature.
        let weights: Vec<f32> = (0..width * outputs)
            .map(|i| coefficients[(i % outputs) * width + i / outputs])
            .collect();
        let mut layer = Layer::new(width, outputs, &weights)
            .ok_or_else(|| format!("{} of no features", node.op_type))?;
        layer.take_bias(&intercepts);
        Ok((x, layer))
    }
}
