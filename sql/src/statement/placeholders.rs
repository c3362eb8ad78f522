//! `?` placeholders (the DB-API "qmark" style ADBC clients use) numbered for DataFusion.

use std::borrow::Cow;

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
}
