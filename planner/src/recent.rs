//! A bounded record of the most recent statements' facts, by statement key: what the
//! coordinator keeps of each statement's coverage, and a site of what it sent, until the
//! statement's report reads them. The oldest key goes when a new one would exceed the bound.

use parking_lot::Mutex;
use std::collections::VecDeque;

#[derive(Debug)]
pub struct Recent<V> {
    kept: Mutex<VecDeque<(String, V)>>,
    capacity: usize,
}

impl<V: Default + Clone> Recent<V> {
    pub fn new(capacity: usize) -> Self {
        Self {
            kept: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
        }
    }

    /// Changes `key`'s value (starting from the default when the key is new).
    pub fn update(&self, key: &str, change: impl FnOnce(&mut V)) {
        let mut kept = self.kept.lock();
        let index = match kept.iter().rposition(|(k, _)| k == key) {
            Some(index) => index,
            None => {
                if kept.len() == self.capacity {
                    kept.pop_front();
                }
                kept.push_back((key.to_string(), V::default()));
                kept.len() - 1
            }
        };
        change(&mut kept[index].1);
    }

    pub fn get(&self, key: &str) -> Option<V> {
        self.kept
            .lock()
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_change_per_key_and_the_oldest_key_goes() {
        let recent: Recent<u64> = Recent::new(2);
        recent.update("a", |v| *v += 1);
        recent.update("a", |v| *v += 2);
        recent.update("b", |v| *v += 5);
        assert_eq!(recent.get("a"), Some(3));
        recent.update("c", |v| *v += 1);
        assert_eq!(recent.get("a"), None);
        assert_eq!(recent.get("b"), Some(5));
    }
}
