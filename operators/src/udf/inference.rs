//! One model run over one Arrow batch: features in, one Arrow column out.

use super::predict::PredictKind;
use crate::cancel::{self, CancelToken};
use crate::config::ShoalOptions;
use crate::device::{self, Device};
use crate::error::{Error, Result};
use crate::features::tensor::{flat_values, tensor_field};
use crate::features::{cast_all, stack_as_f32, stack_row_major};
use crate::model::feeds::Feeds;
use crate::model::trees::NativeTensor;
use crate::model::{InputLayout, LoadedModel, ModelSignature, TensorElem, TensorSpec};
use datafusion::arrow::array::{
    ArrayRef, AsArray, FixedSizeListArray, Float32Array, Float64Array, Int32Array, Int64Array,
    StringArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Float32Type, Float64Type, Int64Type};
use datafusion::config::ConfigOptions;
use ort::session::SessionInputValue;
use ort::session::{RunOptions, Session};
use ort::value::TensorRef;
use ort::value::{DynValue, PrimitiveTensorElementType};
use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

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
            match row_dims(spec) {
                Some(dims) if dims.iter().product::<usize>() > 1 || dims.len() > 1 => {
                    Ok(fixed_list(scalar, dims.iter().product()))
                }
                None if spec.shape.len() > 2 => Err(Error::UnsupportedModel {
                    model: signature.name.clone(),
                    reason: format!(
                        "output '{}' has dynamic dimensions after the batch one ({spec}); \
                         shoal returns one fixed-shape tensor per row",
                        spec.name
                    ),
                }),
                _ => Ok(scalar),
            }
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

/// An output's fixed dimensions after the batch one: None for [N] or where one is dynamic.
fn row_dims(spec: &TensorSpec) -> Option<Vec<usize>> {
    let rest = spec.shape.get(1..).filter(|r| !r.is_empty())?;
    rest.iter()
        .map(|d| usize::try_from(*d).ok().filter(|d| *d > 0))
        .collect()
}

/// The field a `predict`/`predict_proba` call returns: an output of more than one
/// dimension per row (a feature map, an embedding grid) is tagged as Arrow's fixed-shape
/// tensor, so its shape travels with it.
pub fn output_field(signature: &ModelSignature, kind: PredictKind, name: &str) -> Result<Field> {
    let data_type = output_type(signature, kind)?;
    if let (PredictKind::Predict, DataType::FixedSizeList(item, _)) = (kind, &data_type) {
        let (_, spec) = signature.predict_output()?;
        if let Some(dims) = row_dims(spec).filter(|d| d.len() > 1) {
            return Ok(tensor_field(name, item.data_type().clone(), &dims, false)?);
        }
    }
    Ok(Field::new(name, data_type, false))
}

/// Runs the model once over `rows` rows of `features` (nulls already rejected).
/// Model runs started in this process since it began.
static MODEL_RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many model runs (one per Arrow batch) this process has started: a worker reports it
/// in its heartbeat, so one can see whether scoring work is still going on (it must stop
/// when a query is cancelled).
pub fn model_runs() -> u64 {
    MODEL_RUNS.load(Ordering::Relaxed)
}

/// Where a statement's model runs go on this site, and with which evaluator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOn {
    /// Tree ensembles on shoal's native evaluator (`shoal.inference.native_trees`); they
    /// run on the CPU whatever the device (ONNX Runtime's GPU providers have no tree
    /// operators either).
    pub native_trees: bool,
    /// Dense models on shoal's native evaluator (`shoal.inference.native_dense`) where they
    /// run on the CPU.
    pub native_dense: bool,
    pub device: Device,
}

impl RunOn {
    /// Where the statement whose options are `config` runs a model here: `node` (a pipeline
    /// node's device), else its `shoal.inference.device` when not `auto`, else `pinned` (the
    /// registry's device kind for the model), against the devices this process declared. A
    /// GPU it requires and this site cannot give fails here, or, with
    /// `shoal.inference.device_fallback`, runs on the CPU and the reason is noted for the
    /// statement's report.
    pub fn for_statement(
        config: &ConfigOptions,
        node: Option<device::DeviceRequest>,
        pinned: Option<device::DeviceRequest>,
    ) -> Result<Self> {
        // Calls take the site's GPUs in turn, so two GPUs serve two streams of batches.
        static SPREAD: AtomicUsize = AtomicUsize::new(0);
        let defaults = ShoalOptions::default();
        let options = config.extensions.get::<ShoalOptions>().unwrap_or(&defaults);
        let request = match (node, options.inference.device, pinned) {
            (Some(asked), _, _) => asked,
            (None, device::DeviceRequest::Auto, Some(pinned)) => pinned,
            (None, statement, _) => statement,
        };
        let placement = device::choose(
            request,
            options.inference.device_fallback,
            device::declared(),
            SPREAD.fetch_add(1, Ordering::Relaxed),
        )?;
        if let Some(reason) = &placement.fallback {
            device::note_fallback(&options.statement.key, reason);
        }
        Ok(Self {
            native_trees: options.inference.native_trees,
            native_dense: options.inference.native_dense,
            device: placement.device,
        })
    }
}

pub fn infer(
    model: &LoadedModel,
    kind: PredictKind,
    features: &[ArrayRef],
    feeds: &Feeds,
    rows: usize,
    run_on: RunOn,
    stop: &CancelToken,
) -> Result<ArrayRef> {
    stop.stop_error(&format!("model '{}'", model.name))?;
    MODEL_RUNS.fetch_add(1, Ordering::Relaxed);
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
    let blocks = input_blocks(model, features, feeds, rows)?;
    // The native evaluators take the one [N, width] float32 matrix: stacked columns or one
    // tensor column, as ONNX Runtime would. Trees run on the CPU whatever the device; a
    // dense graph only where the model runs on the CPU (a GPU runs it on ONNX Runtime's
    // CUDA provider).
    let matrix = match (sig.layout, blocks.as_slice()) {
        (InputLayout::Stacked { .. }, [block]) => block.as_f32(),
        _ => None,
    };
    let native = match (matrix, &model.native, &model.dense) {
        (Some(matrix), Some(trees), _) if run_on.native_trees => Some(trees.run(matrix, rows)),
        (Some(matrix), _, Some(dense)) if run_on.native_dense && run_on.device == Device::Cpu => {
            let what = format!("model '{}'", model.name);
            Some(dense.run_until(matrix, rows, || stop.stop_error(&what))?)
        }
        _ => None,
    };
    if let Some(outputs) = native {
        return to_arrow(
            model,
            kind,
            Output::Native(&outputs[output_index]),
            output_index,
            rows,
        );
    }
    let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::with_capacity(blocks.len());
    for ((spec, dims), block) in sig.inputs.iter().zip(&feeds.dims).zip(&blocks) {
        let shape: Vec<usize> = std::iter::once(rows).chain(dims.iter().copied()).collect();
        inputs.push((
            Cow::Owned(spec.name.clone()),
            block.view(shape).map_err(failed)?,
        ));
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
    let run = |session: &mut Session| {
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
    };
    match run_on.device {
        Device::Cpu => model.sessions.with_session(run),
        Device::Cuda(index) => device::gpu_slots(index)
            .ok_or_else(|| Error::DeviceUnavailable {
                device: run_on.device.to_string(),
                reason: "this process declared no such GPU".into(),
            })?
            .run(model, stop, run),
    }
}

/// One input's values, row-major: a copy where columns were stacked or cast, else the
/// argument's own buffer (a `Float32` tensor column reaches a `float32` input uncopied).
enum Block {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    /// A primitive array of the input's element type, viewed in place.
    Leaf(ArrayRef),
}

impl Block {
    fn as_f32(&self) -> Option<&[f32]> {
        match self {
            Block::F32(v) => Some(v),
            Block::Leaf(array) => array
                .as_primitive_opt::<Float32Type>()
                .map(|a| a.values().as_ref()),
            _ => None,
        }
    }

    fn view(&self, shape: Vec<usize>) -> std::result::Result<SessionInputValue<'_>, ort::Error> {
        fn view<T: PrimitiveTensorElementType + std::fmt::Debug + Clone + 'static>(
            shape: Vec<usize>,
            data: &[T],
        ) -> std::result::Result<SessionInputValue<'_>, ort::Error> {
            Ok(TensorRef::from_array_view((shape, data))?.into())
        }
        match self {
            Block::F32(v) => view(shape, v),
            Block::F64(v) => view(shape, v),
            Block::I64(v) => view(shape, v),
            Block::Leaf(array) => match array.data_type() {
                DataType::Float32 => view(shape, array.as_primitive::<Float32Type>().values()),
                DataType::Float64 => view(shape, array.as_primitive::<Float64Type>().values()),
                _ => view(shape, array.as_primitive::<Int64Type>().values()),
            },
        }
    }
}

/// The values of each graph input for `rows` rows of `features`.
fn input_blocks(
    model: &LoadedModel,
    features: &[ArrayRef],
    feeds: &Feeds,
    rows: usize,
) -> Result<Vec<Block>> {
    let sig = &model.signature;
    if feeds.stack_columns {
        let elem = sig.inputs.first().map_or(TensorElem::Float32, |s| s.elem);
        return Ok(vec![match elem {
            TensorElem::Float32 => Block::F32(stack_as_f32(features)?),
            TensorElem::Float64 => Block::F64(stack_row_major(&cast_all::<Float64Type>(features)?)),
            _ => Block::I64(stack_row_major(&cast_all::<Int64Type>(features)?)),
        }]);
    }
    sig.inputs
        .iter()
        .zip(features)
        .zip(&feeds.dims)
        .map(|((spec, column), dims)| {
            let bad = |message: String| Error::Inference {
                model: model.name.clone(),
                rows,
                message: format!("input '{}': {message}", spec.name),
            };
            let values = flat_values(column).map_err(bad)?;
            let expected = rows * dims.iter().product::<usize>();
            if values.len() != expected {
                return Err(bad(format!(
                    "{} values for {rows} row(s) of {dims:?}",
                    values.len()
                )));
            }
            let target = match spec.elem {
                TensorElem::Float32 => DataType::Float32,
                TensorElem::Float64 => DataType::Float64,
                _ => DataType::Int64,
            };
            // Same type: arrow's cast shares the buffer; another: one converting copy.
            Ok(Block::Leaf(cast(&values, &target)?))
        })
        .collect()
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
            macro_rules! rows_of {
                ($t:ty, $array:ty) => {{
                    let (dims, data) = primitive!($t, $array);
                    if dims[1..].iter().product::<i64>() != i64::from(*k) {
                        return Err(shape_error(&dims));
                    }
                    Arc::new(<$array>::from(data.to_vec())) as ArrayRef
                }};
            }
            let values = match field.data_type() {
                DataType::Float64 => rows_of!(f64, Float64Array),
                DataType::Int64 => rows_of!(i64, Int64Array),
                DataType::Int32 => rows_of!(i32, Int32Array),
                _ => rows_of!(f32, Float32Array),
            };
            Ok(Arc::new(FixedSizeListArray::try_new(
                field.clone(),
                *k,
                values,
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
