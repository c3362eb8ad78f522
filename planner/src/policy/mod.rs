//! What leaves a site: the site's own rules ([`SitePolicy`]), the check every plan fragment
//! passes on the worker before it reads a byte ([`enforce`]), and the guard that checks
//! each released group's size as it is produced ([`GroupGuardExec`]).
//!
//! The check runs where the data is and never takes the coordinator's word: the
//! coordinator only previews the same check with the policy a site published, for
//! `EXPLAIN`.

mod check;
mod guard;
mod lineage;
mod refusal;
mod rules;

pub use check::{FragmentDecision, ListedModels, ModelIdentity, enforce};
pub use guard::{GroupGuardExec, GroupRule, NoisePlan};
pub use lineage::{Source, Via};
pub use refusal::{REFUSES, Refusal, is_refusal_message, refusal_text};
pub use rules::{
    DEFAULT_MIN_GROUP_ROWS, Egress, Noise, PolicyFileError, SitePolicy, SmallGroups, TableRules,
};
