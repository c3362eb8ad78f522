//! A model ready to run: its bytes, content hash, signature and session pool.

use super::dense::NativeDense;
use super::session_pool::SessionPool;
use super::signature::{InputLayout, ModelSignature, TensorElem};
use super::tokenizer::ModelTokenizer;
use super::trees::NativeTrees;
use super::{ModelInfo, content_hash};
use crate::device::DeviceRequest;
use crate::error::{Error, Result};
use crate::runtime;
use std::sync::Arc;

#[derive(Debug)]
pub struct LoadedModel {
    pub name: String,
    pub hash: String,
    pub bytes: Arc<[u8]>,
    pub signature: ModelSignature,
    pub sessions: SessionPool,
    /// The native evaluator, for graphs that are one tree ensemble (see [`NativeTrees`]).
    pub native: Option<NativeTrees>,
    /// The native dense evaluator, for graphs of MatMul/Gemm chains over one float
    /// [N, width] input (see [`NativeDense`]).
    pub dense: Option<NativeDense>,
    /// The tokenizer its bytes carry, for `tokenize` and `text_chunks` (see
    /// [`super::tokenizer`]).
    pub tokenizer: Option<ModelTokenizer>,
    /// The device kind the registry pinned the model to (its [`DEVICE_KEY`] property, from
    /// a `<name>.device` file beside it): where it runs when a statement asks for `auto`.
    pub device: Option<DeviceRequest>,
    /// The most rows one run of the model takes (its [`BATCH_ROWS_KEY`] property, from a
    /// `<name>.batch_rows` file beside it): a batch with more is run in slices. A pipeline
    /// node's `batch_size` overrides it.
    pub batch_rows: Option<usize>,
}

/// The metadata property that pins a model to a device kind (`cpu`, `cuda`, `cuda:N`).
pub const DEVICE_KEY: &str = "shoal.device";

/// The metadata property that bounds the rows of one run of a model (an image model whose
/// runs must fit a GPU's memory, a model faster in smaller slices).
pub const BATCH_ROWS_KEY: &str = "shoal.batch_rows";

/// The most rows per run a model may be given: what a pipeline node's `batch_size` allows.
pub const MAX_BATCH_ROWS: usize = 10_000_000;

/// The rows per run `bytes` bound their model to; a value that is not a count from 1 to
/// [`MAX_BATCH_ROWS`] is an invalid model, named.
fn pinned_batch_rows(name: &str, bytes: &[u8]) -> Result<Option<usize>> {
    let invalid = |message: String| Error::InvalidModel {
        name: name.to_string(),
        origin: format!("its {BATCH_ROWS_KEY} property"),
        message,
    };
    let Some(text) =
        super::metadata::property(bytes, BATCH_ROWS_KEY).map_err(|e| invalid(e.to_string()))?
    else {
        return Ok(None);
    };
    match text.trim().parse::<usize>() {
        Ok(rows) if (1..=MAX_BATCH_ROWS).contains(&rows) => Ok(Some(rows)),
        _ => Err(invalid(format!(
            "'{text}' is not a row count from 1 to {MAX_BATCH_ROWS}"
        ))),
    }
}

/// The device kind `bytes` pin their model to; a value that is not a device is an
/// invalid model, named.
fn pinned_device(name: &str, bytes: &[u8]) -> Result<Option<DeviceRequest>> {
    let invalid = |message: String| Error::InvalidModel {
        name: name.to_string(),
        origin: format!("its {DEVICE_KEY} property"),
        message,
    };
    match super::metadata::property(bytes, DEVICE_KEY).map_err(|e| invalid(e.to_string()))? {
        None => Ok(None),
        Some(text) => match text.parse::<DeviceRequest>() {
            Ok(DeviceRequest::Auto) => Ok(None),
            Ok(device) => Ok(Some(device)),
            Err(e) => Err(invalid(e.to_string())),
        },
    }
}

impl LoadedModel {
    /// Validates the bytes by building a first session; fails with
    /// [`Error::InvalidModel`] naming `origin` (a file, or "cache") when they are not ONNX.
    pub fn from_bytes(name: &str, origin: &str, bytes: Vec<u8>) -> Result<Self> {
        let bytes: Arc<[u8]> = bytes.into();
        let hash = content_hash(&bytes);
        let first = SessionPool::build_session(name, &bytes).map_err(|e| match e {
            Error::InvalidModel { message, .. } => Error::InvalidModel {
                name: name.to_string(),
                origin: origin.to_string(),
                message,
            },
            other => other,
        })?;
        let signature = ModelSignature::from_outlets(name, first.inputs(), first.outputs())?;
        let sessions = SessionPool::new(
            name,
            bytes.clone(),
            first,
            runtime::inference_slots(),
            runtime::memory_pool(),
        )?;
        let native = native_evaluator(
            name,
            &bytes,
            &signature,
            "tree ensemble",
            NativeTrees::from_onnx,
        );
        let dense = match native {
            Some(_) => None,
            None => native_evaluator(
                name,
                &bytes,
                &signature,
                "dense graph",
                NativeDense::from_onnx,
            ),
        };
        let tokenizer = ModelTokenizer::embedded(name, &bytes)?;
        let device = pinned_device(name, &bytes)?;
        let batch_rows = pinned_batch_rows(name, &bytes)?;
        Ok(Self {
            name: name.to_string(),
            hash,
            bytes,
            signature,
            sessions,
            native,
            dense,
            tokenizer,
            device,
            batch_rows,
        })
    }

    pub fn info(&self) -> ModelInfo {
        ModelInfo {
            name: self.name.clone(),
            hash: self.hash.clone(),
            size_bytes: self.bytes.len() as u64,
            inputs: self.signature.describe_inputs(),
            outputs: self.signature.describe_outputs(),
            device: self.device.map(|d| d.to_string()).unwrap_or_default(),
        }
    }
}

impl From<&LoadedModel> for ModelInfo {
    fn from(m: &LoadedModel) -> Self {
        m.info()
    }
}

/// A native evaluator for this model made by `compile` from its bytes and input width, when
/// its graph reads one float [N, width] input and `compile` takes it (`what` it evaluates
/// is logged); else None and the model runs on ONNX Runtime. A statement's setting decides
/// whether it is used (`shoal.inference.native_trees`, `shoal.inference.native_dense`).
fn native_evaluator<T>(
    name: &str,
    bytes: &[u8],
    signature: &ModelSignature,
    what: &str,
    compile: impl FnOnce(&[u8], usize) -> Result<T, String>,
) -> Option<T> {
    let InputLayout::Stacked {
        width,
        elem: TensorElem::Float32,
    } = signature.layout
    else {
        return None;
    };
    match compile(bytes, width) {
        Ok(evaluator) => {
            tracing::info!(model = name, "{what} evaluated natively");
            Some(evaluator)
        }
        Err(reason) => {
            tracing::debug!(model = name, "runs on ONNX Runtime: {reason}");
            None
        }
    }
}
