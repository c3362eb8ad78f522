//! `CREATE MODEL name [OPTIONS (key = value, ...)] AS TRAIN kind PREDICTING label
//! FROM (query)`, parsed with sqlparser's parser (DataFusion has no such statement). Option
//! values are numbers, strings, words, or `[v1, v2, ...]` lists, which make a
//! hyper-parameter search. The training query is checked by the same parser and kept as
//! written.

use super::offset_of;
use crate::error::{Error, Result};
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};

#[derive(Debug, Clone, PartialEq)]
pub enum OptionValue {
    Number(f64),
    Text(String),
    List(Vec<OptionValue>),
}

impl std::fmt::Display for OptionValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OptionValue::Number(n) => write!(f, "{n}"),
            OptionValue::Text(s) => write!(f, "'{s}'"),
            OptionValue::List(items) => {
                let items: Vec<String> = items.iter().map(|i| i.to_string()).collect();
                write!(f, "[{}]", items.join(", "))
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CreateModel {
    pub name: String,
    /// `linear`, `logistic` or `mlp` (checked by the training options).
    pub kind: String,
    pub label: String,
    /// The rows to train on: the query inside `FROM ( ... )`.
    pub query: String,
    /// In the order written.
    pub options: Vec<(String, OptionValue)>,
}

/// How the statement is written, for parse errors.
pub const USAGE: &str = "CREATE MODEL name [OPTIONS (key = value, ...)] AS TRAIN linear|logistic|mlp \
                     PREDICTING label FROM (SELECT features..., label FROM ...)";

/// Parses the statement at the parser's position (which is at `CREATE`); `sql` is the text
/// the parser reads, from which the training query is cut.
pub(super) fn parse(p: &mut Parser, sql: &str) -> Result<CreateModel> {
    keyword(p, "CREATE")?;
    keyword(p, "MODEL")?;
    let name = identifier(p, "the model name")?;
    let mut options: Vec<(String, OptionValue)> = Vec::new();
    if peek_keyword(p, "OPTIONS") {
        p.next_token();
        expect(p, &Token::LParen, "'(' after OPTIONS")?;
        loop {
            let key_token = p.peek_token();
            let key = identifier(p, "an option name")?.to_ascii_lowercase();
            expect(p, &Token::Eq, &format!("'=' after option '{key}'"))?;
            let value = value(p, &key)?;
            if options.iter().any(|(k, _)| k == &key) {
                return Err(at(&key_token, format!("option '{key}' is given twice")));
            }
            options.push((key, value));
            let next = p.next_token();
            match next.token {
                Token::Comma => continue,
                Token::RParen => break,
                _ => return Err(unexpected(&next, "',' or ')' in OPTIONS")),
            }
        }
    }
    keyword(p, "AS")?;
    keyword(p, "TRAIN")?;
    let kind = identifier(p, "the model kind (linear, logistic, mlp)")?.to_ascii_lowercase();
    keyword(p, "PREDICTING")?;
    let label = identifier(p, "the label column")?;
    keyword(p, "FROM")?;
    expect(p, &Token::LParen, "'(' before the training query")?;
    let first = p.peek_token();
    p.parse_query().map_err(|e| Error::Statement {
        message: format!("CREATE MODEL: the training query: {e}"),
        line: first.span.start.line,
        column: first.span.start.column,
    })?;
    let close = p.peek_token();
    expect(p, &Token::RParen, "')' after the training query")?;
    let query = sql[offset_of(sql, first.span.start)..offset_of(sql, close.span.start)]
        .trim()
        .to_string();
    Ok(CreateModel {
        name,
        kind,
        label,
        query,
        options,
    })
}

fn at(token: &TokenWithSpan, message: String) -> Error {
    Error::Statement {
        message: format!("CREATE MODEL: {message}"),
        line: token.span.start.line,
        column: token.span.start.column,
    }
}

fn unexpected(found: &TokenWithSpan, wanted: &str) -> Error {
    let found_text = match &found.token {
        Token::EOF => "the end".to_string(),
        token => format!("'{token}'"),
    };
    at(
        found,
        format!("expected {wanted}, found {found_text} (usage: {USAGE})"),
    )
}

fn peek_keyword(p: &Parser, word: &str) -> bool {
    matches!(&p.peek_token_ref().token,
        Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

fn keyword(p: &mut Parser, word: &str) -> Result<()> {
    if peek_keyword(p, word) {
        p.next_token();
        Ok(())
    } else {
        Err(unexpected(&p.peek_token(), word))
    }
}

fn expect(p: &mut Parser, token: &Token, wanted: &str) -> Result<()> {
    let next = p.next_token();
    if &next.token == token {
        Ok(())
    } else {
        Err(unexpected(&next, wanted))
    }
}

fn identifier(p: &mut Parser, wanted: &str) -> Result<String> {
    let next = p.next_token();
    match next.token {
        Token::Word(w) => Ok(w.value),
        _ => Err(unexpected(&next, wanted)),
    }
}

/// An option's value: one scalar, or a list of scalars (a searched option). Lists do not
/// nest and a sign applies to a number only, so nothing here recurses on client input.
fn value(p: &mut Parser, key: &str) -> Result<OptionValue> {
    if p.peek_token_ref().token != Token::LBracket {
        return scalar(p, key);
    }
    p.next_token();
    let mut items = Vec::new();
    loop {
        items.push(scalar(p, key)?);
        let next = p.next_token();
        match next.token {
            Token::Comma => continue,
            Token::RBracket => break,
            _ => return Err(unexpected(&next, "',' or ']' in a list")),
        }
    }
    Ok(OptionValue::List(items))
}

fn scalar(p: &mut Parser, key: &str) -> Result<OptionValue> {
    let next = p.next_token();
    let number = |token: &TokenWithSpan, text: &str, sign: f64| {
        text.parse::<f64>()
            .map(|n| OptionValue::Number(sign * n))
            .map_err(|_| at(token, format!("option '{key}': '{text}' is not a number")))
    };
    match &next.token {
        Token::Number(n, _) => number(&next, n, 1.0),
        Token::Minus => {
            let after = p.next_token();
            match &after.token {
                Token::Number(n, _) => number(&after, n, -1.0),
                _ => Err(unexpected(
                    &after,
                    &format!("a number after '-' in option '{key}'"),
                )),
            }
        }
        Token::SingleQuotedString(s) => Ok(OptionValue::Text(s.clone())),
        Token::Word(w) => Ok(OptionValue::Text(w.value.to_ascii_lowercase())),
        _ => Err(unexpected(&next, &format!("a value for option '{key}'"))),
    }
}

#[cfg(test)]
mod tests {
    use super::{CreateModel, OptionValue};
    use crate::statement::ShoalStatement;

    fn parse(sql: &str) -> Result<CreateModel, String> {
        match ShoalStatement::parse(sql).map_err(|e| e.to_string())? {
            ShoalStatement::CreateModel(statement) => Ok(*statement),
            other => Err(format!("not a CREATE MODEL: {other:?}")),
        }
    }

    #[test]
    fn a_full_statement_parses() -> Result<(), String> {
        let sql = "create model churn OPTIONS (rounds = 30, learning_rate = [0.1, 0.3], \
                   search = 'grid', l2 = -0) AS TRAIN Logistic PREDICTING is_churn \
                   FROM (SELECT a, \"B\", is_churn FROM events WHERE x = 'y' AND (a > 1));";
        let m = parse(sql)?;
        assert_eq!(
            (m.name.as_str(), m.kind.as_str(), m.label.as_str()),
            ("churn", "logistic", "is_churn")
        );
        assert_eq!(m.options[0], ("rounds".into(), OptionValue::Number(30.0)));
        assert_eq!(
            m.options[1].1,
            OptionValue::List(vec![OptionValue::Number(0.1), OptionValue::Number(0.3)])
        );
        assert_eq!(m.options[2].1, OptionValue::Text("grid".into()));
        // The training query as written.
        assert_eq!(
            m.query,
            "SELECT a, \"B\", is_churn FROM events WHERE x = 'y' AND (a > 1)"
        );
        Ok(())
    }

    #[test]
    fn mistakes_name_what_was_expected_and_where() {
        let err = |sql: &str| parse(sql).unwrap_err();
        let e = err("CREATE MODEL m AS TRAIN linear FROM (SELECT 1)");
        assert!(
            e.contains("expected PREDICTING") && e.contains("line 1, column 32"),
            "{e}"
        );
        assert!(
            err("CREATE MODEL m OPTIONS (rounds 3) AS TRAIN linear PREDICTING y FROM (SELECT 1)")
                .contains("'=' after option 'rounds'")
        );
        assert!(
            err("CREATE MODEL m AS TRAIN linear PREDICTING y FROM SELECT 1").contains("'(' before")
        );
        assert!(
            err(
                "CREATE MODEL m OPTIONS (a = 1, a = 2) AS TRAIN linear PREDICTING y FROM (SELECT 1)"
            )
            .contains("given twice")
        );
        // Nesting is refused at once, whatever its depth (no recursion on client input).
        let deep = format!(
            "CREATE MODEL m OPTIONS (l2 = {}0) AS TRAIN linear PREDICTING y FROM (SELECT 1)",
            "[".repeat(100_000)
        );
        assert!(err(&deep).contains("a value for option 'l2'"));
        let signs = format!(
            "CREATE MODEL m OPTIONS (l2 = {}1) AS TRAIN linear PREDICTING y FROM (SELECT 1)",
            "- ".repeat(100_000)
        );
        assert!(err(&signs).contains("a number after '-'"));
        let e = err("CREATE MODEL m AS TRAIN linear PREDICTING y FROM (SELEC 1)");
        assert!(
            e.contains("training query") && e.contains("column 51"),
            "{e}"
        );
    }
}
