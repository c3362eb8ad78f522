//! What leaves a site: the site's own rules ([`SitePolicy`]), the check every plan fragment
//! passes on the worker before it reads a byte ([`enforce`]), and the guard that checks
//! each released group's size as it is produced ([`GroupGuardExec`]).
//!
//! The check runs where the data is and never takes the coordinator's word: the
//! coordinator only previews the same check with the policy a site published, for
//! `EXPLAIN`.

mod check;
mod guard;
mod rules;

pub use check::{
    FragmentDecision, ListedModels, ModelIdentity, REFUSES, Refusal, Source, Via, enforce,
    is_refusal_message, refusal_text,
};
pub use guard::{GroupGuardExec, GroupRule, NoisePlan};
pub use rules::{
    DEFAULT_MIN_GROUP_ROWS, Egress, Noise, PolicyFileError, SitePolicy, SmallGroups, TableRules,
};
