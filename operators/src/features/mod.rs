//! Feature kernels: vectorized Arrow functions over whole columns, used by the SQL functions
//! of [`crate::udf::feature`] and by the pipelines' feature steps.
//!
//! - [`matrix`]: feature columns to the row-major matrix an ONNX tensor views;
//! - [`numeric`]: scaling, imputation, log1p, clip, bucketize;
//! - [`categorical`]: one-hot and ordinal encoding, the hashing trick;
//! - [`text`]: token counts, hashed n-grams, regex extraction.
//!
//! Every kernel takes an Arrow array and returns one, never looping over rows through
//! `ScalarValue`; string kernels on dictionary arrays work once per distinct value.

pub mod categorical;
pub mod matrix;
pub mod numeric;
pub mod text;

pub use matrix::{as_matrix_view, cast_all, is_numeric_feature, stack_as_f32, stack_row_major};
