//! The SIMD kernels of shoal's native model evaluators.
//!
//! A crate of its own, under `operators/`, for one reason: the workspace's test profile
//! builds its crates unoptimised to keep a cold build short, and these kernels unoptimised
//! run two orders of magnitude slower than ONNX Runtime's prebuilt ones. The root
//! `Cargo.toml` builds this crate (and `pulp`) at `opt-level = 3` in every profile; its
//! entry points are not generic, so the code is generated here, optimised.

pub mod dense;
pub mod trees;

pub use dense::{Layer, Unary, activate};
