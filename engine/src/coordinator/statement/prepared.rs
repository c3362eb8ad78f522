//! Prepared statements: the SQL and the parameters last bound to it, per handle, with the
//! principal that prepared it. Handles are random; a client reads, binds and closes only
//! its own (an admin any), and keeps at most [`MAX_PREPARED_PER_OWNER`] open (admins are
//! not counted). The table is
//! bounded besides, so clients that never close their statements cannot grow memory.

use crate::coordinator::ids::new_id;
use crate::error::{Error, Result};
use crate::security::Principal;
use datafusion::arrow::array::RecordBatch;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};

/// Open prepared statements kept; the oldest is forgotten beyond this.
const MAX_PREPARED: usize = 10_000;
/// Open prepared statements one principal may keep; the next is refused naming the quota.
pub const MAX_PREPARED_PER_OWNER: usize = 256;

#[derive(Debug, Clone)]
pub struct Prepared {
    pub sql: String,
    pub parameters: Option<RecordBatch>,
    owner: String,
}

#[derive(Debug, Default)]
pub struct PreparedStatements {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    statements: HashMap<String, Prepared>,
    order: VecDeque<String>,
}

impl Inner {
    /// The statement behind `handle` if `principal` may use it. Another client's handle
    /// reads as unknown: its existence is not revealed.
    fn visible(&mut self, handle: &str, principal: &Principal) -> Option<&mut Prepared> {
        self.statements
            .get_mut(handle)
            .filter(|p| p.owner == principal.owner() || principal.is_admin())
    }
}

impl PreparedStatements {
    /// Keeps `sql` for `principal`; returns its handle.
    pub fn create(&self, sql: String, principal: &Principal) -> Result<String> {
        let owner = principal.owner();
        let mut inner = self.inner.lock();
        let held = inner
            .statements
            .values()
            .filter(|p| p.owner == owner)
            .count();
        if held >= MAX_PREPARED_PER_OWNER && !principal.is_admin() {
            return Err(Error::Quota(format!(
                "{owner} holds {held} open prepared statements, the quota per client \
                 ({MAX_PREPARED_PER_OWNER}): close some first"
            )));
        }
        while inner.order.len() >= MAX_PREPARED {
            if let Some(oldest) = inner.order.pop_front() {
                inner.statements.remove(&oldest);
            }
        }
        let handle = format!("prepared-{}", new_id());
        inner.order.push_back(handle.clone());
        inner.statements.insert(
            handle.clone(),
            Prepared {
                sql,
                parameters: None,
                owner,
            },
        );
        Ok(handle)
    }

    pub fn get(&self, handle: &str, principal: &Principal) -> Option<Prepared> {
        self.inner.lock().visible(handle, principal).cloned()
    }

    /// Binds parameters; false if the handle is unknown (or another client's).
    pub fn bind(&self, handle: &str, parameters: RecordBatch, principal: &Principal) -> bool {
        match self.inner.lock().visible(handle, principal) {
            Some(statement) => {
                statement.parameters = Some(parameters);
                true
            }
            None => false,
        }
    }

    /// Closes `handle` if `principal` may (closing another client's is a no-op).
    pub fn close(&self, handle: &str, principal: &Principal) {
        let mut inner = self.inner.lock();
        if inner.visible(handle, principal).is_some() {
            inner.statements.remove(handle);
            inner.order.retain(|h| h != handle);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> Principal {
        Principal::Client {
            user: name.into(),
            role: crate::security::Role::Trainer,
        }
    }

    #[test]
    fn a_client_sees_only_its_own_within_a_quota() {
        let prepared = PreparedStatements::default();
        let (ana, bo) = (user("ana"), user("bo"));
        let handle = prepared.create("SELECT 1".into(), &ana).unwrap();
        assert!(prepared.get(&handle, &bo).is_none());
        let batch = RecordBatch::new_empty(std::sync::Arc::new(
            datafusion::arrow::datatypes::Schema::empty(),
        ));
        assert!(!prepared.bind(&handle, batch, &bo));
        prepared.close(&handle, &bo);
        assert!(prepared.get(&handle, &ana).is_some(), "bo cannot close it");
        assert!(
            prepared.get(&handle, &Principal::Open).is_some(),
            "an admin sees it"
        );
        for _ in 0..MAX_PREPARED_PER_OWNER {
            prepared.create("SELECT 1".into(), &bo).unwrap();
        }
        let err = prepared.create("SELECT 1".into(), &bo).unwrap_err();
        assert!(err.to_string().contains("quota"), "{err}");
        assert!(prepared.create("SELECT 2".into(), &ana).is_ok());
        prepared.close(&handle, &ana);
        assert!(prepared.get(&handle, &ana).is_none());
    }
}
