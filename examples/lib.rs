//! Runnable examples of shoal: see `embedded_predict.rs`.
