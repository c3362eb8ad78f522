//! The statement limits of this process (`--max-statement-bytes`, `--max-statement-tokens`,
//! `--max-expression-depth`): the coordinator refuses statements past them, and every
//! process sizes its threads' stacks for the deepest statement they allow.

use shoal_sql::statement::StatementLimits;

#[derive(clap::Args, Clone)]
pub(super) struct StatementLimitArgs {
    /// Bytes of SQL a statement may have.
    #[arg(long, global = true, default_value_t = StatementLimits::default().max_bytes,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=(64 << 20)))]
    max_statement_bytes: usize,
    /// Tokens (words, numbers, operators) a statement may have.
    #[arg(long, global = true, default_value_t = StatementLimits::default().max_tokens,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000_000))]
    max_statement_tokens: usize,
    /// How deep a statement may nest expressions and subqueries (a chain of one operator
    /// nests one level per term). Threads get a stack sized for it.
    #[arg(long, global = true, default_value_t = StatementLimits::default().max_depth,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(8..=100_000))]
    max_expression_depth: usize,
}

impl StatementLimitArgs {
    pub(super) fn limits(&self) -> StatementLimits {
        StatementLimits {
            max_bytes: self.max_statement_bytes,
            max_tokens: self.max_statement_tokens,
            max_depth: self.max_expression_depth,
            ..StatementLimits::default()
        }
    }
}
