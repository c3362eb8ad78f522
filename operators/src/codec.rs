//! Carries shoal's plan nodes across the network inside datafusion-proto plans.
//!
//! A Parquet sink travels as its path, run id and target; the worker's codec adds where
//! that worker writes. `predict` travels by name: the model versions it uses go with the
//! statement's config instead ([`crate::udf::model_pins`]). A files table's scan travels as
//! its files and columns ([`crate::files::wire`]).

use crate::files::{self, FileBatchesExec};
use crate::sink::staging::SinkTarget;
use crate::sink::{ParquetSinkExec, SinkSite};
use datafusion::common::{Result, exec_err, not_impl_err};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use std::sync::Arc;

/// shoal's execution plans as they travel.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum EncodedPlan {
    ParquetSink {
        path: String,
        run_id: String,
        #[serde(default)]
        target: SinkTarget,
    },
    /// A files table's scan (`crate::files`).
    FilesScan(files::wire::EncodedFilesScan),
    /// The node that gathers a files scan's rows into batches.
    FileBatches { max_rows: Option<usize> },
}

/// Codec for shoal's plans; on a worker it knows where its sinks write.
#[derive(Debug, Clone, Default)]
pub struct ShoalCodec {
    sink_site: Option<SinkSite>,
}

impl ShoalCodec {
    /// A worker's codec: decoded sinks write under `site.output_root` or into its data store.
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
            (
                EncodedPlan::ParquetSink {
                    path,
                    run_id,
                    target,
                },
                [input],
            ) => Ok(Arc::new(ParquetSinkExec::new(
                input.clone(),
                path,
                run_id,
                target,
                self.sink_site.clone(),
            )?)),
            (EncodedPlan::FilesScan(scan), []) => files::wire::decode(scan),
            (EncodedPlan::FileBatches { max_rows }, [input]) => Ok(Arc::new(
                FileBatchesExec::new(input.clone()).with_max_rows(max_rows),
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
        let encoded = if let Some(sink) = node.downcast_ref::<ParquetSinkExec>() {
            EncodedPlan::ParquetSink {
                path: sink.path().to_string(),
                run_id: sink.run_id().to_string(),
                target: sink.target(),
            }
        } else if let Some(scan) = files::wire::encode(&node) {
            EncodedPlan::FilesScan(scan?)
        } else if let Some(batches) = node.downcast_ref::<FileBatchesExec>() {
            EncodedPlan::FileBatches {
                max_rows: batches.max_rows(),
            }
        } else {
            return not_impl_err!("shoal cannot encode {}", node.name());
        };
        serde_json::to_writer(buf, &encoded).or_else(|e| exec_err!("encoding {}: {e}", node.name()))
    }
}
