//! Tables whose files live on sites: the schema provider the coordinator's `public` schema
//! is made of, and the scan that names every file by its site.

use crate::catalog::{ClusterTable, SiteCatalog};
use crate::locality::CLUSTER_STORE;
use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
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

/// Path of a site file inside the cluster-wide store: `<site>/<path in the site's folder>`.
pub fn cluster_path(site: &str, path: &str) -> String {
    format!("{site}/{path}")
}

#[async_trait]
impl TableProvider for SiteTableProvider {
    fn schema(&self) -> SchemaRef {
        self.table.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.catalog.check_servable(&self.table)?;
        if self.table.files.is_empty() {
            let schema = match projection {
                Some(p) => Arc::new(self.table.schema.project(p)?),
                None => self.table.schema.clone(),
            };
            return Ok(Arc::new(EmptyExec::new(schema)));
        }
        // One group per file; the locality handler regroups them per site. The cluster
        // store is registered nowhere: if this scan were ever executed without being split
        // per site, it fails instead of reading from the wrong place.
        let groups = self
            .table
            .files
            .iter()
            .map(|(site, f)| {
                FileGroup::new(vec![PartitionedFile::new(
                    cluster_path(site, &f.path),
                    f.size_bytes,
                )])
            })
            .collect();
        let source = Arc::new(ParquetSource::new(self.table.schema.clone()));
        let config = FileScanConfigBuilder::new(ObjectStoreUrl::parse(CLUSTER_STORE)?, source)
            .with_file_groups(groups)
            .with_limit(limit)
            .with_projection_indices(projection.cloned())?
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }
}
