//! `CREATE MODEL ... AS TRAIN ...`: the statement ([`statement`]), options and searches
//! ([`options`]), the federated training loop ([`driver`]) and its report ([`report`]).
//! The loop runs SQL through a [`driver::QueryRunner`], so the same code trains on the
//! cluster and in one process.

pub mod driver;
pub mod options;
pub mod report;
pub mod statement;

pub use driver::{QueryRunner, Trained, train};
pub use statement::CreateModel;

use crate::error::{Error, Result};
use shoal_operators::model::DirectoryModels;

/// Trains `statement` and registers the model in `registry`: the table `CREATE MODEL`
/// returns.
pub async fn create_model(
    statement: &CreateModel,
    runner: &dyn QueryRunner,
    registry: &DirectoryModels,
) -> Result<datafusion::arrow::array::RecordBatch> {
    shoal_operators::model::check_model_name(&statement.name)?;
    // Refused before any work: there would be nowhere to put the model.
    if registry.dir().is_none() {
        return Err(Error::Training {
            model: statement.name.clone(),
            message: "the coordinator has no models folder to register it in: start it with \
                      --models DIR"
                .into(),
        });
    }
    let trained = train(statement, runner).await?;
    let registered = registry.register(&statement.name, |version| {
        let mut report = trained.report.clone();
        report.name = format!("{}@v{version}", statement.name);
        (trained.onnx(version), report.to_json())
    })?;
    report::result_batch(&trained.report, registered.version).map_err(Error::from)
}

/// The schema `CREATE MODEL` answers with, known before training (for Flight's
/// `GetFlightInfo` and prepared statements).
pub fn result_schema_of(statement: &CreateModel) -> datafusion::arrow::datatypes::SchemaRef {
    let search = statement.options.iter().any(|(k, _)| k == "search");
    report::result_schema(search)
}

/// Runs training queries in one process (the reference the cluster is compared with).
pub struct LocalRunner<'a>(pub &'a datafusion::prelude::SessionContext);

#[async_trait::async_trait]
impl QueryRunner for LocalRunner<'_> {
    async fn schema(&self, sql: &str) -> Result<datafusion::arrow::datatypes::SchemaRef> {
        Ok(std::sync::Arc::new(
            self.0.sql(sql).await?.schema().as_arrow().clone(),
        ))
    }

    async fn collect(
        &self,
        sql: &str,
    ) -> Result<(Vec<datafusion::arrow::array::RecordBatch>, u64)> {
        Ok((self.0.sql(sql).await?.collect().await?, 0))
    }
}
