//! Prepared statements: the SQL and the parameters last bound to it, per handle. Bounded,
//! so clients that never close their statements cannot grow the coordinator's memory.

use crate::coordinator::ids::new_id;
use datafusion::arrow::array::RecordBatch;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};

/// Open prepared statements kept; the oldest is forgotten beyond this.
const MAX_PREPARED: usize = 10_000;

#[derive(Debug, Clone)]
pub struct Prepared {
    pub sql: String,
    pub parameters: Option<RecordBatch>,
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

impl PreparedStatements {
    /// Keeps `sql`; returns its handle.
    pub fn create(&self, sql: String) -> String {
        let handle = format!("prepared-{}", new_id());
        let mut inner = self.inner.lock();
        while inner.order.len() >= MAX_PREPARED {
            if let Some(oldest) = inner.order.pop_front() {
                inner.statements.remove(&oldest);
            }
        }
        inner.order.push_back(handle.clone());
        inner.statements.insert(
            handle.clone(),
            Prepared {
                sql,
                parameters: None,
            },
        );
        handle
    }

    pub fn get(&self, handle: &str) -> Option<Prepared> {
        self.inner.lock().statements.get(handle).cloned()
    }

    /// Binds parameters; false if the handle is unknown.
    pub fn bind(&self, handle: &str, parameters: RecordBatch) -> bool {
        match self.inner.lock().statements.get_mut(handle) {
            Some(statement) => {
                statement.parameters = Some(parameters);
                true
            }
            None => false,
        }
    }

    pub fn close(&self, handle: &str) {
        let mut inner = self.inner.lock();
        inner.statements.remove(handle);
        inner.order.retain(|h| h != handle);
    }
}
