//! A site's egress policy: the file its operator writes (`shoal worker --policy FILE`), read
//! into the rules each of its tables is held to.
//!
//! ```toml
//! [defaults]
//! egress = "aggregates"          # "aggregates" | "predictions" | "rows"
//! min_group_rows = 10
//! small_groups = "refuse"        # "refuse" | "suppress"
//!
//! [tables.visits]
//! never_leave = ["patient_id", "name"]
//! bounds = { age = [0, 120] }
//! noise = { epsilon_per_statement = 0.5, epsilon_budget = 20.0, budget_window = "1d" }
//! models = ["readmission", "visit_cost@v3"]
//!
//! [tables.lineitem]
//! egress = "rows"
//! ```
//!
//! Without a file every table is aggregates-only with the defaults: a site is safe unless
//! its operator says otherwise.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

/// The default smallest group a site releases. DataSHIELD's `nfilter.tab` defaults to 3 and
/// 5 is the common rule; statistics offices use 10, which is what a site gets unless it
/// says otherwise.
pub const DEFAULT_MIN_GROUP_ROWS: u64 = 10;

/// What may leave the site from a scan of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Egress {
    /// Only aggregates over groups of at least `min_group_rows` of the site's rows.
    Aggregates,
    /// Model outputs of allowed models, row by row, with the table's `row_keys`.
    Predictions,
    /// Anything, rows included.
    Rows,
}

impl std::fmt::Display for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Egress::Aggregates => "aggregates",
            Egress::Predictions => "predictions",
            Egress::Rows => "rows",
        })
    }
}

/// What happens to a group smaller than `min_group_rows`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmallGroups {
    /// The statement fails, naming the table and the rule.
    Refuse,
    /// The group is dropped from what the site sends; the report counts it.
    Suppress,
}

/// Differential-privacy noise on a table's released aggregates, with a budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Noise {
    pub epsilon_per_statement: f64,
    pub epsilon_budget: f64,
    /// The budget is spent within fixed windows of this length (from the epoch); a new
    /// window starts with the whole budget.
    #[serde(with = "window_text")]
    pub budget_window: Duration,
}

/// The rules one table is held to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableRules {
    pub egress: Egress,
    pub min_group_rows: u64,
    pub small_groups: SmallGroups,
    /// Columns that may be read on the site (to filter, to join) but never appear in
    /// anything that leaves it.
    pub never_leave: BTreeSet<String>,
    /// For `predictions`: the raw columns that may travel with each prediction.
    pub row_keys: BTreeSet<String>,
    /// Clamping bounds of columns summed or averaged under noise.
    pub bounds: BTreeMap<String, (f64, f64)>,
    pub noise: Option<Noise>,
    /// Models allowed on the table (`name`, `name@vN` or a sha256); None: any registered.
    pub models: Option<Vec<String>>,
}

impl TableRules {
    /// Whether `model` (as the statement calls it: `name` or `name@vN`), pinned to content
    /// hash `sha256`, may run on this table's rows. `registered` gives the hash the registry
    /// lists for a `name@vN` entry; a sha256 entry trusts nobody's naming.
    pub fn allows_model(
        &self,
        model: &str,
        sha256: Option<&str>,
        registered: &dyn Fn(&str) -> Option<String>,
    ) -> bool {
        let Some(allowed) = &self.models else {
            return true;
        };
        let base = model.split_once('@').map_or(model, |(name, _)| name);
        allowed.iter().any(|entry| {
            if is_sha256(entry) {
                let entry = entry.strip_prefix("sha256:").unwrap_or(entry);
                return sha256.is_some_and(|h| h.eq_ignore_ascii_case(entry));
            }
            if entry.contains('@') {
                return entry == model
                    || sha256.is_some_and(|h| registered(entry).is_some_and(|r| r == h));
            }
            entry == base
        })
    }
}

fn is_sha256(text: &str) -> bool {
    let hex = text.strip_prefix("sha256:").unwrap_or(text);
    hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit())
}

/// A site's whole policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SitePolicy {
    /// Where it was read from (a path, or "built-in default").
    pub source: String,
    pub defaults: TableRules,
    pub tables: BTreeMap<String, TableRules>,
}

impl Default for SitePolicy {
    /// What a worker started without `--policy` enforces: every table aggregates-only.
    fn default() -> Self {
        Self {
            source: "built-in default (no --policy)".into(),
            defaults: TableRules {
                egress: Egress::Aggregates,
                min_group_rows: DEFAULT_MIN_GROUP_ROWS,
                small_groups: SmallGroups::Refuse,
                never_leave: BTreeSet::new(),
                row_keys: BTreeSet::new(),
                bounds: BTreeMap::new(),
                noise: None,
                models: None,
            },
            tables: BTreeMap::new(),
        }
    }
}

/// A policy file that cannot be used; names the file and the key.
#[derive(Debug, thiserror::Error)]
#[error("site policy {path}: {message}")]
pub struct PolicyFileError {
    pub path: String,
    pub message: String,
}

impl SitePolicy {
    /// The rules of `table` (its own section, or the defaults).
    pub fn table(&self, table: &str) -> &TableRules {
        self.tables.get(table).unwrap_or(&self.defaults)
    }

    pub fn load(path: &Path) -> Result<Self, PolicyFileError> {
        let text = std::fs::read_to_string(path).map_err(|e| PolicyFileError {
            path: path.display().to_string(),
            message: format!("cannot read it: {e}"),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, source: &str) -> Result<Self, PolicyFileError> {
        let error = |message: String| PolicyFileError {
            path: source.to_string(),
            message,
        };
        let file: PolicyFile = toml::from_str(text).map_err(|e| error(e.to_string()))?;
        let base = Self::default().defaults;
        let defaults = file
            .defaults
            .unwrap_or_default()
            .over(&base)
            .map_err(|m| error(format!("[defaults] {m}")))?;
        let mut tables = BTreeMap::new();
        for (name, section) in file.tables {
            if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
                return Err(error(format!("[tables.{name}] is not a table name")));
            }
            let rules = section
                .over(&defaults)
                .map_err(|m| error(format!("[tables.{name}] {m}")))?;
            tables.insert(name, rules);
        }
        Ok(Self {
            source: source.to_string(),
            defaults,
            tables,
        })
    }
}

/// The file as written: every key optional, unknown keys refused (a misspelt rule must not
/// silently fall back to something looser).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    defaults: Option<RulesFile>,
    #[serde(default)]
    tables: BTreeMap<String, RulesFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    egress: Option<Egress>,
    min_group_rows: Option<u64>,
    small_groups: Option<SmallGroups>,
    never_leave: Option<Vec<String>>,
    row_keys: Option<Vec<String>>,
    bounds: Option<BTreeMap<String, [f64; 2]>>,
    noise: Option<NoiseFile>,
    models: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoiseFile {
    epsilon_per_statement: f64,
    epsilon_budget: f64,
    budget_window: String,
}

impl RulesFile {
    /// These keys over `base` (the defaults, or the built-in rules).
    fn over(self, base: &TableRules) -> Result<TableRules, String> {
        let min_group_rows = self.min_group_rows.unwrap_or(base.min_group_rows);
        if min_group_rows == 0 {
            return Err("min_group_rows must be at least 1".into());
        }
        let mut bounds = base.bounds.clone();
        for (column, [low, high]) in self.bounds.unwrap_or_default() {
            if !(low.is_finite() && high.is_finite() && low < high) {
                return Err(format!(
                    "bounds.{column} must be [low, high] with finite low < high, not [{low}, {high}]"
                ));
            }
            bounds.insert(column, (low, high));
        }
        let noise = match self.noise {
            None => base.noise.clone(),
            Some(noise) => Some(noise.check()?),
        };
        let models = self.models.or_else(|| base.models.clone());
        Ok(TableRules {
            egress: self.egress.unwrap_or(base.egress),
            min_group_rows,
            small_groups: self.small_groups.unwrap_or(base.small_groups),
            never_leave: self
                .never_leave
                .map(|c| c.into_iter().collect())
                .unwrap_or_else(|| base.never_leave.clone()),
            row_keys: self
                .row_keys
                .map(|c| c.into_iter().collect())
                .unwrap_or_else(|| base.row_keys.clone()),
            bounds,
            noise,
            models,
        })
    }
}

impl NoiseFile {
    fn check(self) -> Result<Noise, String> {
        let per = self.epsilon_per_statement;
        let budget = self.epsilon_budget;
        if !(per.is_finite() && per > 0.0) {
            return Err(format!(
                "noise.epsilon_per_statement must be positive, not {per}"
            ));
        }
        if !(budget.is_finite() && budget >= per) {
            return Err(format!(
                "noise.epsilon_budget ({budget}) must be at least epsilon_per_statement ({per})"
            ));
        }
        let window = humantime::parse_duration(self.budget_window.trim()).map_err(|e| {
            format!(
                "noise.budget_window '{}' is not a duration such as 1d or 12h: {e}",
                self.budget_window
            )
        })?;
        if window < Duration::from_secs(1) {
            return Err("noise.budget_window must be at least 1s".into());
        }
        Ok(Noise {
            epsilon_per_statement: per,
            epsilon_budget: budget,
            budget_window: window,
        })
    }
}

mod window_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[defaults]
egress = "aggregates"
min_group_rows = 10
small_groups = "refuse"

[tables.visits]
egress = "aggregates"
never_leave = ["patient_id", "name"]
bounds = { age = [0, 120], cost = [0, 100000] }
noise = { epsilon_per_statement = 0.5, epsilon_budget = 20.0, budget_window = "1d" }
models = ["readmission", "visit_cost@v3"]

[tables.lineitem]
egress = "rows"
"#;

    #[test]
    fn the_documented_example_reads() {
        let policy = SitePolicy::parse(EXAMPLE, "example.toml").unwrap();
        let visits = policy.table("visits");
        assert_eq!(visits.egress, Egress::Aggregates);
        assert!(visits.never_leave.contains("patient_id"));
        assert_eq!(visits.bounds["age"], (0.0, 120.0));
        let noise = visits.noise.as_ref().unwrap();
        assert_eq!(noise.budget_window, Duration::from_secs(86_400));
        assert_eq!(policy.table("lineitem").egress, Egress::Rows);
        // A table the file does not name gets the defaults.
        assert_eq!(policy.table("other").egress, Egress::Aggregates);
        assert_eq!(policy.table("other").min_group_rows, 10);
    }

    #[test]
    fn no_file_means_aggregates_only() {
        let policy = SitePolicy::default();
        assert_eq!(policy.table("anything").egress, Egress::Aggregates);
        assert_eq!(policy.table("anything").small_groups, SmallGroups::Refuse);
    }

    #[test]
    fn a_misspelt_or_loose_rule_is_refused_with_its_key() {
        let cases = [
            ("[defaults]\negres = \"rows\"", "egres"),
            ("[defaults]\negress = \"everything\"", "everything"),
            ("[defaults]\nmin_group_rows = 0", "min_group_rows"),
            ("[tables.t]\nbounds = { a = [5, 1] }", "bounds.a"),
            (
                "[tables.t]\nnoise = { epsilon_per_statement = 2.0, epsilon_budget = 1.0, budget_window = \"1d\" }",
                "epsilon_budget",
            ),
            (
                "[tables.t]\nnoise = { epsilon_per_statement = 1.0, epsilon_budget = 1.0, budget_window = \"soon\" }",
                "budget_window",
            ),
        ];
        for (text, key) in cases {
            let err = SitePolicy::parse(text, "p.toml").unwrap_err().to_string();
            assert!(err.contains(key) && err.contains("p.toml"), "{text}: {err}");
        }
    }

    #[test]
    fn model_allow_lists_match_names_versions_and_hashes() {
        let hash = "a".repeat(64);
        let v3 = "c".repeat(64);
        let registry = |name: &str| (name == "cost@v3").then(|| "c".repeat(64));
        let mut rules = SitePolicy::default().defaults;
        assert!(rules.allows_model("anything", None, &registry));
        rules.models = Some(vec![
            "readmission".into(),
            "cost@v3".into(),
            format!("sha256:{hash}"),
        ]);
        assert!(rules.allows_model("readmission", None, &registry));
        assert!(rules.allows_model("readmission@v7", None, &registry));
        assert!(rules.allows_model("cost@v3", None, &registry));
        // `cost` resolved to v3's bytes is v3; any other bytes are not.
        assert!(rules.allows_model("cost", Some(&v3), &registry));
        assert!(!rules.allows_model("cost", Some(&"d".repeat(64)), &registry));
        assert!(rules.allows_model("other", Some(&hash), &registry));
        assert!(!rules.allows_model("identity", Some(&"b".repeat(64)), &registry));
    }
}
