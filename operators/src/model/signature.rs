//! A model's inputs and outputs, read from the ONNX graph, and how shoal maps SQL arguments
//! onto them.

use crate::error::{Error, Result};
use ort::value::{TensorElementType, ValueType};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TensorElem {
    Float32,
    Float64,
    Int64,
    Int32,
    String,
    Other,
}

impl From<TensorElementType> for TensorElem {
    fn from(t: TensorElementType) -> Self {
        match t {
            TensorElementType::Float32 => TensorElem::Float32,
            TensorElementType::Float64 => TensorElem::Float64,
            TensorElementType::Int64 => TensorElem::Int64,
            TensorElementType::Int32 => TensorElem::Int32,
            TensorElementType::String => TensorElem::String,
            _ => TensorElem::Other,
        }
    }
}

impl fmt::Display for TensorElem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            TensorElem::Float32 => "float32",
            TensorElem::Float64 => "float64",
            TensorElem::Int64 => "int64",
            TensorElem::Int32 => "int32",
            TensorElem::String => "string",
            TensorElem::Other => "other",
        };
        f.write_str(s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TensorSpec {
    pub name: String,
    pub elem: TensorElem,
    /// -1 for a dynamic dimension.
    pub shape: Vec<i64>,
}

impl fmt::Display for TensorSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dims: Vec<String> = self
            .shape
            .iter()
            .map(|d| if *d < 0 { "N".into() } else { d.to_string() })
            .collect();
        write!(f, "{}: {}[{}]", self.name, self.elem, dims.join(", "))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OutputSpec {
    Tensor(TensorSpec),
    /// skl2onnx's default probability output: a sequence of maps (class -> probability).
    ZipMap {
        name: String,
    },
    Unsupported {
        name: String,
        kind: String,
    },
}

impl OutputSpec {
    pub fn name(&self) -> &str {
        match self {
            OutputSpec::Tensor(t) => &t.name,
            OutputSpec::ZipMap { name } | OutputSpec::Unsupported { name, .. } => name,
        }
    }
}

impl fmt::Display for OutputSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutputSpec::Tensor(t) => t.fmt(f),
            OutputSpec::ZipMap { name } => write!(f, "{name}: seq(map) (ZipMap)"),
            OutputSpec::Unsupported { name, kind } => write!(f, "{name}: {kind}"),
        }
    }
}

/// How the n feature arguments of `predict` reach the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputLayout {
    /// One input of shape [N, width]: the arguments are stacked as columns (or one tensor
    /// column of that width is the matrix).
    Stacked { width: usize, elem: TensorElem },
    /// One argument per graph input ([`super::feeds`] checks each): a scalar column for an
    /// [N] or [N, 1] input, a tensor column for any input.
    PerInput { count: usize },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelSignature {
    pub name: String,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<OutputSpec>,
    pub layout: InputLayout,
}

impl ModelSignature {
    pub fn from_outlets(
        name: &str,
        inputs: &[ort::value::Outlet],
        outputs: &[ort::value::Outlet],
    ) -> Result<Self> {
        let unsupported = |reason: String| Error::UnsupportedModel {
            model: name.to_string(),
            reason,
        };
        let mut input_specs = Vec::with_capacity(inputs.len());
        for outlet in inputs {
            match outlet.dtype() {
                ValueType::Tensor { ty, shape, .. } => input_specs.push(TensorSpec {
                    name: outlet.name().to_string(),
                    elem: (*ty).into(),
                    shape: shape.iter().copied().collect(),
                }),
                other => {
                    return Err(unsupported(format!(
                        "input '{}' is {other}, not a tensor",
                        outlet.name()
                    )));
                }
            }
        }
        let outputs = outputs
            .iter()
            .map(|outlet| match outlet.dtype() {
                ValueType::Tensor { ty, shape, .. } => OutputSpec::Tensor(TensorSpec {
                    name: outlet.name().to_string(),
                    elem: (*ty).into(),
                    shape: shape.iter().copied().collect(),
                }),
                ValueType::Sequence(inner) if inner.is_map() => OutputSpec::ZipMap {
                    name: outlet.name().to_string(),
                },
                other => OutputSpec::Unsupported {
                    name: outlet.name().to_string(),
                    kind: other.to_string(),
                },
            })
            .collect::<Vec<_>>();
        if outputs.is_empty() {
            return Err(unsupported("the graph has no outputs".into()));
        }
        let layout = Self::layout_of(&input_specs).map_err(unsupported)?;
        Ok(Self {
            name: name.to_string(),
            inputs: input_specs,
            outputs,
            layout,
        })
    }

    fn layout_of(inputs: &[TensorSpec]) -> std::result::Result<InputLayout, String> {
        let numeric = |t: &TensorSpec| {
            matches!(
                t.elem,
                TensorElem::Float32 | TensorElem::Float64 | TensorElem::Int64
            )
        };
        if let Some(bad) = inputs.iter().find(|t| !numeric(t)) {
            return Err(format!(
                "input '{}' has element type {}; shoal feeds float32, float64 or int64",
                bad.name, bad.elem
            ));
        }
        match inputs {
            [] => Err("the graph has no inputs".into()),
            [only] if only.shape.len() == 2 && only.shape[1] > 1 => Ok(InputLayout::Stacked {
                width: only.shape[1] as usize,
                elem: only.elem,
            }),
            many => Ok(InputLayout::PerInput { count: many.len() }),
        }
    }

    /// Number of SQL feature arguments the model takes.
    pub fn feature_count(&self) -> usize {
        match self.layout {
            InputLayout::Stacked { width, .. } => width,
            InputLayout::PerInput { count } => count,
        }
    }

    /// The output `predict` returns: the first one.
    pub fn predict_output(&self) -> Result<(usize, &TensorSpec)> {
        match &self.outputs[0] {
            OutputSpec::Tensor(t) => Ok((0, t)),
            other => Err(Error::UnsupportedModel {
                model: self.name.clone(),
                reason: format!("its first output is {other}, not a tensor"),
            }),
        }
    }

    /// The output `predict_proba` reads: `probabilities`, else the last float tensor
    /// [N, k] with k >= 2 classes (a regressor's [N, 1] output is not a probability).
    pub fn proba_output(&self) -> Result<(usize, &TensorSpec)> {
        let is_proba = |o: &OutputSpec| match o {
            OutputSpec::Tensor(t) => {
                t.elem == TensorElem::Float32 && t.shape.len() == 2 && t.shape[1] >= 2
            }
            _ => false,
        };
        let by_name = self
            .outputs
            .iter()
            .position(|o| o.name() == "probabilities" || o.name() == "output_probability");
        if let Some(i) = by_name {
            return match &self.outputs[i] {
                OutputSpec::ZipMap { .. } => Err(Error::ZipMapOutput {
                    model: self.name.clone(),
                }),
                OutputSpec::Tensor(t) if is_proba(&self.outputs[i]) => Ok((i, t)),
                other => Err(Error::UnsupportedModel {
                    model: self.name.clone(),
                    reason: format!("probability output is {other}, not float32[N, k]"),
                }),
            };
        }
        if let Some(i) = self.outputs.iter().rposition(is_proba)
            && let OutputSpec::Tensor(t) = &self.outputs[i]
        {
            return Ok((i, t));
        }
        if self
            .outputs
            .iter()
            .any(|o| matches!(o, OutputSpec::ZipMap { .. }))
        {
            return Err(Error::ZipMapOutput {
                model: self.name.clone(),
            });
        }
        Err(Error::NoProbabilities {
            model: self.name.clone(),
        })
    }

    pub fn describe_inputs(&self) -> String {
        join(self.inputs.iter())
    }

    pub fn describe_outputs(&self) -> String {
        join(self.outputs.iter())
    }
}

fn join<T: fmt::Display>(items: impl Iterator<Item = T>) -> String {
    items.map(|i| i.to_string()).collect::<Vec<_>>().join("; ")
}
