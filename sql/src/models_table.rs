//! `shoal.models`: the model registry as a table (`SHOW MODELS` reads it).

use datafusion::arrow::array::{RecordBatch, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::Result;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use shoal_operators::ModelProvider;
use std::sync::Arc;

#[derive(Debug)]
pub struct ModelsTable {
    provider: Arc<dyn ModelProvider>,
    schema: SchemaRef,
}

impl ModelsTable {
    pub fn new(provider: Arc<dyn ModelProvider>) -> Self {
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("hash", DataType::Utf8, false),
            Field::new("size_bytes", DataType::UInt64, false),
            Field::new("inputs", DataType::Utf8, false),
            Field::new("outputs", DataType::Utf8, false),
            // The device kind the registry pins the model to; empty: the statement's.
            Field::new("device", DataType::Utf8, false),
        ]));
        Self { provider, schema }
    }

    fn batch(&self) -> Result<RecordBatch> {
        let models = self.provider.list();
        let strings = |f: fn(&shoal_operators::ModelInfo) -> &str| {
            Arc::new(StringArray::from_iter_values(models.iter().map(f)))
        };
        Ok(RecordBatch::try_new(
            self.schema.clone(),
            vec![
                strings(|m| &m.name),
                strings(|m| &m.hash),
                Arc::new(UInt64Array::from_iter_values(
                    models.iter().map(|m| m.size_bytes),
                )),
                strings(|m| &m.inputs),
                strings(|m| &m.outputs),
                strings(|m| &m.device),
            ],
        )?)
    }
}

#[async_trait::async_trait]
impl TableProvider for ModelsTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![self.batch()?]],
            self.schema.clone(),
            projection.cloned(),
        )?)
    }
}
