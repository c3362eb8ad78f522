//! `predict('<model>', f1, ..., fn)` and `predict_proba('<model>', f1, ..., fn)`.
//!
//! Planning checks the call against the model's signature (argument count and types, return
//! type). Execution runs the model once per Arrow batch on the inference pool, at the version
//! the statement pinned ([`super::model_pins`]) where it pinned one.

use super::inference::{RunOn, infer, output_field, output_type};
use super::model_pins::Pins;
use super::null_rows::Scored;
use crate::cancel::CancelToken;
use crate::config::ShoalOptions;
use crate::device::DeviceRequest;
use crate::error::Error;
use crate::model::ModelProvider;
use crate::model::feeds::{Call, FedColumns, plan_feeds, planned_feeds};
use crate::runtime::run_on_cpu_pool;
use datafusion::arrow::array::Array;
use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::{Result, ScalarValue, internal_err};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PredictKind {
    /// The model's first output in its own type.
    Predict,
    /// Probability of the positive class (binary) or of every class (k > 2).
    PredictProba,
}

impl PredictKind {
    pub fn function_name(self) -> &'static str {
        match self {
            PredictKind::Predict => "predict",
            PredictKind::PredictProba => "predict_proba",
        }
    }

    pub fn from_function_name(name: &str) -> Option<Self> {
        match name {
            "predict" => Some(PredictKind::Predict),
            "predict_proba" => Some(PredictKind::PredictProba),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub struct PredictUdf {
    kind: PredictKind,
    provider: Arc<dyn ModelProvider>,
    /// Rows per model run; None runs the model once per Arrow batch (or in the runs the
    /// statement's pins ask for: that is how a worker learns a pipeline node's batch_size).
    batch_rows: Option<usize>,
    /// The device a pipeline model node asked for; None: the statement's
    /// `shoal.inference.device`. Travels to the workers in the statement's pins.
    device: Option<DeviceRequest>,
    signature: Signature,
}

/// The ML functions over one model provider: `predict`, `predict_proba`, `top_k` over
/// their scores, and the models' tokenizers (`tokenize`, `text_chunks`).
pub fn ml_udfs(provider: Arc<dyn ModelProvider>) -> Vec<Arc<ScalarUDF>> {
    let text = super::tokenize::text_udfs(provider.clone());
    [PredictKind::Predict, PredictKind::PredictProba]
        .into_iter()
        .map(|kind| {
            Arc::new(ScalarUDF::new_from_impl(PredictUdf::new(
                kind,
                provider.clone(),
            )))
        })
        .chain([Arc::new(ScalarUDF::new_from_impl(
            super::top_k::TopKUdf::default(),
        ))])
        .chain(text)
        .collect()
}

impl PredictUdf {
    pub fn new(kind: PredictKind, provider: Arc<dyn ModelProvider>) -> Self {
        Self {
            kind,
            provider,
            batch_rows: None,
            device: None,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }

    /// Runs the model on at most `rows` rows at a time (a pipeline model node's batch_size).
    pub fn with_batch_rows(mut self, rows: Option<usize>) -> Self {
        self.batch_rows = rows.filter(|r| *r > 0);
        self
    }

    pub fn batch_rows(&self) -> Option<usize> {
        self.batch_rows
    }

    /// Runs the model on `device` (a pipeline model node's `device`).
    pub fn with_device(mut self, device: Option<DeviceRequest>) -> Self {
        self.device = device;
        self
    }

    pub fn device(&self) -> Option<DeviceRequest> {
        self.device
    }

    pub fn kind(&self) -> PredictKind {
        self.kind
    }

    pub fn provider(&self) -> &Arc<dyn ModelProvider> {
        &self.provider
    }

    fn model_name<'a>(&self, scalar: Option<&'a ScalarValue>) -> Result<&'a str, Error> {
        match scalar {
            Some(
                ScalarValue::Utf8(Some(s))
                | ScalarValue::Utf8View(Some(s))
                | ScalarValue::LargeUtf8(Some(s)),
            ) => Ok(s.as_str()),
            _ => Err(Error::ModelNameNotLiteral {
                function: self.kind.function_name().into(),
            }),
        }
    }
}

impl PartialEq for PredictUdf {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
            && self.batch_rows == other.batch_rows
            && self.device == other.device
            && Arc::ptr_eq(&self.provider, &other.provider)
    }
}

impl Eq for PredictUdf {}

impl Hash for PredictUdf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.kind.hash(state);
        self.batch_rows.hash(state);
        self.device.hash(state);
    }
}

impl ScalarUDFImpl for PredictUdf {
    fn name(&self) -> &str {
        self.kind.function_name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        // Features are cast to the model's input type per batch; keep the SQL types.
        Ok(arg_types.to_vec())
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        internal_err!(
            "{} derives its type from the model: use return_field_from_args",
            self.name()
        )
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let function = self.kind.function_name();
        let name = self.model_name(args.scalar_arguments.first().copied().flatten())?;
        // Planning: the registry's current version (the coordinator pins it right after).
        let model = self.provider.model(name, None)?;
        let call = Call {
            function,
            model: name,
        };
        let fed = FedColumns::of(&model.signature, &call, &args.arg_fields[1..])?;
        plan_feeds(&model.signature, &call, &fed.fields)?;
        // A row whose tensor argument is null is not scored: its result is null.
        let nullable = fed
            .fields
            .iter()
            .any(|f| f.is_nullable() && matches!(f.data_type(), DataType::FixedSizeList(_, _)));
        let field = output_field(&model.signature, self.kind, function)?;
        Ok(Arc::new(field.with_nullable(nullable)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let function = self.kind.function_name();
        let scalar = match args.args.first() {
            Some(ColumnarValue::Scalar(s)) => Some(s),
            _ => None,
        };
        let name = self.model_name(scalar)?.to_string();
        let pins = Pins::from_config(&args.config_options)?;
        let stop = args
            .config_options
            .extensions
            .get::<ShoalOptions>()
            .map_or_else(CancelToken::none, |options| options.statement.token());
        let pinned = pins.versions.get(&name).map(String::as_str);
        let model = self.provider.model(&name, pinned)?;
        // A pipeline node's device, else the statement's, else the registry's pin.
        let node = self.device.or_else(|| pins.devices.get(&name).copied());
        let run_on = RunOn::for_statement(&args.config_options, node, model.device)?;
        let rows = args.number_rows;
        let call = Call {
            function,
            model: &name,
        };
        let fed = FedColumns::of(&model.signature, &call, &args.arg_fields[1..])?;
        let given = args.args[1..]
            .iter()
            .map(|v| v.to_array(rows))
            .collect::<Result<Vec<_>>>()?;
        let mut features = Vec::with_capacity(fed.fields.len());
        for (i, array) in fed.arrays(given)?.into_iter().enumerate() {
            let is_tensor = matches!(array.data_type(), DataType::FixedSizeList(_, _));
            if array.null_count() > 0 && !is_tensor {
                let column = fed
                    .fields
                    .get(i)
                    .map(|f| f.name().clone())
                    .unwrap_or_else(|| format!("#{}", i + 1));
                return Err(Error::NullFeature {
                    function: function.into(),
                    model: name,
                    position: i + 1,
                    column,
                    nulls: array.null_count(),
                }
                .into());
            }
            features.push(array);
        }
        let planned = pins.tensor_shapes.get(&name);
        let feeds = match planned.and_then(|p| planned_feeds(p, &fed.fields)) {
            Some(feeds) => feeds,
            None => plan_feeds(&model.signature, &call, &fed.fields)?,
        };
        let kind = self.kind;
        let chunk = self
            .batch_rows
            .or_else(|| pins.batch_rows.get(&name).copied())
            .or(model.batch_rows)
            .unwrap_or(rows)
            .min(feeds.rows_per_run())
            .max(1);
        // Rows without a tensor (a file that did not decode) are skipped, and null.
        let skipped = Scored::skip_null_tensors(&features)?;
        let (features, rows) = match &skipped {
            Some(scored) => (scored.features.clone(), scored.rows()),
            None => (features, rows),
        };
        let output = run_on_cpu_pool(|| {
            if rows == 0 {
                let data_type = output_type(&model.signature, kind)?;
                return Ok(datafusion::arrow::array::new_empty_array(&data_type));
            }
            if rows <= chunk {
                return infer(&model, kind, &features, &feeds, rows, run_on, &stop);
            }
            // One run per `chunk` rows: slices are views, only the outputs are concatenated.
            let mut outputs = Vec::with_capacity(rows.div_ceil(chunk));
            for start in (0..rows).step_by(chunk) {
                let len = chunk.min(rows - start);
                let slice: Vec<_> = features.iter().map(|f| f.slice(start, len)).collect();
                outputs.push(infer(&model, kind, &slice, &feeds, len, run_on, &stop)?);
            }
            let parts: Vec<&dyn Array> = outputs.iter().map(|a| a.as_ref()).collect();
            Ok(datafusion::arrow::compute::concat(&parts)?)
        })??;
        Ok(ColumnarValue::Array(match &skipped {
            Some(scored) => scored.restore(&output)?,
            None => output,
        }))
    }
}
