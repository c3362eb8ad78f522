//! shoal-sql: the SQL surface. A DataFusion session with every shoal function registered,
//! the `shoal.models` table behind `SHOW MODELS`, and the single-process session used as the
//! reference answer for distributed runs.
//!
//! ```text
//!  SQL text ──► statement::ShoalStatement::parse ──► DataFusion SessionContext
//!                                                        │  predict / predict_proba
//!                                                        │  shoal.models
//!                                                        ▼
//!                                                   LogicalPlan
//! ```

pub mod error;
pub mod file_formats;
mod files_table;
mod models_table;
pub mod session;
pub mod statement;
pub mod train;

pub use error::{Error, Result};
pub use models_table::ModelsTable;
pub use session::{local_context, table_folders, with_shoal_functions, with_shoal_functions_at};
pub use statement::ShoalStatement;
