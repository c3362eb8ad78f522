//! Session set-up shared by the coordinator, the workers and the single-process reference.

use crate::error::{Error, Result};
use crate::models_table::ModelsTable;
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider};
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use shoal_operators::cancel::CancelToken;
use shoal_operators::{ModelProvider, ShoalOptions, feature_udfs, ml_udfs, shoal_udafs};
use std::path::Path;
use std::sync::Arc;

/// Name of the schema holding shoal's system tables (`shoal.models`).
pub const SYSTEM_SCHEMA: &str = "shoal";

/// Adds `predict` and `predict_proba` over `provider`, the feature functions, and the
/// metric and training aggregates to the builder's functions.
/// (`SessionStateBuilder::with_scalar_functions` would replace the built-in ones.)
pub fn with_shoal_functions(
    builder: SessionStateBuilder,
    provider: Arc<dyn ModelProvider>,
) -> SessionStateBuilder {
    with_shoal_functions_at(builder, provider, "local")
}

/// As [`with_shoal_functions`], on a worker: the training aggregates label what they send
/// with `site`. (Workers decode plans' functions by name from this registry, so this is
/// where a function learns which site it runs on.)
pub fn with_shoal_functions_at(
    mut builder: SessionStateBuilder,
    provider: Arc<dyn ModelProvider>,
    site: &str,
) -> SessionStateBuilder {
    builder
        .scalar_functions()
        .get_or_insert_with(Vec::new)
        .extend(
            ml_udfs(provider)
                .into_iter()
                .chain(feature_udfs())
                .chain([Arc::new(
                    datafusion::logical_expr::ScalarUDF::new_from_impl(
                        shoal_operators::udf::site::SiteUdf::new(site),
                    ),
                )]),
        );
    // The statement the session runs (a worker's session is built per task, with the
    // coordinator's `shoal.statement.*`): its training loops stop when it is cancelled.
    let stop = builder
        .config()
        .as_ref()
        .map(|config| {
            ShoalOptions::from_config(config.options())
                .statement
                .token()
        })
        .unwrap_or_else(CancelToken::none);
    builder
        .aggregate_functions()
        .get_or_insert_with(Vec::new)
        .extend(shoal_udafs(site, stop));
    builder
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

/// The `dir/<table>/` folders of a data folder (hidden folders skipped), sorted.
pub fn table_folders(dir: &Path) -> Result<Vec<(String, std::path::PathBuf)>> {
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
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(String::from) else {
            continue;
        };
        if path.is_dir() && !name.starts_with('.') {
            tables.push((name, path));
        }
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
            // Fewer image files per batch where a statement builds large tensors (on a
            // cluster the coordinator sizes the batches instead).
            .with_physical_optimizer_rule(Arc::new(
                shoal_operators::udf::tensor_batches::FileBatchRows,
            ))
            .with_config(
                SessionConfig::new()
                    .with_information_schema(true)
                    .with_option_extension(shoal_operators::runtime::session_options()),
            ),
        provider.clone(),
    )
    .build();
    let ctx = SessionContext::new_with_state(state);
    register_system_tables(&ctx, provider)?;
    // Folders of the same name in several site folders form one table, as on a cluster.
    let mut per_table: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for dir in data_dirs {
        for (name, path) in table_folders(dir)? {
            let urls = per_table.entry(name).or_default();
            // A folder of sink runs is the files its committed manifests list.
            match crate::file_formats::committed_run_files(&path, dir).map_err(|source| {
                Error::DataDir {
                    path: path.clone(),
                    source,
                }
            })? {
                Some(files) => urls.extend(files.iter().map(|f| f.display().to_string())),
                None => urls.push(format!("{}/", path.display())),
            }
        }
    }
    for (name, urls) in per_table {
        if !urls.is_empty() {
            register_listing(&ctx, &name, urls).await?;
        }
    }
    Ok(ctx)
}

/// A table over its folders on every site, read as the worker holding them would: the
/// format and partition folders of the first folder's files (`crate::file_formats`).
async fn register_listing(ctx: &SessionContext, name: &str, urls: Vec<String>) -> Result<()> {
    use datafusion::arrow::datatypes::DataType;
    use datafusion::datasource::listing::{
        ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
    };
    let state = ctx.state();
    let table_urls = urls
        .iter()
        .map(ListingTableUrl::parse)
        .collect::<datafusion::error::Result<Vec<_>>>()?;
    let layout = urls
        .iter()
        .filter(|url| url.ends_with('/'))
        .map(|url| crate::file_formats::table_layout(Path::new(url.trim_end_matches('/'))))
        .find_map(|layout| layout.transpose())
        .transpose()
        .map_err(|source| Error::DataDir {
            path: std::path::PathBuf::from(&urls[0]),
            source,
        })?;
    let (format, extension, partitions) = layout.unwrap_or((
        crate::file_formats::TableFormat::Parquet,
        "parquet".into(),
        Vec::new(),
    ));
    let Some(file_format) = format.file_format() else {
        // A files table: its folders on every site (a files table has no sink runs).
        let folders = urls
            .iter()
            .filter_map(|url| url.strip_suffix('/'))
            .map(std::path::PathBuf::from)
            .collect();
        let table = crate::files_table::LocalFilesTable::new(folders);
        ctx.register_table(name, Arc::new(table))?;
        return Ok(());
    };
    let options = ListingOptions::new(file_format)
        .with_file_extension(format!(".{extension}"))
        .with_table_partition_cols(
            partitions
                .into_iter()
                .map(|column| (column, DataType::Utf8))
                .collect(),
        );
    let config = ListingTableConfig::new_with_multi_paths(table_urls)
        .with_listing_options(options)
        .infer_schema(&state)
        .await?;
    ctx.register_table(name, Arc::new(ListingTable::try_new(config)?))?;
    Ok(())
}
