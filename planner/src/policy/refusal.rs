//! A site's refusal: what it says, and how a coordinator that receives it as text (the
//! form datafusion-distributed sends errors in) recognises it.

use datafusion::error::DataFusionError;

/// A refusal: the site, the table, what would have left and the policy key that stops it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("site '{site}' refuses: table '{table}' {rule} (policy {key}); {detail}")]
pub struct Refusal {
    pub site: String,
    pub table: String,
    /// What the table's rule is, e.g. "is aggregates-only".
    pub rule: String,
    /// What in the statement breaks it.
    pub detail: String,
    /// The policy key, e.g. `egress`, `never_leave`, `min_group_rows`, `models`.
    pub key: String,
}

impl From<Refusal> for DataFusionError {
    fn from(refusal: Refusal) -> Self {
        DataFusionError::External(Box::new(refusal))
    }
}

/// Text every refusal's message starts with after the site's name: what a coordinator
/// receiving it as text over the network recognises (see [`is_refusal_message`]).
pub const REFUSES: &str = "' refuses: table '";

/// Whether an error message (as it crosses the network, text only) is a site's refusal.
pub fn is_refusal_message(message: &str) -> bool {
    refusal_text(message).is_some()
}

/// The refusal itself in an error message that wraps it (errors gather prefixes such as
/// `External error: ` as they cross processes): from its last `site '...' refuses` on.
pub fn refusal_text(message: &str) -> Option<&str> {
    let at = message.rfind(REFUSES)?;
    let start = message[..at].rfind("site '")?;
    let text = &message[start..];
    text.contains("(policy ").then_some(text)
}
