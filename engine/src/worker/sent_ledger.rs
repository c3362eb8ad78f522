//! What this site sent for each recent statement, by recipient (`coordinator`, a peer
//! site, or the next stage): the same counts as the audit log's `sent_to`, kept in memory
//! for the statement's report, so it can say what moved between sites as well as to the
//! coordinator. Bounded: only the most recent statements are kept.

use shoal_planner::recent::Recent;
use std::collections::BTreeMap;

/// Statements kept (a report asks right after its statement ends).
const KEPT: usize = 512;

pub type SentTo = BTreeMap<String, u64>;

#[derive(Debug)]
pub struct SentLedger {
    statements: Recent<SentTo>,
}

impl Default for SentLedger {
    fn default() -> Self {
        Self {
            statements: Recent::new(KEPT),
        }
    }
}

impl SentLedger {
    pub fn add(&self, statement: &str, recipient: &str, bytes: u64) {
        self.statements.update(statement, |sent| {
            *sent.entry(recipient.to_string()).or_default() += bytes
        });
    }

    /// Bytes by recipient for `statement` (empty when this site sent nothing for it).
    pub fn sent(&self, statement: &str) -> SentTo {
        self.statements.get(statement).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_per_statement_and_recipient() {
        let ledger = SentLedger::default();
        ledger.add("s1", "coordinator", 10);
        ledger.add("s1", "coordinator", 5);
        ledger.add("s1", "site-2", 7);
        assert_eq!(ledger.sent("s1")["coordinator"], 15);
        assert_eq!(ledger.sent("s1")["site-2"], 7);
        assert!(ledger.sent("s2").is_empty());
        for i in 0..KEPT {
            ledger.add(&format!("other-{i}"), "coordinator", 1);
        }
        assert!(ledger.sent("s1").is_empty());
    }
}
