//! Why a statement that asked for a GPU was scored on the CPU, kept per statement for its
//! report: a worker answers the coordinator's question after the statement ends with these
//! reasons, and the report names the site (`site-2 scored on cpu: ...`). Bounded: only the
//! most recent statements are kept.

use parking_lot::Mutex;
use std::collections::{BTreeSet, VecDeque};

/// Statements kept (a report asks right after its statement ends).
const KEPT: usize = 512;
/// Distinct reasons kept per statement (one per device kind and cause in practice).
const REASONS_PER_STATEMENT: usize = 8;

static NOTES: Mutex<VecDeque<(String, BTreeSet<String>)>> = Mutex::new(VecDeque::new());

/// Notes that `statement` (its key) was scored on the CPU because of `reason`. A statement
/// without a key (a single-node session) has no report to tell and notes nothing.
pub fn note_fallback(statement: &str, reason: &str) {
    if statement.is_empty() {
        return;
    }
    let mut notes = NOTES.lock();
    let index = match notes.iter().rposition(|(key, _)| key == statement) {
        Some(index) => index,
        None => {
            if notes.len() == KEPT {
                notes.pop_front();
            }
            notes.push_back((statement.to_string(), BTreeSet::new()));
            notes.len() - 1
        }
    };
    let reasons = &mut notes[index].1;
    if reasons.len() < REASONS_PER_STATEMENT {
        reasons.insert(reason.to_string());
    }
}

/// The reasons noted for `statement`, sorted (empty when it ran where it asked).
pub fn fallbacks_of(statement: &str) -> Vec<String> {
    NOTES
        .lock()
        .iter()
        .rev()
        .find(|(key, _)| key == statement)
        .map(|(_, reasons)| reasons.iter().cloned().collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_kept_per_statement_once_each_and_bounded() {
        note_fallback("fb-s1", "no NVIDIA GPU");
        note_fallback("fb-s1", "no NVIDIA GPU");
        note_fallback("fb-s1", "CUDA provider not available");
        note_fallback("", "ignored");
        assert_eq!(
            fallbacks_of("fb-s1"),
            vec!["CUDA provider not available", "no NVIDIA GPU"]
        );
        assert!(fallbacks_of("fb-other").is_empty());
        for i in 0..20 {
            note_fallback("fb-s2", &format!("reason {i}"));
        }
        assert_eq!(fallbacks_of("fb-s2").len(), REASONS_PER_STATEMENT);
    }
}
