//! What a worker holds: `<data>/<table>/**/<file>`, in a local folder or under a bucket
//! prefix alike (both are an [`ObjectStore`] here). A table's files are all of one format
//! (Parquet, CSV, newline-delimited JSON or Arrow IPC: see `shoal_sql::file_formats`),
//! directly in its folder or in Hive partition folders (`year=2024/part.parquet`).
//! Parquet files are described from their footers (rows, a fingerprint that finds
//! replicas); the schema is inferred by DataFusion's reader for the format, as a
//! single-process session would. The worker describes its data again at an interval, so
//! [`Describer`] keeps what it learned of each file and reads only new or changed ones.

use crate::error::{Error, Result};
use crate::worker::site_data::SiteData;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::SessionState;
use datafusion::prelude::SessionContext;
use object_store::path::Path as StorePath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use parking_lot::Mutex;
use parquet::file::metadata::{FooterTail, ParquetMetaDataReader};
use shoal_planner::{SiteFile, SiteTableReport};
use shoal_sql::file_formats::{TableFormat, is_hidden, partition_values};
use std::collections::HashMap;
use std::sync::Arc;

/// What was learned of one file, valid while its size and modification time stay.
#[derive(Debug, Clone)]
struct Described {
    size: u64,
    /// Modification time, in microseconds since the epoch.
    modified: i64,
    rows: u64,
    fingerprint: String,
    schema: std::result::Result<SchemaRef, String>,
}

/// Describes a site's tables, remembering each file it has read.
#[derive(Debug, Default)]
pub struct Describer {
    known: Mutex<HashMap<StorePath, Described>>,
}

impl Describer {
    /// Lists every table folder and describes its files. A file that cannot be read is
    /// reported with its error, so a query over that table fails naming it rather than
    /// silently skipping it.
    pub async fn describe(&self, data: &SiteData) -> Result<Vec<SiteTableReport>> {
        let store = &data.store;
        let listing_failed = |e: object_store::Error| Error::DataLocation {
            location: data.location.to_string(),
            message: format!("cannot list it: {e}"),
        };
        let top = store
            .list_with_delimiter(None)
            .await
            .map_err(listing_failed)?;
        let mut folders: Vec<String> = top
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .filter(|name| !is_hidden(name))
            .collect();
        folders.sort();
        // One session for the schema inference of every file of this listing.
        let state = SessionContext::new().state();
        let mut seen = HashMap::new();
        let mut tables = Vec::new();
        for table in folders {
            let prefix = StorePath::from(table.as_str());
            let mut metas: Vec<ObjectMeta> = list_all(store, &prefix)
                .await
                .map_err(listing_failed)?
                .into_iter()
                .filter(|m| {
                    // Below the table folder, nothing hidden: `_SUCCESS`, `.staging-...`.
                    m.location
                        .prefix_match(&prefix)
                        .is_some_and(|mut parts| parts.all(|p| !is_hidden(p.as_ref())))
                })
                .collect();
            metas.sort_by(|a, b| a.location.cmp(&b.location));
            let report = self
                .describe_table(store, &state, &table, metas, &mut seen)
                .await;
            tables.push(report);
        }
        // Forget files that are gone.
        *self.known.lock() = seen;
        Ok(tables)
    }

    async fn describe_table(
        &self,
        store: &Arc<dyn ObjectStore>,
        state: &SessionState,
        table: &str,
        metas: Vec<ObjectMeta>,
        seen: &mut HashMap<StorePath, Described>,
    ) -> SiteTableReport {
        // The table's format and layout are its first file's; files that differ are
        // reported with the reason, and fail queries on the table naming them.
        let first_format = metas
            .iter()
            .find_map(|m| m.location.extension().and_then(TableFormat::of_extension));
        let format = first_format.unwrap_or(TableFormat::Parquet);
        let first_extension = metas
            .iter()
            .find(|m| {
                m.location
                    .extension()
                    .and_then(TableFormat::of_extension)
                    .is_some()
            })
            .and_then(|m| m.location.extension().map(str::to_string));
        let mut partition_columns: Option<Vec<String>> = None;
        let mut schema: Option<SchemaRef> = None;
        let mut files = Vec::new();
        for meta in metas {
            let Some(extension) = meta.location.extension().map(str::to_string) else {
                continue;
            };
            if TableFormat::of_extension(&extension).is_none() {
                // Not a data file of any format (a README, a checksum): not part of it.
                continue;
            }
            let path = meta.location.to_string();
            let relative = path.strip_prefix(&format!("{table}/")).unwrap_or(&path);
            let mut file = SiteFile {
                path: path.clone(),
                size_bytes: meta.size,
                rows: 0,
                error: None,
                fingerprint: String::new(),
                partition_values: Vec::new(),
            };
            if Some(&extension) != first_extension.as_ref() {
                file.error = Some(format!(
                    "table '{table}' mixes file kinds ('.{}' and '.{extension}'): a table's \
                     files must all be one format with one extension",
                    first_extension.as_deref().unwrap_or_default()
                ));
                files.push(file);
                continue;
            }
            match partition_values(relative) {
                Ok(values) => {
                    let names: Vec<String> = values.iter().map(|(k, _)| k.clone()).collect();
                    let expected = partition_columns.get_or_insert_with(|| names.clone());
                    if *expected != names {
                        file.error = Some(format!(
                            "its partition folders ({}) differ from the table's ({})",
                            names.join("/"),
                            expected.join("/")
                        ));
                    } else {
                        file.partition_values = values.into_iter().map(|(_, v)| v).collect();
                    }
                }
                Err(message) => file.error = Some(message),
            }
            if file.error.is_none() {
                let described = self.file(store, state, &meta, format).await;
                file.rows = described.rows;
                file.fingerprint = described.fingerprint.clone();
                match &described.schema {
                    Ok(s) => match &schema {
                        None => schema = Some(s.clone()),
                        Some(first) if first.fields() != s.fields() => {
                            file.error = Some(format!(
                                "its schema differs from the table's other files: {s:?}"
                            ))
                        }
                        Some(_) => {}
                    },
                    Err(e) => file.error = Some(e.clone()),
                }
                seen.insert(meta.location.clone(), described);
            }
            files.push(file);
        }
        SiteTableReport {
            name: table.to_string(),
            schema: schema
                .map(|s| s.as_ref().clone())
                .unwrap_or_else(datafusion::arrow::datatypes::Schema::empty),
            files,
            format: format.name().to_string(),
            partition_columns: partition_columns.unwrap_or_default(),
        }
    }

    /// One file, from what was learned before if it has not changed since.
    async fn file(
        &self,
        store: &Arc<dyn ObjectStore>,
        state: &SessionState,
        meta: &ObjectMeta,
        format: TableFormat,
    ) -> Described {
        if let Some(known) = self.known.lock().get(&meta.location)
            && known.size == meta.size
            && known.modified == meta.last_modified.timestamp_micros()
        {
            return known.clone();
        }
        let (rows, fingerprint) = if format == TableFormat::Parquet {
            match read_footer(store, meta).await {
                Ok(found) => found,
                Err(message) => {
                    return Described {
                        size: meta.size,
                        modified: meta.last_modified.timestamp_micros(),
                        rows: 0,
                        fingerprint: String::new(),
                        schema: Err(message),
                    };
                }
            }
        } else {
            // Other formats have no footer: their rows are known once read, and a copy on
            // another site is not recognised as one (each is read where it lies).
            (0, String::new())
        };
        // The same schema inference as a single-process ListingTable, so both give
        // identical column types.
        let schema = format
            .file_format()
            .infer_schema(state, store, std::slice::from_ref(meta))
            .await
            .map_err(|e| e.to_string());
        Described {
            size: meta.size,
            modified: meta.last_modified.timestamp_micros(),
            rows,
            fingerprint,
            schema,
        }
    }
}

/// Every object under `prefix`, at any depth.
async fn list_all(
    store: &Arc<dyn ObjectStore>,
    prefix: &StorePath,
) -> object_store::Result<Vec<ObjectMeta>> {
    use futures::TryStreamExt;
    store.list(Some(prefix)).try_collect().await
}

/// Rows from the footer, and the SHA-256 of the footer (metadata and its length): the
/// footer holds every row group's offsets and statistics, so two files with the same size
/// and footer are copies. Costs two small range reads, never a pass over the data.
async fn read_footer(
    store: &Arc<dyn ObjectStore>,
    meta: &ObjectMeta,
) -> std::result::Result<(u64, String), String> {
    use sha2::{Digest, Sha256};
    let size = meta.size;
    if size < 8 {
        return Err("too small to be Parquet".into());
    }
    let tail = store
        .get_range(&meta.location, size - 8..size)
        .await
        .map_err(|e| e.to_string())?;
    let tail: [u8; 8] = tail
        .as_ref()
        .try_into()
        .map_err(|_| "a short read of the footer".to_string())?;
    let footer_tail = FooterTail::try_new(&tail).map_err(|e| e.to_string())?;
    let footer_len = footer_tail.metadata_length() as u64 + 8;
    if footer_len > size {
        return Err(format!(
            "footer length {footer_len} exceeds the file size {size}"
        ));
    }
    let footer = store
        .get_range(&meta.location, size - footer_len..size)
        .await
        .map_err(|e| e.to_string())?;
    let metadata = ParquetMetaDataReader::decode_metadata(&footer[..footer.len() - 8])
        .map_err(|e| e.to_string())?;
    let rows = metadata.file_metadata().num_rows().max(0) as u64;
    let digest = Sha256::digest(&footer);
    Ok((rows, digest.iter().map(|b| format!("{b:02x}")).collect()))
}
