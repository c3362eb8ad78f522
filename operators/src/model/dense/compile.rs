//! A dense ONNX graph compiled into [`Step`]s: each value either varies by row (it lives in
//! a slot) or is a constant (an initializer), and each operator becomes one step, an alias,
//! or a bias or activation folded into the GEMM before it.

mod linear;

use super::steps::{Binary, Operand, Step, Unary};
use super::{GraphOutput, NativeDense};
use crate::model::trees::attributes::{Attributes, Unsupported};
use crate::model::trees::proto::{ModelProto, NodeProto, TensorProto};
use prost::Message;
use shoal_kernels::Layer;
use std::collections::HashMap;

/// Most operators a graph compiled here may have (tabular models have tens).
const MAX_NODES: usize = 10_000;

#[derive(Debug, Clone)]
enum Known {
    /// A value per row: its slot, its element type, and its dimensions after the batch one
    /// (empty: one value per row, shape [N]).
    Rows {
        slot: usize,
        elem: Elem,
        dims: Vec<usize>,
    },
    Const {
        dims: Vec<usize>,
        values: Values,
    },
}

#[derive(Debug, Clone)]
enum Values {
    F32(Vec<f32>),
    /// Integers (int64, or int32 when `elem` says so), held as int64.
    Ints {
        values: Vec<i64>,
        elem: Elem,
    },
}

/// A value's ONNX element type; integers are held as int64 whatever their width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Elem {
    F32,
    I64,
    I32,
}

const ONNX_FLOAT: i32 = 1;
const ONNX_INT32: i32 = 6;
const ONNX_INT64: i32 = 7;

fn cols(dims: &[usize]) -> usize {
    // Saturating: a hostile graph's dimensions must not overflow (usize::MAX then matches
    // no real width, and the graph is left to ONNX Runtime).
    dims.iter()
        .try_fold(1usize, |n, d| n.checked_mul(*d))
        .unwrap_or(usize::MAX)
}

pub fn compile(bytes: &[u8], width: usize) -> Result<NativeDense, Unsupported> {
    let model = ModelProto::decode(bytes).map_err(|e| format!("not ONNX: {e}"))?;
    let graph = model.graph.ok_or("no graph")?;
    let [input] = graph.input.as_slice() else {
        return Err(format!("{} graph inputs", graph.input.len()));
    };
    if graph.node.len() > MAX_NODES {
        return Err(format!("{} operators", graph.node.len()));
    }
    let mut compiler = Compiler {
        known: HashMap::new(),
        uses: HashMap::new(),
        steps: Vec::new(),
        slots: 1,
    };
    for node in &graph.node {
        for name in &node.input {
            *compiler.uses.entry(name.clone()).or_default() += 1;
        }
    }
    for output in &graph.output {
        *compiler.uses.entry(output.name.clone()).or_default() += 1;
    }
    for tensor in &graph.initializer {
        compiler
            .known
            .insert(tensor.name.clone(), constant(tensor)?);
    }
    compiler.known.insert(
        input.name.clone(),
        Known::Rows {
            slot: 0,
            elem: Elem::F32,
            dims: vec![width],
        },
    );
    for node in &graph.node {
        compiler.node(node)?;
    }
    if !compiler
        .steps
        .iter()
        .any(|s| matches!(s, Step::Gemm { .. }))
    {
        return Err("no MatMul or Gemm".into());
    }
    let outputs = graph
        .output
        .iter()
        .map(|o| match compiler.known.get(&o.name) {
            Some(Known::Rows { slot, elem, dims }) if *elem != Elem::I32 => Ok(GraphOutput {
                slot: *slot,
                int64: *elem == Elem::I64,
                dims: dims.clone(),
            }),
            _ => Err(format!("graph output '{}' does not vary by row", o.name)),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(NativeDense {
        steps: compiler.steps,
        slots: compiler.slots,
        width,
        outputs,
    })
}

struct Compiler {
    known: HashMap<String, Known>,
    /// How many operators (and graph outputs) read each value.
    uses: HashMap<String, usize>,
    steps: Vec<Step>,
    slots: usize,
}

impl Compiler {
    fn get(&self, name: &str) -> Result<&Known, Unsupported> {
        self.known
            .get(name)
            .ok_or_else(|| format!("value '{name}' is read before it is written"))
    }

    /// A float value per row: its slot and dimensions.
    fn rows(&self, name: &str) -> Result<(usize, Vec<usize>), Unsupported> {
        match self.get(name)? {
            Known::Rows {
                slot,
                elem: Elem::F32,
                dims,
            } => Ok((*slot, dims.clone())),
            _ => Err(format!("'{name}' is not a float value per row")),
        }
    }

    fn push(
        &mut self,
        node: &NodeProto,
        step: impl FnOnce(usize) -> Step,
        elem: Elem,
        dims: Vec<usize>,
    ) -> Result<(), Unsupported> {
        let out = self.slot(step);
        self.set(
            node,
            Known::Rows {
                slot: out,
                elem,
                dims,
            },
        )
    }

    /// A new step, writing a new slot; returns the slot.
    fn slot(&mut self, step: impl FnOnce(usize) -> Step) -> usize {
        let out = self.slots;
        self.slots += 1;
        self.steps.push(step(out));
        out
    }

    /// Output `i` of an operator with several: the values of `slot`.
    fn name(
        &mut self,
        outputs: &[String],
        i: usize,
        elem: Elem,
        slot: usize,
        dims: Vec<usize>,
    ) -> Result<(), Unsupported> {
        let name = outputs
            .get(i)
            .ok_or_else(|| format!("an operator without output {i}"))?;
        if !name.is_empty() {
            let value = Known::Rows { slot, elem, dims };
            Self::has_columns(name, &value)?;
            self.known.insert(name.clone(), value);
        }
        Ok(())
    }

    fn set(&mut self, node: &NodeProto, value: Known) -> Result<(), Unsupported> {
        let [name] = node.output.as_slice() else {
            return Err(format!(
                "{} with {} outputs",
                node.op_type,
                node.output.len()
            ));
        };
        Self::has_columns(name, &value)?;
        self.known.insert(name.clone(), value);
        Ok(())
    }

    /// A value per row must have at least one column: the steps cut blocks into rows of
    /// its width (a hostile graph may declare a dimension of 0).
    fn has_columns(name: &str, value: &Known) -> Result<(), Unsupported> {
        match value {
            Known::Rows { dims, .. } if cols(dims) == 0 => Err(format!("'{name}' has no columns")),
            _ => Ok(()),
        }
    }

    fn input(node: &NodeProto, i: usize) -> Result<&str, Unsupported> {
        node.input
            .get(i)
            .map(String::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| format!("{} without input {i}", node.op_type))
    }

    fn node(&mut self, node: &NodeProto) -> Result<(), Unsupported> {
        if !matches!(node.domain.as_str(), "" | "ai.onnx" | "ai.onnx.ml") {
            return Err(format!("operator {}.{}", node.domain, node.op_type));
        }
        let attrs = Attributes::new(node);
        match node.op_type.as_str() {
            "Identity" => {
                let value = self.get(Self::input(node, 0)?)?.clone();
                self.set(node, value)
            }
            "MatMul" => self.gemm(node, 1.0, 1.0, false, None),
            "Gemm" => {
                if attrs.int_or("transA", 0) != 0 {
                    return Err("Gemm with transA".into());
                }
                let bias = node.input.get(2).filter(|n| !n.is_empty()).cloned();
                self.gemm(
                    node,
                    attr_f32(node, "alpha", 1.0),
                    attr_f32(node, "beta", 1.0),
                    attrs.int_or("transB", 0) != 0,
                    bias,
                )
            }
            "Add" | "Sub" | "Mul" | "Div" => self.binary(node),
            "Relu" => self.unary(node, Unary::Relu),
            "Tanh" => self.unary(node, Unary::Tanh),
            "Sigmoid" => self.unary(node, Unary::Sigmoid),
            "LeakyRelu" => self.unary(node, Unary::LeakyRelu(attr_f32(node, "alpha", 0.01))),
            "Softmax" => {
                let (x, dims) = self.rows(Self::input(node, 0)?)?;
                if dims.len() != 1 || !matches!(attrs.int_or("axis", -1), 1 | -1) {
                    return Err("Softmax other than over the columns of a matrix".into());
                }
                let cols = dims[0];
                self.push(node, |out| Step::Softmax { x, cols, out }, Elem::F32, dims)
            }
            "Scaler" => {
                let (x, dims) = self.rows(Self::input(node, 0)?)?;
                let cols = cols(&dims);
                let offset = attrs.floats("offset")?;
                let scale = attrs.floats("scale")?;
                for (name, v) in [("offset", &offset), ("scale", &scale)] {
                    if v.len() != 1 && v.len() != cols {
                        return Err(format!("Scaler {name} of {} for {cols} columns", v.len()));
                    }
                }
                self.push(
                    node,
                    |out| Step::Scaler {
                        x,
                        cols,
                        offset,
                        scale,
                        out,
                    },
                    Elem::F32,
                    dims,
                )
            }
            "Cast" => self.cast(node, attrs.int_or("to", 0)),
            "Reshape" => self.reshape(node),
            "Concat" => {
                if !matches!(attrs.int_or("axis", 0), 1 | -1) {
                    return Err("Concat other than of columns".into());
                }
                let mut parts = Vec::new();
                for name in &node.input {
                    let (slot, dims) = self.rows(name)?;
                    if dims.len() != 1 {
                        return Err("Concat of other than matrices".into());
                    }
                    parts.push((slot, dims[0]));
                }
                let total = parts.iter().map(|(_, c)| c).sum();
                self.push(
                    node,
                    |out| Step::Concat { parts, out },
                    Elem::F32,
                    vec![total],
                )
            }
            "ArgMax" => {
                let (x, dims) = self.rows(Self::input(node, 0)?)?;
                if dims.len() != 1
                    || !matches!(attrs.int_or("axis", 0), 1 | -1)
                    || attrs.int_or("select_last_index", 0) != 0
                {
                    return Err("ArgMax other than the first largest of each row".into());
                }
                let dims = if attrs.int_or("keepdims", 1) != 0 {
                    vec![1]
                } else {
                    vec![]
                };
                let cols = cols(&self.rows(Self::input(node, 0)?)?.1);
                self.push(node, |out| Step::ArgMax { x, cols, out }, Elem::I64, dims)
            }
            "ArrayFeatureExtractor" => {
                let Known::Const {
                    values:
                        Values::Ints {
                            values: classes,
                            elem,
                        },
                    ..
                } = self.get(Self::input(node, 0)?)?.clone()
                else {
                    return Err("ArrayFeatureExtractor of other than integer labels".into());
                };
                let Known::Rows {
                    slot: indices,
                    elem: Elem::I64,
                    dims,
                } = self.get(Self::input(node, 1)?)?.clone()
                else {
                    return Err("ArrayFeatureExtractor with other than int64 indices".into());
                };
                self.push(
                    node,
                    |out| Step::Classes {
                        indices,
                        classes,
                        out,
                    },
                    elem,
                    dims,
                )
            }
            "LinearRegressor" => self.linear_regressor(node),
            "LinearClassifier" => self.linear_classifier(node),
            "Normalizer" => self.normalizer(node),
            other => Err(format!("operator {other}")),
        }
    }

    /// `x @ B (+ C)`, with `alpha` and `beta` folded into the constants and a bias `Add`
    /// right after (read by nothing else) folded in when it comes.
    fn gemm(
        &mut self,
        node: &NodeProto,
        alpha: f32,
        beta: f32,
        trans_b: bool,
        bias: Option<String>,
    ) -> Result<(), Unsupported> {
        let (x, dims) = self.rows(Self::input(node, 0)?)?;
        let Known::Const {
            dims: b_dims,
            values: Values::F32(b),
        } = self.get(Self::input(node, 1)?)?.clone()
        else {
            return Err(format!("{} by other than a float constant", node.op_type));
        };
        let (k, n) = match (b_dims.as_slice(), trans_b) {
            ([k, n], false) => (*k, *n),
            ([n, k], true) => (*k, *n),
            _ => return Err(format!("{} by a {}-d constant", node.op_type, b_dims.len())),
        };
        if dims != [k] {
            return Err(format!(
                "{} of {dims:?} columns by [{k}, {n}]",
                node.op_type
            ));
        }
        let mut weights = if trans_b {
            (0..k * n).map(|i| b[(i % n) * k + i / n]).collect()
        } else {
            b
        };
        if alpha != 1.0 {
            weights.iter_mut().for_each(|w| *w *= alpha);
        }
        let mut layer = Layer::new(k, n, &weights)
            .ok_or_else(|| format!("{} by an empty [{k}, {n}] constant", node.op_type))?;
        if let Some(name) = bias {
            let mut row = self.row_constant(&name, n)?;
            row.iter_mut().for_each(|v| *v *= beta);
            layer.take_bias(&expand(row, n));
        }
        self.push(node, |out| Step::Gemm { x, out, layer }, Elem::F32, vec![n])
    }

    /// A constant broadcast along the rows of a `cols`-column value: one value, or one per
    /// column.
    fn row_constant(&self, name: &str, cols: usize) -> Result<Vec<f32>, Unsupported> {
        match self.get(name)? {
            Known::Const {
                dims,
                values: Values::F32(v),
            } if (v.len() == 1 || v.len() == cols)
                && dims.len() <= 2
                && (dims.len() < 2 || dims[0] == 1) =>
            {
                Ok(v.clone())
            }
            _ => Err(format!("'{name}' is not a constant over {cols} columns")),
        }
    }

    fn binary(&mut self, node: &NodeProto) -> Result<(), Unsupported> {
        let op = match node.op_type.as_str() {
            "Add" => Binary::Add,
            "Sub" => Binary::Sub,
            "Mul" => Binary::Mul,
            _ => Binary::Div,
        };
        let (a, b) = (Self::input(node, 0)?, Self::input(node, 1)?);
        let row_dims = match (self.get(a)?, self.get(b)?) {
            (Known::Rows { dims, .. }, _) | (_, Known::Rows { dims, .. }) => dims.clone(),
            _ => return Err(format!("{} of two constants", node.op_type)),
        };
        let cols = cols(&row_dims);
        let operand = |name: &str| -> Result<Operand, Unsupported> {
            match self.get(name)? {
                Known::Rows { .. } => {
                    let (slot, dims) = self.rows(name)?;
                    if dims != row_dims {
                        return Err(format!("{} of {dims:?} and {row_dims:?}", node.op_type));
                    }
                    Ok(Operand::Slot(slot))
                }
                Known::Const { .. } => Ok(Operand::Row(self.row_constant(name, cols)?)),
            }
        };
        let (a_op, b_op) = (operand(a)?, operand(b)?);
        // A bias added to a GEMM's output that nothing else reads: added in the GEMM.
        if let (Binary::Add, Operand::Slot(slot), Operand::Row(row)) = (op, &a_op, &b_op)
            && self.uses.get(a).copied() == Some(1)
            && let Some(Step::Gemm { out, layer, .. }) = self.steps.last_mut()
            && *out == *slot
            && layer.take_bias(&expand(row.clone(), layer.n()))
        {
            let value = self.get(a)?.clone();
            return self.set(node, value);
        }
        self.push(
            node,
            |out| Step::Binary {
                op,
                a: a_op,
                b: b_op,
                cols,
                out,
            },
            Elem::F32,
            row_dims,
        )
    }

    fn unary(&mut self, node: &NodeProto, op: Unary) -> Result<(), Unsupported> {
        let input = Self::input(node, 0)?;
        let (x, dims) = self.rows(input)?;
        // An activation of a GEMM's output that nothing else reads: applied in the GEMM,
        // while the sums are still in registers.
        if self.uses.get(input).copied() == Some(1)
            && let Some(Step::Gemm { out, layer, .. }) = self.steps.last_mut()
            && *out == x
            && layer.take_activation(op)
        {
            let value = self.get(input)?.clone();
            return self.set(node, value);
        }
        self.push(node, |out| Step::Unary { op, x, out }, Elem::F32, dims)
    }

    fn cast(&mut self, node: &NodeProto, to: i64) -> Result<(), Unsupported> {
        let Known::Rows {
            slot: x,
            elem,
            dims,
        } = self.get(Self::input(node, 0)?)?.clone()
        else {
            return Err("Cast of a constant".into());
        };
        let to = i32::try_from(to).unwrap_or(0);
        match (elem, to) {
            (Elem::F32, ONNX_FLOAT) | (Elem::I64, ONNX_INT64) | (Elem::I32, ONNX_INT32) => self
                .set(
                    node,
                    Known::Rows {
                        slot: x,
                        elem,
                        dims,
                    },
                ),
            // Widening: the values are held as int64 already.
            (Elem::I32, ONNX_INT64) => self.set(
                node,
                Known::Rows {
                    slot: x,
                    elem: Elem::I64,
                    dims,
                },
            ),
            (Elem::F32, ONNX_INT64) => {
                self.push(node, |out| Step::ToInt64 { x, out }, Elem::I64, dims)
            }
            (Elem::I64 | Elem::I32, ONNX_FLOAT) => {
                self.push(node, |out| Step::ToFloat { x, out }, Elem::F32, dims)
            }
            _ => Err(format!("Cast to ONNX type {to}")),
        }
    }

    /// A reshape that keeps the batch dimension first: only the dimensions after it change.
    fn reshape(&mut self, node: &NodeProto) -> Result<(), Unsupported> {
        let Known::Rows { slot, elem, dims } = self.get(Self::input(node, 0)?)?.clone() else {
            return Err("Reshape of a constant".into());
        };
        let Known::Const {
            values:
                Values::Ints {
                    values: shape,
                    elem: Elem::I64,
                },
            ..
        } = self.get(Self::input(node, 1)?)?
        else {
            return Err("Reshape to a shape computed in the graph".into());
        };
        let total = cols(&dims);
        let (first, rest) = shape.split_first().ok_or("Reshape to a scalar")?;
        let new: Vec<usize> = match (*first, rest) {
            // [-1]: one value per row.
            (-1, []) if total == 1 => vec![],
            (-1 | 0, rest) if !rest.is_empty() => rest
                .iter()
                .enumerate()
                .map(|(i, d)| match *d {
                    0 => dims.get(i).copied().ok_or(()),
                    d if d > 0 => Ok(d as usize),
                    _ => Err(()),
                })
                .collect::<Result<_, ()>>()
                .map_err(|()| format!("Reshape to {shape:?}"))?,
            _ => return Err(format!("Reshape to {shape:?}")),
        };
        if cols(&new) != total {
            return Err(format!("Reshape of {dims:?} to {shape:?}"));
        }
        self.set(
            node,
            Known::Rows {
                slot,
                elem,
                dims: new,
            },
        )
    }
}

/// A row constant of one value or `n` values as `n` values.
fn expand(row: Vec<f32>, n: usize) -> Vec<f32> {
    if row.len() == n {
        row
    } else {
        vec![row.first().copied().unwrap_or(0.0); n]
    }
}

fn attr_f32(node: &NodeProto, name: &str, default: f32) -> f32 {
    node.attribute
        .iter()
        .find(|a| a.name == name)
        .map_or(default, |a| a.f)
}

/// An initializer's values (float, int64 or int32; others are not compiled here).
fn constant(tensor: &TensorProto) -> Result<Known, Unsupported> {
    let dims = tensor
        .dims
        .iter()
        .map(|d| usize::try_from(*d).map_err(|_| format!("initializer '{}' dims", tensor.name)))
        .collect::<Result<Vec<_>, _>>()?;
    let len = cols(&dims);
    let raw = &tensor.raw_data;
    let values = match tensor.data_type {
        ONNX_FLOAT if !raw.is_empty() => Values::F32(
            raw.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        ),
        ONNX_FLOAT => Values::F32(tensor.float_data.clone()),
        ONNX_INT64 if !raw.is_empty() => Values::Ints {
            values: raw
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                .collect(),
            elem: Elem::I64,
        },
        ONNX_INT64 => Values::Ints {
            values: tensor.int64_data.clone(),
            elem: Elem::I64,
        },
        ONNX_INT32 if !raw.is_empty() => Values::Ints {
            values: raw
                .chunks_exact(4)
                .map(|b| i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                .collect(),
            elem: Elem::I32,
        },
        ONNX_INT32 => Values::Ints {
            values: tensor.int32_data.iter().map(|v| i64::from(*v)).collect(),
            elem: Elem::I32,
        },
        other => {
            return Err(format!(
                "initializer '{}' of ONNX type {other}",
                tensor.name
            ));
        }
    };
    let count = match &values {
        Values::F32(v) => v.len(),
        Values::Ints { values, .. } => values.len(),
    };
    if count != len {
        return Err(format!(
            "initializer '{}': {count} values for {dims:?}",
            tensor.name
        ));
    }
    Ok(Known::Const { dims, values })
}
