//! ML scalar functions.

mod inference;
pub mod predict;
