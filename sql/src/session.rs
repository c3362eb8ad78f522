//! Session set-up shared by the coordinator, the workers and the single-process reference.

use crate::error::{Error, Result};
use crate::models_table::ModelsTable;
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider};
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use shoal_operators::{ModelProvider, ml_udfs};
use std::path::Path;
use std::sync::Arc;

/// Name of the schema holding shoal's system tables (`shoal.models`).
pub const SYSTEM_SCHEMA: &str = "shoal";

/// Registers `predict` and `predict_proba` over `provider`.
pub fn with_shoal_functions(
    builder: SessionStateBuilder,
    provider: Arc<dyn ModelProvider>,
) -> SessionStateBuilder {
    builder.with_scalar_functions(ml_udfs(provider))
}

/// Adds the `shoal` schema with the `models` table to a context.
pub fn register_system_tables(
    ctx: &SessionContext,
    provider: Arc<dyn ModelProvider>,
) -> Result<()> {
    let schema = Arc::new(MemorySchemaProvider::new());
    schema.register_table("models".into(), Arc::new(ModelsTable::new(provider)))?;
    let catalog = ctx
        .catalog(&ctx.state().config_options().catalog.default_catalog)
        .ok_or_else(|| {
            datafusion::error::DataFusionError::Plan("the default catalog is missing".into())
        })?;
    catalog.register_schema(SYSTEM_SCHEMA, schema)?;
    Ok(())
}

/// Registers every `dir/<table>/` folder holding Parquet files as a table.
pub async fn register_data_dir(ctx: &SessionContext, dir: &Path) -> Result<Vec<String>> {
    if !dir.is_dir() {
        return Err(Error::MissingDataDir {
            path: dir.to_path_buf(),
        });
    }
    let io = |source| Error::DataDir {
        path: dir.to_path_buf(),
        source,
    };
    let mut tables = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !path.is_dir() || name.starts_with('.') {
            continue;
        }
        let url = format!("{}/", path.display());
        ctx.register_parquet(name, &url, ParquetReadOptions::default())
            .await?;
        tables.push(name.to_string());
    }
    tables.sort();
    Ok(tables)
}

/// A single-process session over local data: the reference distributed answers are
/// compared with, and `shoal sql --local`.
pub async fn local_context(
    data_dirs: &[&Path],
    provider: Arc<dyn ModelProvider>,
) -> Result<SessionContext> {
    let state = with_shoal_functions(
        SessionStateBuilder::new()
            .with_default_features()
            .with_config(SessionConfig::new().with_information_schema(true)),
        provider.clone(),
    )
    .build();
    let ctx = SessionContext::new_with_state(state);
    register_system_tables(&ctx, provider)?;
    match data_dirs {
        [one] => {
            register_data_dir(&ctx, one).await?;
        }
        many => {
            // Several site folders form one table per name, as on a cluster.
            let mut per_table: std::collections::BTreeMap<String, Vec<String>> =
                Default::default();
            for dir in many {
                if !dir.is_dir() {
                    return Err(Error::MissingDataDir {
                        path: dir.to_path_buf(),
                    });
                }
                for entry in std::fs::read_dir(dir).map_err(|source| Error::DataDir {
                    path: dir.to_path_buf(),
                    source,
                })? {
                    let path = entry
                        .map_err(|source| Error::DataDir {
                            path: dir.to_path_buf(),
                            source,
                        })?
                        .path();
                    if let (true, Some(name)) =
                        (path.is_dir(), path.file_name().and_then(|n| n.to_str()))
                    {
                        per_table
                            .entry(name.to_string())
                            .or_default()
                            .push(format!("{}/", path.display()));
                    }
                }
            }
            for (name, urls) in per_table {
                register_listing(&ctx, &name, urls).await?;
            }
        }
    }
    Ok(ctx)
}

async fn register_listing(ctx: &SessionContext, name: &str, urls: Vec<String>) -> Result<()> {
    use datafusion::datasource::listing::{
        ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
    };
    use datafusion::datasource::file_format::parquet::ParquetFormat;
    let state = ctx.state();
    let table_urls = urls
        .iter()
        .map(ListingTableUrl::parse)
        .collect::<datafusion::error::Result<Vec<_>>>()?;
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(".parquet");
    let config = ListingTableConfig::new_with_multi_paths(table_urls)
        .with_listing_options(options)
        .infer_schema(&state)
        .await?;
    ctx.register_table(name, Arc::new(ListingTable::try_new(config)?))?;
    Ok(())
}
