//! shoal-engine: the coordinator and worker processes, the Flight SQL front door, the
//! embedded cluster and the `shoal` binary.
//!
//! ```text
//!  shoal sql / pyarrow / ADBC ──Flight SQL──► coordinator ──datafusion-distributed──► workers
//!                                   │  catalog (site reports)          │ scan local Parquet
//!                                   │  model registry (--models)       │ predict on CPU pool
//!                                   ◄──── register / heartbeat / fetch model by hash ────┘
//! ```
//! Coordinator and worker share only [`protocol`]: the actions and messages between them.

mod accept;
pub mod address;
pub mod client;
pub mod coordinator;
pub mod embedded;
pub mod error;
pub mod health;
pub mod memory;
pub mod protocol;
pub mod security;
pub mod tasks;
pub mod tpch;
pub mod visits;
pub mod worker;

pub use coordinator::{Coordinator, CoordinatorOptions};
pub use embedded::{DEMO_SITE_POLICY, EmbeddedCluster, demo_site_policy};
pub use error::{Error, Result};
pub use shoal_planner::policy::SitePolicy;
pub use worker::{WorkerOptions, WorkerProcess};
