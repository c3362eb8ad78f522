//! How big and how deep a statement may be, checked before anything plans it.
//!
//! DataFusion and shoal walk expressions recursively (naming an expression, simplifying it,
//! encoding it for a worker, dropping it), and not every walk is protected against a deep
//! tree: a `1 + 1 + ... + 1` of a few hundred terms used to overflow a 2 MiB thread stack
//! and abort the coordinator. The parser's own recursion limit does not help there, because
//! it parses a chain of one operator in a loop and still builds a tree as deep as the chain.
//!
//! So a statement is checked in three steps, each bounded by the one before it:
//! 1. its text is at most [`StatementLimits::max_bytes`];
//! 2. it has at most [`StatementLimits::max_tokens`] tokens (counted by the tokenizer, which
//!    does not recurse), which bounds the size of the tree the parser may build;
//! 3. after parsing, a visitor walks the tree, counting expression nesting (subqueries
//!    included) and stopping at [`StatementLimits::max_depth`], so the walk itself never
//!    goes deeper than the limit.
//!
//! The processes that plan and run statements give their threads a stack sized from these
//! limits ([`StatementLimits::thread_stack_bytes`]), so everything the limits allow fits.

use crate::error::{Error, Result};
use datafusion::error::DataFusionError;
use datafusion::sql::parser::{CopyToSource, DFParser, DFParserBuilder, Statement};
use datafusion::sql::sqlparser::ast::{Expr, Query, Visit, Visitor};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::Tokenizer;
use std::ops::ControlFlow;

/// The prefix of the functions only the coordinator may put in a plan (training aggregates).
pub const INTERNAL_FUNCTION_PREFIX: &str = "__shoal_";

/// Limits on one statement. Operators set them on the coordinator (`--max-statement-bytes`,
/// `--max-statement-tokens`, `--max-expression-depth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatementLimits {
    /// Bytes of SQL text.
    pub max_bytes: usize,
    /// Tokens (words, numbers, operators, punctuation).
    pub max_tokens: usize,
    /// Nesting of expressions and subqueries: `1 + 1 + 1` is 3 deep (a chain of one
    /// operator nests one level per term), `f(g(x))` is 3, `(SELECT (SELECT 1))` is 4.
    pub max_depth: usize,
    /// Nesting the parser itself allows (parentheses, subqueries): DataFusion's
    /// `sql_parser.recursion_limit`.
    pub parser_recursion: usize,
}

impl Default for StatementLimits {
    fn default() -> Self {
        Self {
            max_bytes: 1 << 20,
            max_tokens: 200_000,
            max_depth: 500,
            parser_recursion: 50,
        }
    }
}

/// Stack each level of expression nesting may take in the deepest unprotected walk
/// (measured: about 7 KiB a level in an unoptimised build, while DataFusion formats an
/// expression's name; 32 KiB leaves room for walks not measured).
const STACK_PER_LEVEL: usize = 32 << 10;
/// Stack each token may take when a tree is dropped or visited (a chain of one operator is
/// one level per two tokens; measured well under 1 KiB a level).
const STACK_PER_TOKEN: usize = 512;
/// What a thread needs besides the statement (the runtime, gRPC, DataFusion's operators).
const STACK_BASE: usize = 8 << 20;

impl StatementLimits {
    /// The stack a thread that plans or runs statements needs for the deepest statement these
    /// limits allow.
    pub fn thread_stack_bytes(&self) -> usize {
        STACK_BASE
            .saturating_add(self.max_depth.saturating_mul(STACK_PER_LEVEL))
            .saturating_add(self.max_tokens.saturating_mul(STACK_PER_TOKEN))
    }

    /// Refuses text over the byte or token limit, before it is parsed.
    pub fn check_text(&self, sql: &str) -> Result<()> {
        if sql.len() > self.max_bytes {
            return Err(too_large(format!(
                "the statement is {} bytes, over the limit of {} (max_statement_bytes)",
                sql.len(),
                self.max_bytes
            )));
        }
        let dialect = GenericDialect {};
        let tokens = Tokenizer::new(&dialect, sql)
            .tokenize()
            .map_err(|e| Error::Statement {
                message: e.message,
                line: e.location.line,
                column: e.location.column,
            })?;
        let counted = tokens
            .iter()
            .filter(|t| {
                !matches!(
                    t,
                    datafusion::sql::sqlparser::tokenizer::Token::Whitespace(_)
                )
            })
            .count();
        if counted > self.max_tokens {
            return Err(too_large(format!(
                "the statement has {counted} tokens, over the limit of {} (max_statement_tokens)",
                self.max_tokens
            )));
        }
        Ok(())
    }

    /// The parser's recursion error, as a limit error that names the limit.
    pub(super) fn name_recursion(&self, error: Error) -> Error {
        let recursion = |e: &ParserError| matches!(e, ParserError::RecursionLimitExceeded);
        match &error {
            Error::DataFusion(DataFusionError::SQL(e, _)) if recursion(e) => too_large(format!(
                "the statement nests parentheses or subqueries more than {} deep \
                 (sql_parser.recursion_limit)",
                self.parser_recursion
            )),
            _ => error,
        }
    }

    /// Checks one SQL expression (a pipeline's `filter`, feature or value) as a client's:
    /// its size, its nesting and its function calls.
    pub fn check_expression(&self, sql: &str) -> Result<()> {
        self.check_text(sql)?;
        let dialect = GenericDialect {};
        let expr = Parser::new(&dialect)
            .with_recursion_limit(self.parser_recursion)
            .try_with_sql(sql)
            .and_then(|mut parser| parser.parse_expr())
            .map_err(|e| {
                self.name_recursion(Error::DataFusion(DataFusionError::SQL(Box::new(e), None)))
            })?;
        self.walk(Caller::Client, |walk| expr.visit(walk))
    }

    /// Walks a parsed statement: refuses nesting past [`Self::max_depth`] and, for a client's
    /// statement, any call of an internal function.
    pub fn check_tree(&self, statement: &Statement, caller: Caller) -> Result<()> {
        match statement {
            Statement::Statement(inner) => self.walk(caller, |walk| inner.visit(walk)),
            Statement::Explain(explain) => self.check_tree(&explain.statement, caller),
            Statement::CopyTo(copy) => match &copy.source {
                CopyToSource::Query(query) => self.walk(caller, |walk| query.visit(walk)),
                CopyToSource::Relation(_) => Ok(()),
            },
            Statement::CreateExternalTable(_) | Statement::Reset(_) => Ok(()),
        }
    }

    /// One walk of a tree as `caller`'s, its first refusal as the error.
    fn walk(
        &self,
        caller: Caller,
        visit: impl FnOnce(&mut Walk) -> ControlFlow<Error>,
    ) -> Result<()> {
        let mut walk = Walk {
            limits: *self,
            caller,
            depth: 0,
        };
        match visit(&mut walk) {
            ControlFlow::Continue(()) => Ok(()),
            ControlFlow::Break(error) => Err(error),
        }
    }

    /// DataFusion's parser over `sql`, nesting at most [`Self::parser_recursion`] deep.
    pub(super) fn parser<'a>(&self, sql: &'a str) -> Result<DFParser<'a>> {
        Ok(DFParserBuilder::new(sql)
            .with_dialect(&GenericDialect {})
            .with_recursion_limit(self.parser_recursion)
            .build()?)
    }
}

/// Who wrote the statement: a client (internal functions refused) or the coordinator itself
/// (a training pass).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Client,
    Internal,
}

struct Walk {
    limits: StatementLimits,
    caller: Caller,
    depth: usize,
}

impl Walk {
    fn enter(&mut self) -> ControlFlow<Error> {
        self.depth += 1;
        if self.depth > self.limits.max_depth {
            return ControlFlow::Break(too_large(format!(
                "the statement nests expressions more than {} deep (max_expression_depth); \
                 a long chain of one operator nests one level per term: write a long OR of \
                 equalities as IN (...), a long sum as a sum over rows",
                self.limits.max_depth
            )));
        }
        ControlFlow::Continue(())
    }
}

impl Visitor for Walk {
    type Break = Error;

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<Error> {
        self.enter()?;
        if let (Expr::Function(function), Caller::Client) = (expr, self.caller) {
            let internal = function.name.0.iter().any(|part| {
                part.as_ident().is_some_and(|ident| {
                    ident
                        .value
                        .to_ascii_lowercase()
                        .starts_with(INTERNAL_FUNCTION_PREFIX)
                })
            });
            if internal {
                return ControlFlow::Break(Error::Internal {
                    name: function.name.to_string(),
                });
            }
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<Error> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, _query: &Query) -> ControlFlow<Error> {
        self.enter()
    }

    fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<Error> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }
}

fn too_large(message: String) -> Error {
    Error::Limit { message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statement::ShoalStatement;

    fn chain(terms: usize, op: &str) -> String {
        format!("SELECT {}", vec!["1"; terms].join(op))
    }

    #[test]
    fn depth_past_the_limit_is_refused_naming_it() {
        let limits = StatementLimits {
            max_depth: 50,
            ..Default::default()
        };
        assert!(ShoalStatement::parse_with_limits(&chain(49, " + "), &limits).is_ok());
        let err = ShoalStatement::parse_with_limits(&chain(51, " + "), &limits)
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_expression_depth"), "{err}");
    }

    #[test]
    fn bytes_and_tokens_are_checked_before_parsing() {
        let limits = StatementLimits {
            max_bytes: 100,
            max_tokens: 20,
            ..Default::default()
        };
        let err = ShoalStatement::parse_with_limits(&"x".repeat(101), &limits)
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_statement_bytes"), "{err}");
        let err = ShoalStatement::parse_with_limits(&chain(11, "+"), &limits)
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_statement_tokens"), "{err}");
    }

    #[test]
    fn clients_cannot_call_internal_functions_in_any_spelling() {
        for sql in [
            "SELECT __shoal_fedavg_round('{}', a, b) FROM t",
            "SELECT x FROM t WHERE 1 = (SELECT \"__SHOAL_linear_stats\"(a) FROM t)",
            "SELECT abs(__Shoal_x(1))",
        ] {
            let err = ShoalStatement::parse(sql).unwrap_err().to_string();
            assert!(err.contains("internal"), "{sql}: {err}");
            let statement = ShoalStatement::parse_internal(sql);
            assert!(statement.is_ok(), "{sql}");
        }
    }

    #[test]
    fn expressions_are_checked_like_statements() {
        let limits = StatementLimits {
            max_depth: 10,
            ..Default::default()
        };
        assert!(limits.check_expression("a + b * 2").is_ok());
        let err = limits
            .check_expression(&["a"; 12].join(" OR "))
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_expression_depth"), "{err}");
        let err = limits
            .check_expression("__shoal_linear_stats(a)")
            .unwrap_err()
            .to_string();
        assert!(err.contains("internal"), "{err}");
    }

    #[test]
    fn the_stack_grows_with_the_limits() {
        let small = StatementLimits::default().thread_stack_bytes();
        let deep = StatementLimits {
            max_depth: 5000,
            ..Default::default()
        }
        .thread_stack_bytes();
        assert!(deep > small && small >= STACK_BASE);
    }
}
