//! Predictions written as Parquet on the worker that holds the input, committed atomically.
//!
//! ```text
//!  pipeline sink ──► LocalParquetSinkNode (logical) ──► LocalParquetSinkExec (physical, one
//!  per input partition, inside the workers' stage) ──► one manifest row per file written
//!
//!  <output>/<path>/.staging-<run>/part-*.parquet   written while the query runs (hidden)
//!  <output>/<path>/run-<run>/part-*.parquet        after the coordinator's commit: one rename
//!  <output>/<path>/run-<run>/_manifest.json        files, row counts, sha256 of this site
//! ```
//! A failed or cancelled run is aborted (its staging folder removed), so no partial files
//! are ever visible under `run-<run>`; a committed run id is never written again.

mod exec;
mod node;
pub mod staging;

pub use exec::{LocalParquetSinkExec, SinkSite, manifest_schema};
pub use node::{LocalParquetSinkNode, ShoalQueryPlanner, SinkPlanner};
