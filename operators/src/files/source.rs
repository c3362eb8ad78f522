//! The file source of a files table: each file is one row; `content` is read only when the
//! scan's projection has it.

use super::MAX_FILE_BYTES;
use datafusion::arrow::array::{BinaryArray, RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::Schema;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, exec_err};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{
    FileOpenFuture, FileOpener, FileScanConfig, FileSource,
};
use datafusion::datasource::projection::{ProjectionOpener, SplitProjection};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::projection::ProjectionExprs;
use datafusion::physical_plan::metrics::{Count, ExecutionPlanMetricsSet, MetricBuilder};
use futures::{FutureExt, StreamExt};
use object_store::{ObjectStore, ObjectStoreExt};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct FilesSource {
    table_schema: TableSchema,
    projection: SplitProjection,
    metrics: ExecutionPlanMetricsSet,
}

impl FilesSource {
    pub(super) fn new(table_schema: TableSchema) -> Self {
        Self {
            projection: SplitProjection::unprojected(&table_schema),
            table_schema,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// The scan's output columns, as indices into its table schema. Only plain column
    /// selections are ever pushed into this source (see `try_pushdown_projection`).
    pub(super) fn projected_columns(&self) -> Vec<usize> {
        self.projection
            .source
            .iter()
            .filter_map(|p| p.expr.downcast_ref::<Column>().map(Column::index))
            .collect()
    }
}

impl FileSource for FilesSource {
    fn create_file_opener(
        &self,
        store: Arc<dyn ObjectStore>,
        _config: &FileScanConfig,
        partition: usize,
    ) -> Result<Arc<dyn FileOpener>> {
        let file_schema = self.table_schema.file_schema();
        let reader = ContentReader {
            store,
            schema: Arc::new(file_schema.project(&self.projection.file_indices)?),
            // The name Parquet's reader uses: the query report sums it per site.
            bytes_scanned: MetricBuilder::new(&self.metrics).counter("bytes_scanned", partition),
        };
        ProjectionOpener::try_new(self.projection.clone(), Arc::new(reader), file_schema)
    }

    fn table_schema(&self) -> &TableSchema {
        &self.table_schema
    }

    fn with_batch_size(&self, _batch_size: usize) -> Arc<dyn FileSource> {
        Arc::new(self.clone())
    }

    fn metrics(&self) -> &ExecutionPlanMetricsSet {
        &self.metrics
    }

    fn file_type(&self) -> &str {
        super::FORMAT_NAME
    }

    /// Spreads whole files over more groups, never byte ranges of one: a range of an image
    /// is not a row.
    fn repartitioned(
        &self,
        target_partitions: usize,
        _repartition_file_min_size: usize,
        _output_ordering: Option<datafusion::physical_expr::LexOrdering>,
        config: &FileScanConfig,
    ) -> Result<Option<FileScanConfig>> {
        let files: Vec<PartitionedFile> = config
            .file_groups
            .iter()
            .flat_map(|g| g.files().iter().cloned())
            .collect();
        if target_partitions.min(files.len()) <= config.file_groups.len() {
            return Ok(None);
        }
        let mut repartitioned = config.clone();
        repartitioned.file_groups = super::spread(files, target_partitions)
            .into_iter()
            .map(datafusion::datasource::physical_plan::FileGroup::new)
            .collect();
        Ok(Some(repartitioned))
    }

    /// Takes column selections only. A computed expression (`image_tensor(content, ...)`)
    /// stays above the scan, where it runs on a batch of many files rather than on each
    /// file's single row.
    fn try_pushdown_projection(
        &self,
        projection: &ProjectionExprs,
    ) -> Result<Option<Arc<dyn FileSource>>> {
        let plain = |p: &ProjectionExprs| {
            p.iter().all(|e| {
                e.expr
                    .downcast_ref::<Column>()
                    .is_some_and(|c| c.name() == e.alias)
            })
        };
        if !plain(projection) {
            return Ok(None);
        }
        let merged = self.projection.source.try_merge(projection)?;
        if !plain(&merged) {
            return Ok(None);
        }
        let mut source = self.clone();
        source.projection = SplitProjection::new(self.table_schema.file_schema(), &merged);
        Ok(Some(Arc::new(source)))
    }

    fn projection(&self) -> Option<&ProjectionExprs> {
        Some(&self.projection.source)
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        datafusion::physical_plan::apply_expression_roots(self.projection.source.iter(), f)
    }
}

/// Reads one file into one row: its content when `schema` has the column, else a row with
/// no columns (the listing's columns are added by the projection above).
struct ContentReader {
    store: Arc<dyn ObjectStore>,
    schema: Arc<Schema>,
    bytes_scanned: Count,
}

impl FileOpener for ContentReader {
    fn open(&self, file: PartitionedFile) -> Result<FileOpenFuture> {
        let store = self.store.clone();
        let schema = self.schema.clone();
        let location = file.object_meta.location.clone();
        let listed_size = file.object_meta.size;
        let bytes_scanned = self.bytes_scanned.clone();
        Ok(async move {
            let batch = if schema.fields().is_empty() {
                RecordBatch::try_new_with_options(
                    schema,
                    vec![],
                    &RecordBatchOptions::new().with_row_count(Some(1)),
                )?
            } else {
                if listed_size > MAX_FILE_BYTES {
                    return exec_err!(
                        "file '{location}' is {listed_size} bytes: a files table reads the \
                         content of files up to {MAX_FILE_BYTES} bytes"
                    );
                }
                let read = store.get(&location).await?;
                if read.meta.size > MAX_FILE_BYTES {
                    return exec_err!(
                        "file '{location}' grew to {} bytes since it was listed: a files \
                         table reads the content of files up to {MAX_FILE_BYTES} bytes",
                        read.meta.size
                    );
                }
                let bytes = read.bytes().await?;
                bytes_scanned.add(bytes.len());
                let content = BinaryArray::from_vec(vec![bytes.as_ref()]);
                RecordBatch::try_new(schema, vec![Arc::new(content)])?
            };
            Ok(futures::stream::once(async move { Ok(batch) }).boxed())
        }
        .boxed())
    }
}
