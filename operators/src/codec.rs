//! Carries the ML functions across the network inside datafusion-proto plans.
//!
//! The encoded form of `predict`/`predict_proba` is the model versions the coordinator
//! planned with (name -> content hash), so every worker scores with exactly that version,
//! fetching it by hash if it does not have it yet.

use crate::model::ModelProvider;
use crate::udf::predict::{PredictKind, PredictUdf};
use datafusion::common::{Result, exec_err, not_impl_err};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::ScalarUDF;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct EncodedPredict {
    kind: PredictKind,
    pins: BTreeMap<String, String>,
}

/// Codec for shoal's UDFs; holds the provider decoded functions load models from.
#[derive(Debug, Clone)]
pub struct ShoalCodec {
    provider: Arc<dyn ModelProvider>,
}

impl ShoalCodec {
    pub fn new(provider: Arc<dyn ModelProvider>) -> Self {
        Self { provider }
    }
}

impl PhysicalExtensionCodec for ShoalCodec {
    fn try_decode(
        &self,
        _buf: &[u8],
        _inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        not_impl_err!("shoal has no custom execution plans to decode")
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        _buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        not_impl_err!("shoal cannot encode {}", node.name())
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        let Some(predict) = node.inner().downcast_ref::<PredictUdf>() else {
            return Ok(());
        };
        let pins = predict
            .provider()
            .list()
            .into_iter()
            .map(|m| (m.name, m.hash))
            .collect();
        let encoded = EncodedPredict {
            kind: predict.kind(),
            pins,
        };
        serde_json::to_writer(buf, &encoded).or_else(|e| exec_err!("encoding {}: {e}", node.name()))
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        if PredictKind::from_function_name(name).is_none() {
            return not_impl_err!("shoal does not provide function {name}");
        }
        let decoded: EncodedPredict = match serde_json::from_slice(buf) {
            Ok(d) => d,
            Err(e) => return exec_err!("decoding {name}: {e}"),
        };
        Ok(Arc::new(ScalarUDF::new_from_impl(PredictUdf::new(
            decoded.kind,
            self.provider.clone(),
            decoded.pins,
        ))))
    }
}
