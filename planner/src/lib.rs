//! shoal-planner: where each piece of a query runs.
//!
//! ```text
//!  worker reports ──► SiteCatalog (sites, their tables and files, liveness)
//!                          │
//!  SQL ──► SiteTableProvider::scan ──► DataSourceExec over shoal://cluster/<site>/<file>
//!                          │
//!  datafusion-distributed planner
//!     SiteLocality::desired_task_count  one task per holding site (at least 2, so the
//!                                       coordinator never scans)
//!     SiteLocality::scale_up_leaf       task i scans only site s(i)'s files, from shoal://<site>
//!     SiteLocality::route_tasks         task i runs on the worker of site s(i)
//!                          │
//!  after execution: QueryReport (bytes scanned on sites vs bytes received by the coordinator)
//! ```

pub mod catalog;
pub mod error;
pub mod explain;
pub mod locality;
pub mod pipeline;
pub mod placement;
pub mod policy;
pub mod recent;
pub mod report;
pub mod site_table;
pub mod stand_in;

pub use catalog::{SiteCatalog, SiteFile, SiteReport, SiteTableReport};
pub use error::{Error, Result};
pub use locality::{CLUSTER_STORE, SiteLocality, site_store_url};
pub use report::{Coverage, QueryReport};
pub use site_table::SiteSchemaProvider;
