//! Training and evaluation where the data is: aggregates whose partial states (model
//! updates, sufficient statistics, metric counts) are all a site sends.
//!
//! - [`stats_udf`]: `__shoal_linear_stats`, the [`gram::Gram`] statistics: exact linear
//!   regression and the feature scaling of every model;
//! - [`fedavg`]: `__shoal_fedavg_round`, one round of federated averaging (local SGD on
//!   each site's rows, see [`network`]); [`combine`] is the coordinator's averaging with the
//!   privacy rules;
//! - [`onnx_export`]: a trained model as an ONNX graph;
//! - [`metric_udfs`]: `evaluate(...)` and `compare_models(...)` over [`metrics`].

pub mod bounds;
pub mod combine;
pub mod fedavg;
pub mod gram;
mod inputs;
pub mod metric_udfs;
pub mod metrics;
pub mod network;
pub mod onnx_export;
pub mod stats_udf;
pub mod wire;

use crate::cancel::CancelToken;
use datafusion::logical_expr::AggregateUDF;
use std::sync::Arc;

/// Every aggregate shoal adds, for a session on `site` ("local" in one process) running
/// the statement `stop` belongs to.
pub fn shoal_udafs(site: &str, stop: CancelToken) -> Vec<Arc<AggregateUDF>> {
    let mut udafs = metric_udfs::metric_udafs();
    udafs.push(Arc::new(AggregateUDF::new_from_impl(
        stats_udf::LinearStatsUdf::new(site),
    )));
    udafs.push(Arc::new(AggregateUDF::new_from_impl(
        fedavg::FedAvgRoundUdf::new(site, stop),
    )));
    udafs
}
