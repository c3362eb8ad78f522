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

/// Numbers `?` placeholders (the DB-API "qmark" style ADBC clients use) as `$1`, `$2`, ...,
/// which DataFusion binds by position. Placeholders inside string literals or comments are
/// left alone, since the SQL tokenizer tells them apart.
pub fn number_placeholders(sql: &str) -> Cow<'_, str> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    if !sql.contains('?') {
        return Cow::Borrowed(sql);
    }
    // Unparseable SQL is passed on as it is, for the planner to report.
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else {
        return Cow::Borrowed(sql);
    };
    if !tokens
        .iter()
        .any(|t| matches!(t, Token::Placeholder(p) if p == "?"))
    {
        return Cow::Borrowed(sql);
    }
    let mut next = 0;
    let rewritten = tokens
        .iter()
        .map(|token| match token {
            Token::Placeholder(p) if p == "?" => {
                next += 1;
                format!("${next}")
            }
            other => other.to_string(),
        })
        .collect();
    Cow::Owned(rewritten)
}

/// A client's statement as DataFusion plans it: shoal's statements rewritten, `?`
/// placeholders numbered.
pub fn to_datafusion_sql(sql: &str) -> String {
    number_placeholders(&rewrite(sql)).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qmark_placeholders_are_numbered_outside_literals() {
        assert_eq!(
            number_placeholders("SELECT a FROM t WHERE a > ? AND b = '?' AND c < ?"),
            "SELECT a FROM t WHERE a > $1 AND b = '?' AND c < $2"
        );
        assert_eq!(number_placeholders("SELECT $1"), "SELECT $1");
    }

    #[test]
    fn show_models_is_rewritten_in_any_case() {
        assert_eq!(rewrite(" show  Models ;"), SHOW_MODELS_SQL);
        assert_eq!(rewrite("SELECT 1"), "SELECT 1");
        assert_eq!(rewrite("SHOW MODELS LIKE x"), "SHOW MODELS LIKE x");
    }
}
