//! A site's privacy budget: epsilon spent per table in the current window, kept on disk
//! (`<audit folder>/privacy-budget.json`, rewritten whole through a temporary file and a
//! rename on every spend), so a restart never resets it. Windows are fixed, counted from
//! the epoch: a `1d` window resets at midnight UTC.

use shoal_planner::policy::Noise;
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct Spent {
    /// Start of the window, seconds since the epoch.
    window_start: u64,
    epsilon: f64,
}

#[derive(Debug)]
pub struct PrivacyBudget {
    path: PathBuf,
    spent: parking_lot::Mutex<BTreeMap<String, Spent>>,
}

impl PrivacyBudget {
    /// Reads what was spent (nothing if the file does not exist yet).
    pub fn open(dir: &Path) -> Result<Self, String> {
        let path = dir.join("privacy-budget.json");
        let spent = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| format!("privacy budget {}: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(format!("privacy budget {}: {e}", path.display())),
        };
        Ok(Self {
            path,
            spent: parking_lot::Mutex::new(spent),
        })
    }

    /// Spends `noise.epsilon_per_statement` on `table` now, or says why not: the window's
    /// budget would be exceeded (and when it resets), or the spend could not be kept.
    pub fn spend(&self, table: &str, noise: &Noise) -> Result<f64, String> {
        self.spend_at(table, noise, SystemTime::now())
    }

    fn spend_at(&self, table: &str, noise: &Noise, now: SystemTime) -> Result<f64, String> {
        let now_s = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let window = noise.budget_window.as_secs().max(1);
        let window_start = now_s - now_s % window;
        let mut spent = self.spent.lock();
        let entry = spent.entry(table.to_string()).or_default();
        if entry.window_start != window_start {
            *entry = Spent {
                window_start,
                epsilon: 0.0,
            };
        }
        let after = entry.epsilon + noise.epsilon_per_statement;
        if after > noise.epsilon_budget + 1e-9 {
            let resets = UNIX_EPOCH + Duration::from_secs(window_start + window);
            return Err(format!(
                "its privacy budget is spent ({} of {} epsilon in this window; a statement \
                 spends {}); it resets at {}",
                entry.epsilon,
                noise.epsilon_budget,
                noise.epsilon_per_statement,
                humantime::format_rfc3339_seconds(resets)
            ));
        }
        let before = entry.epsilon;
        entry.epsilon = after;
        if let Err(e) = self.persist(&spent) {
            // Not kept, not spent: refuse rather than release on a budget a restart forgets.
            if let Some(entry) = spent.get_mut(table) {
                entry.epsilon = before;
            }
            return Err(format!("its privacy budget cannot be recorded ({e})"));
        }
        Ok(noise.epsilon_per_statement)
    }

    fn persist(&self, spent: &BTreeMap<String, Spent>) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(spent).map_err(std::io::Error::other)?;
        let scratch = self
            .path
            .with_extension(format!("tmp-{}", std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&scratch)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&scratch, &self.path)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_budget_runs_out_survives_a_restart_and_resets_with_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let noise = Noise {
            epsilon_per_statement: 0.5,
            epsilon_budget: 1.0,
            budget_window: Duration::from_secs(86_400),
        };
        let day = UNIX_EPOCH + Duration::from_secs(20_000 * 86_400 + 3_600);
        let budget = PrivacyBudget::open(dir.path()).unwrap();
        assert_eq!(budget.spend_at("visits", &noise, day).unwrap(), 0.5);
        // Another table has its own budget.
        budget.spend_at("other", &noise, day).unwrap();
        drop(budget);
        let budget = PrivacyBudget::open(dir.path()).unwrap();
        budget.spend_at("visits", &noise, day).unwrap();
        let refused = budget.spend_at("visits", &noise, day).unwrap_err();
        assert!(
            refused.contains("1 of 1 epsilon") && refused.contains("resets at"),
            "{refused}"
        );
        let next_day = day + Duration::from_secs(86_400);
        assert_eq!(budget.spend_at("visits", &noise, next_day).unwrap(), 0.5);
    }
}
