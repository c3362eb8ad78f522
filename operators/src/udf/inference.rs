//! One model run over one Arrow batch: features in, one Arrow column out.

use super::predict::PredictKind;
use crate::cancel::{self, CancelToken};
use crate::error::{Error, Result};
use crate::features::{as_matrix_view, cast_all, stack_as_f32, stack_row_major};
use crate::model::trees::NativeTensor;
use crate::model::{InputLayout, LoadedModel, ModelSignature, TensorElem, TensorSpec};
use datafusion::arrow::array::{
    ArrayRef, FixedSizeListArray, Float32Array, Float64Array, Int32Array, Int64Array, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Float32Type, Float64Type, Int64Type};
use ort::session::RunOptions;
use ort::session::SessionInputValue;
use ort::value::TensorRef;
use ort::value::{DynValue, PrimitiveTensorElementType};
use std::borrow::Cow;
use std::sync::Arc;

/// The Arrow type a `predict`/`predict_proba` call returns for this model.
pub fn output_type(signature: &ModelSignature, kind: PredictKind) -> Result<DataType> {
    match kind {
        PredictKind::Predict => {
            let (_, spec) = signature.predict_output()?;
            let scalar = match spec.elem {
                TensorElem::Float32 => DataType::Float32,
                TensorElem::Float64 => DataType::Float64,
                TensorElem::Int64 => DataType::Int64,
                TensorElem::Int32 => DataType::Int32,
                TensorElem::String => DataType::Utf8,
                TensorElem::Other => {
                    return Err(Error::UnsupportedModel {
                        model: signature.name.clone(),
                        reason: format!("output '{}' has an unsupported element type", spec.name),
                    });
                }
            };
            Ok(match per_row_width(spec) {
                Some(k) if k > 1 => fixed_list(scalar, k),
                _ => scalar,
            })
        }
        PredictKind::PredictProba => {
            let (_, spec) = signature.proba_output()?;
            match spec.shape.get(1).copied() {
                Some(1 | 2) => Ok(DataType::Float32),
                Some(k) if k > 2 => Ok(fixed_list(DataType::Float32, k as usize)),
                _ => Err(Error::UnsupportedModel {
                    model: signature.name.clone(),
                    reason: format!(
                        "probability output '{}' has no fixed class count: {spec}",
                        spec.name
                    ),
                }),
            }
        }
    }
}

fn fixed_list(item: DataType, width: usize) -> DataType {
    DataType::FixedSizeList(Arc::new(Field::new("item", item, false)), width as i32)
}

/// Values per row of an output tensor: None for [N], Some(k) for [N, k].
fn per_row_width(spec: &TensorSpec) -> Option<usize> {
    (spec.shape.len() == 2 && spec.shape[1] > 0).then(|| spec.shape[1] as usize)
}

/// Runs the model once over `rows` rows of `features` (nulls already rejected).
/// Model runs started in this process since it began.
static MODEL_RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many model runs (one per Arrow batch) this process has started: a worker reports it
/// in its heartbeat, so one can see whether scoring work is still going on (it must stop
/// when a query is cancelled).
pub fn model_runs() -> u64 {
    MODEL_RUNS.load(std::sync::atomic::Ordering::Relaxed)
}

pub fn infer(
    model: &LoadedModel,
    kind: PredictKind,
    features: &[ArrayRef],
    rows: usize,
    native_trees: bool,
    stop: &CancelToken,
) -> Result<ArrayRef> {
    stop.stop_error(&format!("model '{}'", model.name))?;
    MODEL_RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let sig = &model.signature;
    let (output_index, _) = match kind {
        PredictKind::Predict => sig.predict_output()?,
        PredictKind::PredictProba => sig.proba_output()?,
    };
    let failed = |e: ort::Error| Error::Inference {
        model: model.name.clone(),
        rows,
        message: e.to_string(),
    };
    // Owned buffers the tensor views borrow from; they outlive the run.
    let mut f32_buffers: Vec<Cow<'_, [f32]>> = Vec::new();
    let mut f64_buffers: Vec<Vec<f64>> = Vec::new();
    let mut i64_buffers: Vec<Vec<i64>> = Vec::new();
    match sig.layout {
        InputLayout::Stacked { width, elem } => match elem {
            TensorElem::Float32 => match features {
                [one] if as_matrix_view(one, width).is_some() => {
                    f32_buffers.push(Cow::Borrowed(as_matrix_view(one, width).unwrap_or(&[])))
                }
                _ => f32_buffers.push(Cow::Owned(stack_as_f32(features)?)),
            },
            TensorElem::Float64 => {
                f64_buffers.push(stack_row_major(&cast_all::<Float64Type>(features)?))
            }
            _ => i64_buffers.push(stack_row_major(&cast_all::<Int64Type>(features)?)),
        },
        InputLayout::PerColumn { .. } => {
            for (spec, column) in sig.inputs.iter().zip(features) {
                let one = std::slice::from_ref(column);
                match spec.elem {
                    TensorElem::Float32 => f32_buffers.push(Cow::Owned(
                        cast_all::<Float32Type>(one)?[0].values().to_vec(),
                    )),
                    TensorElem::Float64 => {
                        f64_buffers.push(cast_all::<Float64Type>(one)?[0].values().to_vec())
                    }
                    _ => i64_buffers.push(cast_all::<Int64Type>(one)?[0].values().to_vec()),
                }
            }
        }
    }
    if let (true, Some(native), InputLayout::Stacked { .. }, [matrix]) = (
        native_trees,
        &model.native,
        sig.layout,
        f32_buffers.as_slice(),
    ) {
        let outputs = native.run(matrix, rows);
        return to_arrow(
            model,
            kind,
            Output::Native(&outputs[output_index]),
            output_index,
            rows,
        );
    }
    let (mut f32_iter, mut f64_iter, mut i64_iter) =
        (f32_buffers.iter(), f64_buffers.iter(), i64_buffers.iter());
    let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::new();
    for spec in &sig.inputs {
        let shape: Vec<usize> = match (sig.layout, spec.shape.len()) {
            (InputLayout::Stacked { width, .. }, _) => vec![rows, width],
            (InputLayout::PerColumn { .. }, 1) => vec![rows],
            _ => vec![rows, 1],
        };
        let name = Cow::Owned(spec.name.clone());
        let value: SessionInputValue<'_> = match spec.elem {
            TensorElem::Float32 => {
                let data = f32_iter.next().map(|b| b.as_ref()).unwrap_or(&[]);
                TensorRef::from_array_view((shape, data))
                    .map_err(failed)?
                    .into()
            }
            TensorElem::Float64 => {
                let data = f64_iter.next().map(Vec::as_slice).unwrap_or(&[]);
                TensorRef::from_array_view((shape, data))
                    .map_err(failed)?
                    .into()
            }
            _ => {
                let data = i64_iter.next().map(Vec::as_slice).unwrap_or(&[]);
                TensorRef::from_array_view((shape, data))
                    .map_err(failed)?
                    .into()
            }
        };
        inputs.push((name, value));
    }
    // A run cannot check the token itself: the watchdog terminates it when the statement
    // is cancelled or times out (ONNX Runtime then returns an error from `run`).
    let run_options = Arc::new(RunOptions::new().map_err(failed)?);
    let terminate = {
        let run_options = run_options.clone();
        move || {
            let _ = run_options.terminate();
        }
    };
    model.sessions.with_session(|session| {
        let outputs = cancel::watched(stop, terminate, || {
            session.run_with_options(inputs, run_options.as_ref())
        })
        .map_err(|e| match stop.stopped() {
            Some(reason) => Error::Stopped {
                what: format!("model '{}'", model.name),
                reason,
            },
            None => failed(e),
        })?;
        to_arrow(
            model,
            kind,
            Output::Ort(&outputs[output_index]),
            output_index,
            rows,
        )
    })
}

/// One output of a model run: from ONNX Runtime, or from shoal's native tree evaluator.
#[derive(Clone, Copy)]
enum Output<'a> {
    Ort(&'a DynValue),
    Native(&'a NativeTensor),
}

impl<'a> Output<'a> {
    /// The tensor's shape and values as `T`; fails when the element type is another.
    fn extract<T: PrimitiveTensorElementType + NativeElement>(
        self,
    ) -> std::result::Result<(Vec<i64>, &'a [T]), String> {
        match self {
            Output::Ort(value) => value
                .try_extract_tensor::<T>()
                .map(|(shape, data)| (shape.iter().copied().collect(), data))
                .map_err(|e| e.to_string()),
            Output::Native(tensor) => T::from_native(tensor)
                .map(|(dims, data)| (dims.to_vec(), data))
                .ok_or_else(|| format!("the tree evaluator returned {tensor:?}")),
        }
    }
}

/// Element types the native evaluator can return.
trait NativeElement: Sized {
    fn from_native(tensor: &NativeTensor) -> Option<(&[i64], &[Self])>;
}

impl NativeElement for f32 {
    fn from_native(tensor: &NativeTensor) -> Option<(&[i64], &[Self])> {
        match tensor {
            NativeTensor::Float32 { dims, data } => Some((dims, data)),
            NativeTensor::Int64 { .. } => None,
        }
    }
}

impl NativeElement for i64 {
    fn from_native(tensor: &NativeTensor) -> Option<(&[i64], &[Self])> {
        match tensor {
            NativeTensor::Int64 { dims, data } => Some((dims, data)),
            NativeTensor::Float32 { .. } => None,
        }
    }
}

macro_rules! not_native {
    ($($t:ty),*) => {$(
        impl NativeElement for $t {
            fn from_native(_: &NativeTensor) -> Option<(&[i64], &[Self])> {
                None
            }
        }
    )*};
}
not_native!(f64, i32);

fn to_arrow(
    model: &LoadedModel,
    kind: PredictKind,
    value: Output<'_>,
    index: usize,
    rows: usize,
) -> Result<ArrayRef> {
    let spec_name = model.signature.outputs[index].name().to_string();
    let failed = |e: String| Error::Inference {
        model: model.name.clone(),
        rows,
        message: format!("reading output '{spec_name}': {e}"),
    };
    let shape_error = |found: &[i64]| Error::OutputShape {
        model: model.name.clone(),
        output: spec_name.clone(),
        expected: format!("{rows} row(s)"),
        found: format!("shape {found:?}"),
    };
    let target = output_type(&model.signature, kind)?;
    macro_rules! primitive {
        ($t:ty, $array:ty) => {{
            let (dims, data) = value.extract::<$t>().map_err(failed)?;
            if dims.first().copied() != Some(rows as i64) {
                return Err(shape_error(&dims));
            }
            (dims, data)
        }};
    }
    match (kind, &target) {
        (PredictKind::PredictProba, DataType::Float32) => {
            let (dims, data) = primitive!(f32, Float32Array);
            let k = dims.get(1).copied().unwrap_or(1) as usize;
            // Binary classifier: the positive class is the second column.
            let column = if k >= 2 { 1 } else { 0 };
            let values = Float32Array::from_iter_values((0..rows).map(|i| data[i * k + column]));
            Ok(Arc::new(values))
        }
        (_, DataType::FixedSizeList(field, k)) => {
            let (dims, data) = primitive!(f32, Float32Array);
            if dims.get(1).copied() != Some(i64::from(*k)) {
                return Err(shape_error(&dims));
            }
            let values = Float32Array::from(data.to_vec());
            Ok(Arc::new(FixedSizeListArray::try_new(
                field.clone(),
                *k,
                Arc::new(values),
                None,
            )?))
        }
        (_, DataType::Float32) => {
            let (_, data) = primitive!(f32, Float32Array);
            Ok(Arc::new(Float32Array::from(data[..rows].to_vec())))
        }
        (_, DataType::Float64) => {
            let (_, data) = primitive!(f64, Float64Array);
            Ok(Arc::new(Float64Array::from(data[..rows].to_vec())))
        }
        (_, DataType::Int64) => {
            let (_, data) = primitive!(i64, Int64Array);
            Ok(Arc::new(Int64Array::from(data[..rows].to_vec())))
        }
        (_, DataType::Int32) => {
            let (_, data) = primitive!(i32, Int32Array);
            Ok(Arc::new(Int32Array::from(data[..rows].to_vec())))
        }
        (_, DataType::Utf8) => {
            let Output::Ort(value) = value else {
                return Err(failed("the tree evaluator returns no strings".into()));
            };
            let (shape, strings) = value
                .try_extract_strings()
                .map_err(|e| failed(e.to_string()))?;
            if shape.first().copied() != Some(rows as i64) {
                return Err(shape_error(&shape.iter().copied().collect::<Vec<_>>()));
            }
            Ok(Arc::new(StringArray::from(strings)))
        }
        (_, other) => Err(Error::UnsupportedModel {
            model: model.name.clone(),
            reason: format!("cannot return {other}"),
        }),
    }
}
