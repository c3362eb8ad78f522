//! The model versions a statement was planned with, carried to every worker with its tasks.
//!
//! A statement that calls `predict('m', ...)` must score every row with one version of `m`,
//! even if `m` is re-registered while it runs or a worker has not yet heard of the new
//! version. The coordinator therefore records, per statement, the content hash of every model
//! the plan calls (and the rows per model run a pipeline model node asked for) in a session
//! config extension; datafusion-distributed sends config extensions to the workers as gRPC
//! metadata, and `predict` reads them at execution time, on whichever node it runs.
//!
//! Why not in the serialized plan: datafusion-distributed composes its own codec ahead of the
//! user's, and a codec that does not override `try_encode_udf` claims every UDF (encode by
//! name), so a user codec is never asked to encode one (apache/datafusion#24830).

use super::predict::PredictUdf;
use super::tokenize::TokenizerUdf;
use crate::config::{ModelOptions, ShoalOptions};
use crate::device::DeviceRequest;
use crate::error::Error;
use crate::model::ModelProvider;
use crate::model::feeds::{Call, FedColumns, plan_feeds};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::ExprSchemable;
use datafusion::logical_expr::{Expr, LogicalPlan};
use std::collections::{BTreeMap, HashMap};

/// The pins of one statement, parsed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Pins {
    pub versions: BTreeMap<String, String>,
    pub batch_rows: BTreeMap<String, usize>,
    /// Per model, the dimensions (after the batch one) of each input, for every call whose
    /// arguments are tensors: their shape tag is lost when a worker decodes the plan
    /// (datafusion-proto rebuilds a function's result field from its type alone), so the
    /// shapes the coordinator planned travel here.
    pub tensor_shapes: BTreeMap<String, Vec<Vec<Vec<usize>>>>,
    /// Per model, the device its pipeline node asked for (`device = "cuda:0"`).
    pub devices: BTreeMap<String, DeviceRequest>,
}

impl Pins {
    /// The pins in `options`, or none (one-process sessions and statements without a model).
    pub fn from_config(options: &ConfigOptions) -> Result<Self> {
        let Some(ext) = options.extensions.get::<ShoalOptions>() else {
            return Ok(Self::default());
        };
        Ok(Self {
            versions: parse_map("versions", &ext.models.versions)?,
            batch_rows: parse_map("batch_rows", &ext.models.batch_rows)?,
            tensor_shapes: parse_map("tensor_shapes", &ext.models.tensor_shapes)?,
            devices: parse_map::<BTreeMap<String, String>>("devices", &ext.models.devices)?
                .into_iter()
                .map(|(model, device)| {
                    let parsed = device.parse().map_err(|e: Error| Error::ModelPins {
                        key: "shoal.models.devices".into(),
                        message: e.to_string(),
                    })?;
                    Ok((model, parsed))
                })
                .collect::<Result<_>>()?,
        })
    }

    /// The models `plan` calls `predict`/`predict_proba` on, at the versions `provider` has
    /// now, and the smallest rows per run any of those calls asked for.
    pub fn for_plan(plan: &LogicalPlan, provider: &dyn ModelProvider) -> Result<Self> {
        let current: HashMap<String, String> = provider
            .list()
            .into_iter()
            .map(|m| (m.name, m.hash))
            .collect();
        let mut pins = Self::default();
        plan.apply_with_subqueries(|node| {
            let schema = expression_schema(node);
            node.apply_expressions(|expr| {
                expr.apply(|e| {
                    if let Some((name, udf)) = predict_call(e) {
                        if let (Some(schema), Expr::ScalarFunction(call)) = (&schema, e)
                            && let Some(dims) = tensor_dims(provider, name, udf, &call.args, schema)
                        {
                            let seen = pins.tensor_shapes.entry(name.to_string()).or_default();
                            if !seen.contains(&dims) {
                                seen.push(dims);
                            }
                        }
                        if let Some(hash) = current.get(name) {
                            pins.versions.insert(name.to_string(), hash.clone());
                        }
                        if let Some(device) = udf.device() {
                            pins.devices.insert(name.to_string(), device);
                        }
                        if let Some(rows) = udf.batch_rows() {
                            let entry = pins.batch_rows.entry(name.to_string()).or_insert(rows);
                            *entry = (*entry).min(rows);
                        }
                    } else if let Some(name) = tokenizer_call(e)
                        && let Some(hash) = current.get(name)
                    {
                        // The tokenizer is part of the model's bytes: one version for both.
                        pins.versions.insert(name.to_string(), hash.clone());
                    }
                    Ok(TreeNodeRecursion::Continue)
                })
            })
        })?;
        Ok(pins)
    }

    /// As the `shoal.models.*` settings, to be sent with the statement.
    pub fn to_options(&self) -> Result<ModelOptions> {
        let json = |value: serde_json::Result<String>| -> Result<String> {
            let text = value.map_err(|e| Error::ModelPins {
                key: "shoal.models".into(),
                message: format!("encoding: {e}"),
            })?;
            Ok(ascii_json(text))
        };
        Ok(ModelOptions {
            versions: json(serde_json::to_string(&self.versions))?,
            batch_rows: json(serde_json::to_string(&self.batch_rows))?,
            tensor_shapes: json(serde_json::to_string(&self.tensor_shapes))?,
            devices: json(serde_json::to_string(
                &self
                    .devices
                    .iter()
                    .map(|(model, device)| (model, device.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            ))?,
        })
    }
}

/// The schema a node's expressions are evaluated against: its inputs' fields together.
pub(crate) fn expression_schema(node: &LogicalPlan) -> Option<DFSchema> {
    let mut inputs = node.inputs().into_iter();
    let mut schema = inputs.next()?.schema().as_ref().clone();
    for other in inputs {
        schema.merge(other.schema());
    }
    Some(schema)
}

/// The per-input dimensions of a `predict` call whose arguments are tensors; None for
/// columns stacked into a matrix, or where the call does not plan (planning reports that).
fn tensor_dims(
    provider: &dyn ModelProvider,
    name: &str,
    udf: &PredictUdf,
    args: &[Expr],
    schema: &DFSchema,
) -> Option<Vec<Vec<usize>>> {
    let fields = args
        .get(1..)?
        .iter()
        .map(|a| a.to_field(schema).map(|(_, f)| f))
        .collect::<Result<Vec<_>>>()
        .ok()?;
    let model = provider.model(name, None).ok()?;
    let call = Call {
        function: udf.kind().function_name(),
        model: name,
    };
    let fed = FedColumns::of(&model.signature, &call, &fields).ok()?;
    let feeds = plan_feeds(&model.signature, &call, &fed.fields).ok()?;
    (!feeds.stack_columns).then_some(feeds.dims)
}

/// `json` with every non-ASCII character written as `\uXXXX`: the pins travel as gRPC
/// metadata, whose values are ASCII, and a model's name is its file's name.
fn ascii_json(json: String) -> String {
    if json.is_ascii() {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            for unit in c.encode_utf16(&mut [0u16; 2]) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// One `shoal.models.*` setting: empty, or a JSON object of models.
fn parse_map<T: serde::de::DeserializeOwned + Default>(key: &str, text: &str) -> Result<T> {
    if text.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_str(text).map_err(|e| {
        Error::ModelPins {
            key: format!("shoal.models.{key}"),
            message: e.to_string(),
        }
        .into()
    })
}

/// `tokenize(text, '<literal model name>', ...)` or `text_chunks(...)`: the model's name.
fn tokenizer_call(expr: &Expr) -> Option<&str> {
    let Expr::ScalarFunction(call) = expr else {
        return None;
    };
    call.func.inner().downcast_ref::<TokenizerUdf>()?;
    TokenizerUdf::model_of(&call.args)
}

/// `predict('<literal model name>', ...)` or `predict_proba(...)`: the name and the function.
fn predict_call(expr: &Expr) -> Option<(&str, &PredictUdf)> {
    let Expr::ScalarFunction(call) = expr else {
        return None;
    };
    let udf = call.func.inner().downcast_ref::<PredictUdf>()?;
    match call.args.first()? {
        Expr::Literal(
            ScalarValue::Utf8(Some(name))
            | ScalarValue::Utf8View(Some(name))
            | ScalarValue::LargeUtf8(Some(name)),
            _,
        ) => Some((name.as_str(), udf)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::model::DirectoryModels;
    use crate::udf::predict::{PredictKind, PredictUdf};
    use datafusion::logical_expr::{ScalarUDF, col, lit};
    use datafusion::prelude::SessionContext;
    use std::path::PathBuf;
    use std::sync::Arc;

    fn registry() -> Arc<DirectoryModels> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/models");
        Arc::new(DirectoryModels::load(&dir).unwrap())
    }

    #[tokio::test]
    async fn a_plan_pins_the_models_it_calls_and_the_smallest_run_size() {
        let registry = registry();
        let provider: Arc<dyn ModelProvider> = registry.clone();
        let ctx = SessionContext::new();
        let df = ctx
            .sql("SELECT 1.0 AS q, 0.05 AS d, 'price' AS other")
            .await
            .unwrap();
        let call = |rows: Option<usize>| {
            let udf = PredictUdf::new(PredictKind::Predict, provider.clone()).with_batch_rows(rows);
            ScalarUDF::new_from_impl(udf).call(vec![lit("price"), col("q"), col("d")])
        };
        let df = df
            .select(vec![call(Some(64)).alias("a"), call(Some(16)).alias("b")])
            .unwrap();
        let pins = Pins::for_plan(df.logical_plan(), registry.as_ref()).unwrap();
        let hash = registry
            .list()
            .into_iter()
            .find(|m| m.name == "price")
            .unwrap()
            .hash;
        assert_eq!(pins.versions, BTreeMap::from([("price".to_string(), hash)]));
        assert_eq!(pins.batch_rows, BTreeMap::from([("price".to_string(), 16)]));
        // Only the models the plan calls travel.
        assert_eq!(pins.versions.len(), 1);

        assert_eq!(Pins::from_config(&with_pins(&pins)).unwrap(), pins);
    }

    fn with_pins(pins: &Pins) -> ConfigOptions {
        let mut options = ConfigOptions::new();
        options.extensions.insert(ShoalOptions {
            models: pins.to_options().unwrap(),
            ..Default::default()
        });
        options
    }

    #[test]
    fn pins_travel_as_ascii_whatever_the_model_names() {
        let pins = Pins {
            versions: BTreeMap::from([("modèle_𝔪".to_string(), "ab12".to_string())]),
            batch_rows: BTreeMap::from([("modèle_𝔪".to_string(), 7)]),
            tensor_shapes: BTreeMap::from([("modèle_𝔪".to_string(), vec![vec![vec![3, 4]]])]),
            devices: BTreeMap::from([("modèle_𝔪".to_string(), DeviceRequest::Cuda(Some(1)))]),
        };
        let ext = pins.to_options().unwrap();
        assert!(
            ext.versions.is_ascii() && ext.batch_rows.is_ascii() && ext.devices.is_ascii(),
            "{ext:?}"
        );
        assert_eq!(Pins::from_config(&with_pins(&pins)).unwrap(), pins);
    }

    #[test]
    fn no_extension_means_no_pins_and_a_malformed_one_is_named() {
        assert_eq!(
            Pins::from_config(&ConfigOptions::new()).unwrap(),
            Pins::default()
        );
        let mut options = ConfigOptions::new();
        options.extensions.insert(ShoalOptions::default());
        options.set("shoal.models.versions", "not json").unwrap();
        let err = Pins::from_config(&options).unwrap_err().to_string();
        assert!(err.contains("shoal.models.versions"), "{err}");
    }
}
