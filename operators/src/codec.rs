//! Carries the ML functions across the network inside datafusion-proto plans.
//!
//! The encoded form of `predict`/`predict_proba` is the model versions the coordinator
//! planned with (name -> content hash), so every worker scores with exactly that version,
//! fetching it by hash if it does not have it yet, in runs of the batch size the plan asked
//! for. A local Parquet sink travels as its path and run id; the worker's codec adds where
//! that worker writes.

use crate::model::ModelProvider;
use crate::sink::{LocalParquetSinkExec, SinkSite};
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
    #[serde(default)]
    batch_rows: Option<usize>,
}

/// shoal's execution plans as they travel.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum EncodedPlan {
    LocalParquetSink { path: String, run_id: String },
}

/// Codec for shoal's UDFs and plans; holds the provider decoded functions load models from,
/// and on a worker where its sinks write.
#[derive(Debug, Clone)]
pub struct ShoalCodec {
    provider: Arc<dyn ModelProvider>,
    sink_site: Option<SinkSite>,
}

impl ShoalCodec {
    pub fn new(provider: Arc<dyn ModelProvider>) -> Self {
        Self {
            provider,
            sink_site: None,
        }
    }

    /// A worker's codec: decoded sinks write under `site.output_root`.
    pub fn with_sink_site(mut self, site: SinkSite) -> Self {
        self.sink_site = Some(site);
        self
    }
}

impl PhysicalExtensionCodec for ShoalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let decoded: EncodedPlan = match serde_json::from_slice(buf) {
            Ok(d) => d,
            Err(e) => return exec_err!("decoding a shoal plan node: {e}"),
        };
        match (decoded, inputs) {
            (EncodedPlan::LocalParquetSink { path, run_id }, [input]) => Ok(Arc::new(
                LocalParquetSinkExec::new(input.clone(), path, run_id, self.sink_site.clone())?,
            )),
            _ => exec_err!("a shoal plan node arrived with the wrong number of inputs"),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let Some(sink) = node.downcast_ref::<LocalParquetSinkExec>() else {
            return not_impl_err!("shoal cannot encode {}", node.name());
        };
        let encoded = EncodedPlan::LocalParquetSink {
            path: sink.path().to_string(),
            run_id: sink.run_id().to_string(),
        };
        serde_json::to_writer(buf, &encoded).or_else(|e| exec_err!("encoding {}: {e}", node.name()))
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
            batch_rows: predict.batch_rows(),
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
        Ok(Arc::new(ScalarUDF::new_from_impl(
            PredictUdf::new(decoded.kind, self.provider.clone(), decoded.pins)
                .with_batch_rows(decoded.batch_rows),
        )))
    }
}
