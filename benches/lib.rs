//! shoal's benchmarks live in `end_to_end.rs` (`make bench`).
