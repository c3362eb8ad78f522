//! ML scalar functions.

pub mod inference;
pub mod predict;
