//! Tables whose files live on sites: the schema provider the coordinator's `public` schema
//! is made of, and the scan that names every file by its site.

use crate::catalog::{ClusterTable, SiteCatalog};
use crate::locality::CLUSTER_STORE;
use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions, StringArray};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema};
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::TableType;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::Result;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::TableProviderFilterPushDown;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use shoal_operators::ShoalOptions;
use shoal_operators::files::{self, FileEntry};
use shoal_operators::udf::model_pins::Pins;
use shoal_sql::file_formats::TableFormat;
use std::collections::BTreeSet;
use std::sync::Arc;

/// Lists the catalog's tables live: a site that registers later is visible to the next query.
#[derive(Debug)]
pub struct SiteSchemaProvider {
    catalog: Arc<SiteCatalog>,
    /// (user, the only tables they may read), where grants narrow the user.
    granted: Option<(String, Arc<BTreeSet<String>>)>,
}

impl SiteSchemaProvider {
    pub fn new(catalog: Arc<SiteCatalog>) -> Self {
        Self {
            catalog,
            granted: None,
        }
    }

    /// Shows `user` only the tables granted them.
    pub fn granted_only(mut self, granted: Option<(String, Arc<BTreeSet<String>>)>) -> Self {
        self.granted = granted;
        self
    }

    fn may_read(&self, table: &str) -> bool {
        self.granted
            .as_ref()
            .is_none_or(|(_, tables)| tables.contains(table))
    }
}

#[async_trait]
impl SchemaProvider for SiteSchemaProvider {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.catalog.table_names();
        names.retain(|name| self.may_read(name));
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if let Some((user, _)) = &self.granted
            && !self.may_read(name)
            && self.catalog.table(name).is_some()
        {
            return Err(datafusion::error::DataFusionError::External(Box::new(
                crate::Error::NotGranted {
                    user: user.clone(),
                    table: name.to_string(),
                },
            )));
        }
        Ok(self.catalog.table(name).map(|table| {
            Arc::new(SiteTableProvider {
                table,
                catalog: self.catalog.clone(),
            }) as Arc<dyn TableProvider>
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.catalog.table(name).is_some() && self.may_read(name)
    }
}

#[derive(Debug)]
pub struct SiteTableProvider {
    table: ClusterTable,
    catalog: Arc<SiteCatalog>,
}

impl SiteTableProvider {
    /// The table as placed when this provider was made (files and their serving sites).
    pub fn cluster_table(&self) -> &ClusterTable {
        &self.table
    }

    /// The same table reading only the files `keep` accepts (a resumable run's next wave).
    pub fn restricted(&self, keep: impl Fn(&str, &crate::SiteFile) -> bool) -> Self {
        let mut table = self.table.clone();
        table.files.retain(|(site, file)| keep(site, file));
        Self {
            table,
            catalog: self.catalog.clone(),
        }
    }
}

/// Whether the statement planned in `state` calls models that may run on a GPU (the
/// coordinator pins its models before physical planning, so they are known here).
fn statement_prefers_gpu(state: &dyn Session) -> Result<bool> {
    let options = ShoalOptions::from_config(state.config_options());
    let pins = Pins::from_config(state.config_options())?;
    Ok(shoal_operators::device::prefers_gpu(
        !pins.versions.is_empty(),
        options.inference.device,
        pins.devices.values().copied(),
    ))
}

/// Path of a site file inside the cluster-wide store: `<site>/<path in the site's folder>`.
pub fn cluster_path(site: &str, path: &str) -> String {
    format!("{site}/{path}")
}

impl SiteTableProvider {
    fn is_files_table(&self) -> bool {
        self.table.format == files::FORMAT_NAME
    }

    /// The table's columns: the files' columns, then its partition columns (Utf8); a files
    /// table's fixed columns.
    fn full_schema(&self) -> SchemaRef {
        if self.is_files_table() {
            return files::table_schema();
        }
        if self.table.partition_columns.is_empty() {
            return self.table.schema.clone();
        }
        let mut fields: Vec<FieldRef> = self.table.schema.fields().iter().cloned().collect();
        fields.extend(partition_fields(&self.table.partition_columns));
        Arc::new(Schema::new(fields))
    }

    /// Whether `filter` reads only what the listing knows of each file (its partition
    /// values; a files table's path, size and time): then it can skip whole files.
    fn on_listing_only(&self, filter: &Expr) -> bool {
        if self.is_files_table() {
            return files::prune::reads_only(filter, &files::LISTING_COLUMNS);
        }
        let columns: Vec<&str> = self
            .table
            .partition_columns
            .iter()
            .map(String::as_str)
            .collect();
        files::prune::reads_only(filter, &columns)
    }

    /// A files table's files as its scan lists them.
    fn file_entries(&self, files: &[(String, crate::SiteFile)]) -> Vec<FileEntry> {
        let folder = format!("{}/", self.table.name);
        files
            .iter()
            .map(|(site, f)| FileEntry {
                location: cluster_path(site, &f.path),
                path: f.path.strip_prefix(&folder).unwrap_or(&f.path).to_string(),
                size: f.size_bytes,
                modified_micros: f.modified_micros,
            })
            .collect()
    }

    /// What the listing knows of each file, one row per file.
    fn listing_batch(&self) -> Result<RecordBatch> {
        if self.is_files_table() {
            let entries = self.file_entries(&self.table.files);
            return files::listing_batch(&entries.iter().collect::<Vec<_>>());
        }
        let schema = Arc::new(Schema::new(partition_fields(&self.table.partition_columns)));
        let columns: Vec<ArrayRef> = (0..self.table.partition_columns.len())
            .map(|i| {
                Arc::new(StringArray::from_iter(
                    self.table
                        .files
                        .iter()
                        .map(|(_, f)| f.partition_values.get(i).map(String::as_str)),
                )) as ArrayRef
            })
            .collect();
        Ok(RecordBatch::try_new_with_options(
            schema,
            columns,
            &RecordBatchOptions::new().with_row_count(Some(self.table.files.len())),
        )?)
    }

    /// The files that pass every filter on the listing's columns (all of them when there
    /// is none).
    fn pruned_files(
        &self,
        state: &dyn Session,
        filters: &[Expr],
    ) -> Result<Vec<(String, crate::SiteFile)>> {
        let on_listing: Vec<&Expr> = filters.iter().filter(|f| self.on_listing_only(f)).collect();
        if on_listing.is_empty() {
            return Ok(self.table.files.clone());
        }
        let keep = files::prune::files_passing(state, &self.listing_batch()?, &on_listing)?;
        Ok(self
            .table
            .files
            .iter()
            .zip(keep)
            .filter(|(_, kept)| *kept)
            .map(|(file, _)| file.clone())
            .collect())
    }
}

fn partition_fields(columns: &[String]) -> Vec<FieldRef> {
    columns
        .iter()
        .map(|name| Arc::new(Field::new(name, DataType::Utf8, true)))
        .collect()
}

#[async_trait]
impl TableProvider for SiteTableProvider {
    fn schema(&self) -> SchemaRef {
        self.full_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// Filters on partition columns skip files; DataFusion still applies every filter to
    /// the rows read (Inexact), so pruning can only save work, never change an answer.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(files::prune::pushdown(filters, |f| self.on_listing_only(f)))
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let options = ShoalOptions::from_config(state.config_options());
        if options.query.partial && !self.table.lost.is_empty() {
            // Answer from the sites that are up; the report says what was not read.
            self.catalog.check_readable(&self.table)?;
            self.catalog
                .note_not_read(&options.statement.key, &self.table);
        } else {
            self.catalog.check_servable(&self.table)?;
        }
        let mut files = self.pruned_files(state, filters)?;
        if statement_prefers_gpu(state)? {
            files = self.catalog.onto_gpu_holders(&self.table.name, files);
        }
        if files.is_empty() {
            let full = self.full_schema();
            let schema = match projection {
                Some(p) => Arc::new(full.project(p)?),
                None => full,
            };
            return Ok(Arc::new(EmptyExec::new(schema)));
        }
        // One group per file; the locality handler regroups them per site. The cluster
        // store is registered nowhere: if this scan were ever executed without being split
        // per site, it fails instead of reading from the wrong place.
        if self.is_files_table() {
            let groups = self.file_entries(&files).into_iter().map(|e| vec![e]);
            return files::scan(CLUSTER_STORE, groups.collect(), projection, limit);
        }
        let groups = files
            .iter()
            .map(|(site, f)| {
                let file = files::listed_file(&cluster_path(site, &f.path), f.size_bytes)
                    .with_partition_values(
                        f.partition_values
                            .iter()
                            .map(|v| ScalarValue::Utf8(Some(v.clone())))
                            .collect(),
                    );
                FileGroup::new(vec![file])
            })
            .collect();
        let format = TableFormat::from_name(&self.table.format).ok_or_else(|| {
            datafusion::error::DataFusionError::Plan(format!(
                "table '{}' is in format '{}', which this coordinator cannot read",
                self.table.name, self.table.format
            ))
        })?;
        let table_schema = TableSchema::builder(self.table.schema.clone())
            .with_table_partition_cols(partition_fields(&self.table.partition_columns))
            .build();
        let Some(file_format) = format.file_format() else {
            return Err(datafusion::error::DataFusionError::Plan(format!(
                "table '{}' in format '{}' has no file reader",
                self.table.name, self.table.format
            )));
        };
        let source = file_format.file_source(table_schema);
        let config = FileScanConfigBuilder::new(ObjectStoreUrl::parse(CLUSTER_STORE)?, source)
            .with_file_groups(groups)
            .with_limit(limit)
            .with_projection_indices(projection.cloned())?
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }
}
