//! The schemas of a prepared statement, without running it: its result, and the parameters
//! it expects (`$1`, `$2`, ... in order, typed where the query implies a type).

use super::explain::{explain_schema, explained_frame};
use super::{Statements, query_frame};
use crate::error::Result;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use shoal_sql::ShoalStatement;
use shoal_sql::train::result_schema_of;
use std::sync::Arc;

impl Statements {
    /// (result schema, parameter schema) of `statement`.
    pub async fn describe(&self, statement: &ShoalStatement) -> Result<(SchemaRef, SchemaRef)> {
        let no_parameters = || Arc::new(Schema::empty());
        let ctx = self.sessions.session()?;
        let df = match statement {
            ShoalStatement::CreateModel(create) => {
                return Ok((result_schema_of(create), no_parameters()));
            }
            ShoalStatement::Explain(inner) => {
                // Checked now, so a bad EXPLAIN fails at prepare time.
                explained_frame(&ctx, inner).await?;
                return Ok((explain_schema(), no_parameters()));
            }
            ShoalStatement::Sql(_) | ShoalStatement::ShowModels => {
                query_frame(&ctx, statement).await?
            }
        };
        let mut parameters: Vec<(usize, String, DataType)> = df
            .logical_plan()
            .get_parameter_types()?
            .into_iter()
            .map(|(name, data_type)| {
                let position = name.trim_start_matches('$').parse().unwrap_or(usize::MAX);
                (position, name, data_type.unwrap_or(DataType::Null))
            })
            .collect();
        parameters.sort();
        let parameter_schema = Schema::new(
            parameters
                .into_iter()
                .map(|(_, name, data_type)| Field::new(name, data_type, true))
                .collect::<Vec<_>>(),
        );
        let dataset: Schema = df.schema().as_arrow().clone();
        Ok((Arc::new(dataset), Arc::new(parameter_schema)))
    }
}
