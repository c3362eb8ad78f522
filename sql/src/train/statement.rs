//! The `CREATE MODEL` statement a training runs, as parsed by [`crate::statement`].

pub use crate::statement::create_model::{CreateModel, OptionValue, USAGE};
