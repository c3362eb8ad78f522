//! What a worker holds: `<data>/<table>/*.parquet`, described from the Parquet footers, in
//! a local folder or under a bucket prefix alike (both are an [`ObjectStore`] here).

use crate::error::{Error, Result};
use crate::worker::site_data::SiteData;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::prelude::SessionContext;
use object_store::path::Path as StorePath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use parquet::file::metadata::{FooterTail, ParquetMetaDataReader};
use shoal_planner::{SiteFile, SiteTableReport};
use std::sync::Arc;

/// Reads every table folder's footers. A file whose footer cannot be read is reported with
/// its error, so a query over that table fails naming it rather than silently skipping it.
pub async fn describe_tables(data: &SiteData) -> Result<Vec<SiteTableReport>> {
    let store = &data.store;
    let listing_failed = |e: object_store::Error| Error::DataLocation {
        location: data.location.to_string(),
        message: format!("cannot list it: {e}"),
    };
    let top = store
        .list_with_delimiter(None)
        .await
        .map_err(listing_failed)?;
    let state = SessionContext::new().state();
    let format = ParquetFormat::default();
    let mut tables = Vec::new();
    // Same folder rules as the single-process session: hidden folders are not tables.
    let mut folders: Vec<String> = top
        .common_prefixes
        .iter()
        .filter_map(|p| p.filename().map(str::to_string))
        .filter(|name| !name.starts_with('.'))
        .collect();
    folders.sort();
    for table in folders {
        let prefix = StorePath::from(table.as_str());
        let mut metas: Vec<ObjectMeta> = store
            .list_with_delimiter(Some(&prefix))
            .await
            .map_err(listing_failed)?
            .objects
            .into_iter()
            .filter(|m| m.location.extension() == Some("parquet"))
            .collect();
        metas.sort_by(|a, b| a.location.cmp(&b.location));
        let mut schema = None;
        let mut files = Vec::new();
        for meta in metas {
            let mut file = SiteFile {
                path: meta.location.to_string(),
                size_bytes: meta.size,
                rows: 0,
                error: None,
                fingerprint: String::new(),
            };
            match read_footer(store, &meta).await {
                Ok((rows, fingerprint)) => {
                    file.rows = rows;
                    file.fingerprint = fingerprint;
                }
                Err(message) => file.error = Some(message),
            }
            if file.error.is_none() {
                // The same schema inference as a single-process ListingTable, so both
                // give identical column types.
                match format
                    .infer_schema(&state, store, std::slice::from_ref(&meta))
                    .await
                {
                    Ok(s) => match &schema {
                        None => schema = Some(s),
                        Some(first) if first.fields() != s.fields() => {
                            file.error = Some(format!(
                                "its schema differs from the table's other files: {s:?}"
                            ))
                        }
                        Some(_) => {}
                    },
                    Err(e) => file.error = Some(e.to_string()),
                }
            }
            files.push(file);
        }
        let schema = schema
            .map(|s| s.as_ref().clone())
            .unwrap_or_else(datafusion::arrow::datatypes::Schema::empty);
        tables.push(SiteTableReport {
            name: table,
            schema,
            files,
        });
    }
    Ok(tables)
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
