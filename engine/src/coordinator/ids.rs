//! Ids of statements, pipeline runs and prepared statements.

use std::sync::atomic::{AtomicU64, Ordering};

/// A unique id (time + counter; no uuid dependency needed).
pub fn new_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("q{nanos:x}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}
