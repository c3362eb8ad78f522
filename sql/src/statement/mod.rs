//! Every statement a client sends is parsed once, here, into a [`ShoalStatement`]: shoal's
//! own statements (`CREATE MODEL`, `SHOW MODELS`, shoal's `EXPLAIN` of stages) and, for
//! everything else, DataFusion's parsed statement, which is planned as it is (never parsed
//! a second time). The coordinator, `describe` and the sqllogictest runner dispatch on it
//! with one `match`.
//!
//! ```text
//!  SQL text ─► placeholders (? -> $n) ─► DFParser ─┬─ EXPLAIN <stmt>  ─► Explain(stmt)
//!                                                  ├─ SHOW MODELS     ─► ShowModels
//!                                                  ├─ CREATE MODEL .. ─► CreateModel
//!                                                  └─ anything else   ─► Sql(DataFusion's)
//! ```
//! Parse errors say what was expected and point at the line and column of the token found.

pub mod create_model;
mod limits;
mod placeholders;

pub use limits::{Caller, INTERNAL_FUNCTION_PREFIX, StatementLimits};
pub use placeholders::number_placeholders;

use crate::error::{Error, Result};
use create_model::CreateModel;
use datafusion::prelude::{DataFrame, SQLOptions, SessionContext};
use datafusion::sql::parser::{DFParser, DFParserBuilder, Statement};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Location, Token};

/// `SHOW MODELS` lists the model registry.
pub const SHOW_MODELS_SQL: &str =
    "SELECT name, hash, size_bytes, inputs, outputs FROM shoal.models ORDER BY name";

/// One statement, as shoal dispatches it.
#[derive(Debug, Clone)]
pub enum ShoalStatement {
    /// Any statement DataFusion plans, already parsed.
    Sql(Box<Statement>),
    /// `SHOW MODELS`: the registry as a table.
    ShowModels,
    /// `CREATE MODEL ... AS TRAIN ...`.
    CreateModel(Box<CreateModel>),
    /// `EXPLAIN <statement>` (not ANALYZE, VERBOSE or FORMAT, which DataFusion answers):
    /// where each stage of the statement runs.
    Explain(Box<ShoalStatement>),
}

impl ShoalStatement {
    /// Parses one client statement (a trailing `;` allowed) within the default limits.
    pub fn parse(sql: &str) -> Result<Self> {
        Self::parse_with_limits(sql, &StatementLimits::default())
    }

    /// Parses one client statement within `limits`: over them, or calling an internal
    /// function, it is an error naming the limit or the function, never a stack overflow.
    pub fn parse_with_limits(sql: &str, limits: &StatementLimits) -> Result<Self> {
        Self::parse_checked(sql, limits, Caller::Client)
    }

    /// Parses a statement the coordinator wrote itself (a training pass), which may call
    /// the internal training functions.
    pub fn parse_internal(sql: &str) -> Result<Self> {
        Self::parse_checked(sql, &StatementLimits::default(), Caller::Internal)
    }

    fn parse_checked(sql: &str, limits: &StatementLimits, caller: Caller) -> Result<Self> {
        limits.check_text(sql)?;
        let sql = number_placeholders(sql);
        let mut parser = limits.parser(&sql)?;
        let statement = parse_one(&mut parser, &sql).map_err(|e| limits.name_recursion(e))?;
        let mut separated = false;
        while parser.parser.consume_token(&Token::SemiColon) {
            separated = true;
        }
        let next = parser.parser.peek_token();
        if next.token != Token::EOF {
            let hint = if separated {
                " (send one statement at a time)"
            } else {
                ""
            };
            return Err(Error::Statement {
                message: format!(
                    "expected the end of the statement, found '{}'{hint}",
                    next.token
                ),
                line: next.span.start.line,
                column: next.span.start.column,
            });
        }
        statement.check_tree(limits, caller)?;
        Ok(statement)
    }

    /// Checks the parsed statement's nesting and function calls (see [`limits`]).
    fn check_tree(&self, limits: &StatementLimits, caller: Caller) -> Result<()> {
        match self {
            ShoalStatement::Sql(statement) => limits.check_tree(statement, caller),
            ShoalStatement::ShowModels => Ok(()),
            ShoalStatement::Explain(inner) => inner.check_tree(limits, caller),
            ShoalStatement::CreateModel(create) => {
                let query = limits.parser(&create.query)?.parse_statement()?;
                limits.check_tree(&query, caller)
            }
        }
    }

    /// The statement's name for messages: `CREATE MODEL`, `SHOW MODELS`, `EXPLAIN`, `SQL`.
    pub fn kind(&self) -> &'static str {
        match self {
            ShoalStatement::Sql(_) => "SQL",
            ShoalStatement::ShowModels => "SHOW MODELS",
            ShoalStatement::CreateModel(_) => "CREATE MODEL",
            ShoalStatement::Explain(_) => "EXPLAIN",
        }
    }

    /// A statement DataFusion plans as a query (`Sql`, `SHOW MODELS`) as a DataFrame,
    /// checked against `options` (what clients may run). `None` for shoal's own statements.
    pub async fn dataframe(
        &self,
        ctx: &SessionContext,
        options: SQLOptions,
    ) -> Result<Option<DataFrame>> {
        let statement = match self {
            ShoalStatement::Sql(statement) => statement.as_ref().clone(),
            ShoalStatement::ShowModels => DFParserBuilder::new(SHOW_MODELS_SQL)
                .build()?
                .parse_statement()?,
            ShoalStatement::CreateModel(_) | ShoalStatement::Explain(_) => return Ok(None),
        };
        let plan = ctx.state().statement_to_plan(statement).await?;
        options.verify_plan(&plan)?;
        Ok(Some(ctx.execute_logical_plan(plan).await?))
    }
}

impl CreateModel {
    /// Parses `sql`, which must be one `CREATE MODEL` statement.
    pub fn parse(sql: &str) -> Result<Self> {
        match ShoalStatement::parse(sql)? {
            ShoalStatement::CreateModel(statement) => Ok(*statement),
            other => Err(Error::Statement {
                message: format!("expected CREATE MODEL, found {}", other.kind()),
                line: 1,
                column: 1,
            }),
        }
    }
}

/// What a remote client may run: queries only (DDL, DML and `SET` are refused). The
/// coordinator plans every client statement with these options, and the one-process
/// reference engine of the tests does too, so both refuse the same statements.
pub fn client_options() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// One statement at the parser's position.
fn parse_one(parser: &mut DFParser, sql: &str) -> Result<ShoalStatement> {
    let word = |n: usize, expected: &str| {
        matches!(&parser.parser.peek_nth_token(n).token,
            Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(expected))
    };
    if word(0, "EXPLAIN") && !explained_by_datafusion(parser) {
        parser.parser.next_token();
        let inner = parser.parser.peek_token();
        let explained = parse_one(parser, sql)?;
        if let ShoalStatement::Explain(_) = explained {
            return Err(Error::Statement {
                message: "EXPLAIN cannot be explained again".into(),
                line: inner.span.start.line,
                column: inner.span.start.column,
            });
        }
        return Ok(ShoalStatement::Explain(Box::new(explained)));
    }
    if word(0, "SHOW") && word(1, "MODELS") {
        parser.parser.next_token();
        parser.parser.next_token();
        return Ok(ShoalStatement::ShowModels);
    }
    if word(0, "CREATE") && word(1, "MODEL") {
        let statement = create_model::parse(&mut parser.parser, sql)?;
        return Ok(ShoalStatement::CreateModel(Box::new(statement)));
    }
    Ok(ShoalStatement::Sql(Box::new(parser.parse_statement()?)))
}

/// `EXPLAIN ANALYZE`, `EXPLAIN VERBOSE`, `EXPLAIN FORMAT ...` and `EXPLAIN (options)` are
/// DataFusion's to answer.
fn explained_by_datafusion(parser: &DFParser) -> bool {
    match parser.parser.peek_nth_token(1).token {
        Token::Word(w) => matches!(
            w.keyword,
            Keyword::ANALYZE | Keyword::VERBOSE | Keyword::FORMAT
        ),
        Token::LParen => true,
        _ => false,
    }
}

/// Byte offset of `location` (1-based line and character column) in `text`.
fn offset_of(text: &str, location: Location) -> usize {
    let mut line = 1u64;
    let mut column = 1u64;
    for (offset, c) in text.char_indices() {
        if line == location.line && column == location.column {
            return offset;
        }
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    text.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sql: &str) -> ShoalStatement {
        ShoalStatement::parse(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    #[test]
    fn each_statement_kind_is_recognised_in_any_case() {
        assert!(matches!(
            parse(" show  Models ;"),
            ShoalStatement::ShowModels
        ));
        assert!(matches!(
            parse("SELECT 'CREATE MODEL'"),
            ShoalStatement::Sql(_)
        ));
        assert!(matches!(parse("SHOW TABLES"), ShoalStatement::Sql(_)));
        let ShoalStatement::Explain(inner) = parse("explain SELECT 1") else {
            panic!("an EXPLAIN");
        };
        assert!(matches!(*inner, ShoalStatement::Sql(_)));
        assert!(matches!(
            parse("EXPLAIN ANALYZE SELECT 1"),
            ShoalStatement::Sql(_)
        ));
        assert!(matches!(
            parse("EXPLAIN VERBOSE SELECT 1"),
            ShoalStatement::Sql(_)
        ));
        let explain_model =
            parse("EXPLAIN CREATE MODEL m AS TRAIN linear PREDICTING y FROM (SELECT a, y FROM t)");
        let ShoalStatement::Explain(inner) = explain_model else {
            panic!("an EXPLAIN");
        };
        assert!(matches!(*inner, ShoalStatement::CreateModel(_)));
        assert!(matches!(
            parse("EXPLAIN SHOW MODELS"),
            ShoalStatement::Explain(_)
        ));
    }

    #[test]
    fn errors_point_at_the_token() {
        let err = ShoalStatement::parse("SELECT 1; SELECT 2")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("one statement at a time") && err.contains("column 11"),
            "{err}"
        );
        let err = ShoalStatement::parse("SHOW MODELS LIKE x")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("found 'LIKE'") && err.contains("column 13"),
            "{err}"
        );
    }

    #[test]
    fn placeholders_are_numbered_before_parsing() {
        let ShoalStatement::Sql(statement) = parse("SELECT a FROM t WHERE a > ? AND b = '?'")
        else {
            panic!("SQL");
        };
        assert!(
            statement.to_string().contains("a > $1 AND b = '?'"),
            "{statement}"
        );
    }

    #[test]
    fn offsets_count_characters_across_lines() {
        let text = "ab\ncdé f";
        assert_eq!(
            &text[offset_of(text, Location { line: 2, column: 5 })..],
            "f"
        );
    }

    #[test]
    fn a_statement_nested_past_the_limit_is_an_error() {
        let deep = format!("SELECT {}1{}", "(".repeat(500), ")".repeat(500));
        let err = ShoalStatement::parse(&deep).unwrap_err().to_string();
        assert!(err.contains("sql_parser.recursion_limit"), "{err}");
    }
}
