//! Scalar functions: the ML functions (`predict`, `predict_proba`, the models' tokenizers)
//! and the feature kernels.

pub mod feature;
pub mod inference;
pub mod model_pins;
mod null_rows;
pub mod predict;
pub mod site;
pub mod tensor_batches;
pub mod tokenize;
pub mod top_k;
