//! Predictions written as Parquet on the worker that holds the input, committed atomically.
//!
//! ```text
//!  pipeline sink ──► ParquetSinkNode (logical) ──► ParquetSinkExec (physical, one
//!  per input partition, inside the workers' stage) ──► one manifest row per file written
//!
//!  <output>/<path>/.staging-<run>/part-*.parquet   written while the query runs (hidden)
//!  <output>/<path>/run-<run>/part-*.parquet        after the coordinator's commit: one rename
//!  <output>/<path>/run-<run>/_manifest.json        files, row counts, sha256 of this site
//! ```
//! A failed or cancelled run is aborted (its staging folder removed), so no partial files
//! are ever visible under `run-<run>`; a committed run id is never written again.
//!
//! An `object_store` sink writes where the site's data lives, a bucket prefix or a folder,
//! through the store's own interface: stores have no rename, so each file is staged locally,
//! uploaded to `<data>/<path>/run-<run>/`, and the run is committed by writing its manifest
//! last ([`store_commit`]). Committed runs are then a table of the site.

mod exec;
mod node;
pub mod staging;
pub mod store_commit;

pub use exec::{ParquetSinkExec, SinkSite, manifest_schema};
pub use node::{ParquetSinkNode, ShoalQueryPlanner, SinkPlanner};
