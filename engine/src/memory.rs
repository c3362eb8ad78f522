//! The memory a process's queries and models may hold: one DataFusion pool per process
//! (a worker's, the coordinator's), shared by its statements and by shoal's kernels.

use datafusion::execution::memory_pool::{
    FairSpillPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation, TrackConsumersPool,
};
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

/// Memory held for speed, not for correctness, that can be let go when the pool is full
/// (a worker's loaded models no task holds).
pub trait Reclaim: Send + Sync + std::fmt::Debug {
    /// Frees at least `wanted` bytes of the pool if it can; returns the bytes freed.
    fn reclaim(&self, wanted: usize) -> usize;
}

/// A pool that, when a reservation does not fit, asks its [`Reclaim`] to let go of what it
/// holds and tries once more: an idle model is dropped before a query fails for memory.
///
/// DataFusion's pools have no hook for this; wrapping keeps the fair spilling and the
/// consumer tracking of the pool inside.
#[derive(Debug)]
pub struct ReclaimingPool {
    inner: Arc<dyn MemoryPool>,
    /// Weak: the reclaimer (the worker's models) holds this pool.
    reclaimer: std::sync::OnceLock<std::sync::Weak<dyn Reclaim>>,
}

impl ReclaimingPool {
    pub fn new(inner: Arc<dyn MemoryPool>) -> Self {
        Self {
            inner,
            reclaimer: std::sync::OnceLock::new(),
        }
    }

    /// What to let go of under pressure (set once).
    pub fn reclaim_from(&self, reclaimer: std::sync::Weak<dyn Reclaim>) {
        let _ = self.reclaimer.set(reclaimer);
    }
}

impl std::fmt::Display for ReclaimingPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.inner)
    }
}

impl MemoryPool for ReclaimingPool {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.inner.register(consumer);
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.inner.unregister(consumer);
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.inner.grow(reservation, additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.inner.shrink(reservation, shrink);
    }

    fn try_grow(
        &self,
        reservation: &MemoryReservation,
        additional: usize,
    ) -> datafusion::common::Result<()> {
        let Err(full) = self.inner.try_grow(reservation, additional) else {
            return Ok(());
        };
        let freed = self
            .reclaimer
            .get()
            .and_then(std::sync::Weak::upgrade)
            .map_or(0, |reclaimer| reclaimer.reclaim(additional));
        if freed == 0 {
            return Err(full);
        }
        self.inner.try_grow(reservation, additional)
    }

    fn reserved(&self) -> usize {
        self.inner.reserved()
    }

    fn memory_limit(&self) -> MemoryLimit {
        self.inner.memory_limit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    /// Holds reservations it lets go of, oldest first.
    #[derive(Debug, Default)]
    struct Held(Mutex<Vec<MemoryReservation>>);

    impl Reclaim for Held {
        fn reclaim(&self, wanted: usize) -> usize {
            let mut held = self.0.lock();
            let mut freed = 0;
            while freed < wanted && !held.is_empty() {
                freed += held.remove(0).size();
            }
            freed
        }
    }

    #[test]
    fn a_full_pool_lets_go_of_what_can_be_reclaimed_before_refusing() {
        let reclaiming = Arc::new(ReclaimingPool::new(Arc::new(
            datafusion::execution::memory_pool::GreedyMemoryPool::new(100),
        )));
        let pool: Arc<dyn MemoryPool> = reclaiming.clone();
        let held = Arc::new(Held::default());
        for _ in 0..3 {
            let r = MemoryConsumer::new("idle model").register(&pool);
            r.try_grow(30).unwrap();
            held.0.lock().push(r);
        }
        // No reclaimer yet: a plain refusal.
        let query = MemoryConsumer::new("sort").register(&pool);
        assert!(query.try_grow(50).is_err());
        let weak: std::sync::Weak<dyn Reclaim> =
            Arc::downgrade(&(held.clone() as Arc<dyn Reclaim>));
        reclaiming.reclaim_from(weak);
        // 10 free; 50 wanted: two idle 30-byte holders go, the third stays.
        query.try_grow(50).unwrap();
        assert_eq!(held.0.lock().len(), 1);
        assert_eq!(pool.reserved(), 80);
        // Nothing left that fits: refused, and the last holder was let go trying.
        assert!(query.try_grow(60).is_err());
        assert_eq!(pool.reserved(), 50);
    }
}
