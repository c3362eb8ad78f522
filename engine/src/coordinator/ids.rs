//! Ids of statements, pipeline runs and prepared statements: random, so that no client can
//! guess another's (and tickets carrying them are signed besides, see `flight::tickets`).

/// A fresh id: `q` and 128 random bits in hex.
pub fn new_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No randomness at all: unique still (time and counter), and tickets stay signed.
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        bytes[..8].copy_from_slice(&nanos.to_le_bytes());
        bytes[8..].copy_from_slice(&NEXT.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    }
    format!("q{}", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_unique_and_unpredictable_in_length() {
        let (a, b) = (super::new_id(), super::new_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 33);
    }
}
