//! `CREATE MODEL name [OPTIONS (key = value, ...)] AS TRAIN kind PREDICTING label
//! FROM (query)`: parsed here, before DataFusion sees the SQL (DataFusion has no such
//! statement). Option values are numbers, strings, booleans, or `[v1, v2, ...]` lists, which
//! make a hyper-parameter search.

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

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

const USAGE: &str = "CREATE MODEL name [OPTIONS (key = value, ...)] AS TRAIN linear|logistic|mlp \
                     PREDICTING label FROM (SELECT features..., label FROM ...)";

/// Whether `sql` is a `CREATE MODEL` statement (then [`parse`] says whether it is a good one).
pub fn is_create_model(sql: &str) -> bool {
    let mut words = sql.split_whitespace();
    matches!((words.next(), words.next()), (Some(a), Some(b))
        if a.eq_ignore_ascii_case("CREATE") && b.eq_ignore_ascii_case("MODEL"))
}

/// Parses a `CREATE MODEL` statement; errors say what was expected where.
pub fn parse(sql: &str) -> Result<CreateModel, String> {
    let tokens = Tokenizer::new(&GenericDialect {}, sql.trim().trim_end_matches(';'))
        .tokenize()
        .map_err(|e| format!("CREATE MODEL: {e}"))?;
    let mut p = Parser {
        tokens: tokens
            .into_iter()
            .filter(|t| !matches!(t, Token::Whitespace(_)))
            .collect(),
        at: 0,
    };
    p.keyword("CREATE")?;
    p.keyword("MODEL")?;
    let name = p.identifier("the model name")?;
    let mut options = Vec::new();
    if p.peek_keyword("OPTIONS") {
        p.at += 1;
        p.expect(&Token::LParen, "'(' after OPTIONS")?;
        loop {
            let key = p.identifier("an option name")?.to_ascii_lowercase();
            p.expect(&Token::Eq, &format!("'=' after option '{key}'"))?;
            let value = p.value(&key)?;
            if options.iter().any(|(k, _)| k == &key) {
                return Err(format!("CREATE MODEL: option '{key}' is given twice"));
            }
            options.push((key, value));
            match p.next() {
                Some(Token::Comma) => continue,
                Some(Token::RParen) => break,
                other => return Err(p.unexpected(other, "',' or ')' in OPTIONS")),
            }
        }
    }
    p.keyword("AS")?;
    p.keyword("TRAIN")?;
    let kind = p
        .identifier("the model kind (linear, logistic, mlp)")?
        .to_ascii_lowercase();
    p.keyword("PREDICTING")?;
    let label = p.identifier("the label column")?;
    p.keyword("FROM")?;
    p.expect(&Token::LParen, "'(' before the training query")?;
    let rest = &p.tokens[p.at..];
    if rest.last() != Some(&Token::RParen) || rest.len() < 2 {
        return Err(format!(
            "CREATE MODEL: the training query must be in parentheses at the end: {USAGE}"
        ));
    }
    let query: String = rest[..rest.len() - 1]
        .iter()
        .map(|t| format!("{t} "))
        .collect();
    Ok(CreateModel {
        name,
        kind,
        label,
        query: query.trim().to_string(),
        options,
    })
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn unexpected(&self, found: Option<Token>, wanted: &str) -> String {
        match found {
            Some(t) => format!("CREATE MODEL: expected {wanted}, found '{t}' (usage: {USAGE})"),
            None => format!("CREATE MODEL: expected {wanted}, found the end (usage: {USAGE})"),
        }
    }

    fn peek_keyword(&self, word: &str) -> bool {
        matches!(self.tokens.get(self.at), Some(Token::Word(w)) if w.value.eq_ignore_ascii_case(word) && w.quote_style.is_none())
    }

    fn keyword(&mut self, word: &str) -> Result<(), String> {
        if self.peek_keyword(word) {
            self.at += 1;
            Ok(())
        } else {
            let found = self.tokens.get(self.at).cloned();
            Err(self.unexpected(found, word))
        }
    }

    fn expect(&mut self, token: &Token, wanted: &str) -> Result<(), String> {
        match self.next() {
            Some(t) if &t == token => Ok(()),
            other => Err(self.unexpected(other, wanted)),
        }
    }

    fn identifier(&mut self, wanted: &str) -> Result<String, String> {
        match self.next() {
            Some(Token::Word(w)) => Ok(w.value),
            other => Err(self.unexpected(other, wanted)),
        }
    }

    fn value(&mut self, key: &str) -> Result<OptionValue, String> {
        let wanted = format!("a value for option '{key}'");
        match self.next() {
            Some(Token::Number(n, _)) => n
                .parse()
                .map(OptionValue::Number)
                .map_err(|_| format!("CREATE MODEL: option '{key}': '{n}' is not a number")),
            Some(Token::Minus) => match self.value(key)? {
                OptionValue::Number(n) => Ok(OptionValue::Number(-n)),
                other => Err(format!(
                    "CREATE MODEL: option '{key}': '-{other}' is not a number"
                )),
            },
            Some(Token::SingleQuotedString(s)) => Ok(OptionValue::Text(s)),
            Some(Token::Word(w)) => Ok(OptionValue::Text(w.value.to_ascii_lowercase())),
            Some(Token::LBracket) => {
                let mut items = Vec::new();
                loop {
                    items.push(self.value(key)?);
                    match self.next() {
                        Some(Token::Comma) => continue,
                        Some(Token::RBracket) => break,
                        other => return Err(self.unexpected(other, "',' or ']' in a list")),
                    }
                }
                Ok(OptionValue::List(items))
            }
            other => Err(self.unexpected(other, &wanted)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_statement_parses() -> Result<(), String> {
        let sql = "create model churn OPTIONS (rounds = 30, learning_rate = [0.1, 0.3], \
                   search = 'grid', l2 = -0) AS TRAIN Logistic PREDICTING is_churn \
                   FROM (SELECT a, \"B\", is_churn FROM events WHERE x = 'y' AND (a > 1));";
        assert!(is_create_model(sql));
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
        assert!(
            m.query
                .starts_with("SELECT a , \"B\" , is_churn FROM events"),
            "{}",
            m.query
        );
        assert!(m.query.ends_with("( a > 1 )"), "{}", m.query);
        Ok(())
    }

    #[test]
    fn mistakes_name_what_was_expected() {
        let err = |sql: &str| parse(sql).unwrap_err();
        assert!(
            err("CREATE MODEL m AS TRAIN linear FROM (SELECT 1)").contains("expected PREDICTING")
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
        assert!(!is_create_model("SELECT 'CREATE MODEL'"));
    }
}
