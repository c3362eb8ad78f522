//! shoal-operators: the model runtime and the ML functions that run where the data is.
//!
//! ```text
//!  Arrow columns (f1 .. fn)             one ORT run per Arrow batch
//!        │                                     │
//!        ▼                                     ▼
//!  features::stack_features ──► [N, n] f32 ──► SessionPool (one session per slot,
//!  (one tiled copy, or a zero-copy        on the inference CPU pool)
//!   view of a FixedSizeList column)            │
//!                                              ▼
//!                         predict → label / value column, predict_proba → Float32 / FixedSizeList
//! ```
//!
//! The crate knows nothing about clusters: a [`ModelProvider`] says where model bytes come
//! from (a directory on the coordinator, a content-addressed cache on a worker), and the
//! [`codec::ShoalCodec`] carries shoal's plan nodes across the network;
//! [`udf::model_pins`] the model versions a statement was planned with.

pub mod cancel;
pub mod codec;
pub mod config;
pub mod device;
pub mod error;
pub mod features;
pub mod files;
pub mod model;
pub mod privacy;
pub mod runtime;
pub mod sink;
pub mod status;
pub mod train;
pub mod udf;

pub use config::ShoalOptions;
pub use error::{Error, Result};
pub use model::{LoadedModel, ModelInfo, ModelProvider, ModelSignature};
pub use status::{ErrorExt, StatusCode};
pub use train::shoal_udafs;
pub use udf::feature::{FeatureFunction, feature_udfs};
pub use udf::inference::model_runs;
pub use udf::predict::{PredictKind, PredictUdf, ml_udfs};
