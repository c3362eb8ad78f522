//! The memory a process's queries and models may hold: one DataFusion pool per process
//! (a worker's, the coordinator's), shared by its statements and by shoal's kernels.

use datafusion::execution::memory_pool::{FairSpillPool, MemoryPool, TrackConsumersPool};
use std::sync::Arc;

/// The default memory limit: 70% of the machine's memory, leaving room for the process
/// itself and the page cache. None where the total cannot be read.
pub fn default_memory_limit() -> Option<usize> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: usize = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024 / 10 * 7)
}

/// A pool that spills fairly between the operators that can, and whose errors name the
/// largest consumers (so "out of memory" says what took it).
pub fn memory_pool(limit: Option<usize>) -> Option<Arc<dyn MemoryPool>> {
    let limit = limit?;
    let top = std::num::NonZeroUsize::new(5)?;
    Some(Arc::new(TrackConsumersPool::new(
        FairSpillPool::new(limit),
        top,
    )))
}
