//! Statements shoal adds to DataFusion's SQL, rewritten to plain SQL before planning.

use std::borrow::Cow;

/// `SHOW MODELS` lists the model registry.
pub const SHOW_MODELS_SQL: &str =
    "SELECT name, hash, size_bytes, inputs, outputs FROM shoal.models ORDER BY name";

/// Rewrites shoal's own statements; other SQL passes through unchanged.
pub fn rewrite(sql: &str) -> Cow<'_, str> {
    let words: Vec<String> = sql
        .trim()
        .trim_end_matches(';')
        .split_whitespace()
        .map(str::to_ascii_uppercase)
        .collect();
    match words
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["SHOW", "MODELS"] => Cow::Borrowed(SHOW_MODELS_SQL),
        _ => Cow::Borrowed(sql),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_models_is_rewritten_in_any_case() {
        assert_eq!(rewrite(" show  Models ;"), SHOW_MODELS_SQL);
        assert_eq!(rewrite("SELECT 1"), "SELECT 1");
        assert_eq!(rewrite("SHOW MODELS LIKE x"), "SHOW MODELS LIKE x");
    }
}
