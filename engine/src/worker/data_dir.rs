//! What a worker holds: `DIR/<table>/*.parquet`, described from the Parquet footers.

use crate::error::{Error, Result};
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::prelude::SessionContext;
use object_store::local::LocalFileSystem;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::file::reader::{FileReader, SerializedFileReader};
use shoal_planner::{SiteFile, SiteTableReport};
use std::path::Path;
use std::sync::Arc;

/// Reads every table folder's footers. A file whose footer cannot be read is reported with
/// its error, so a query over that table fails naming it rather than silently skipping it.
pub async fn describe_tables(dir: &Path) -> Result<Vec<SiteTableReport>> {
    if !dir.is_dir() {
        return Err(Error::MissingDataDir {
            path: dir.to_path_buf(),
        });
    }
    let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(dir).map_err(
        |e| Error::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        },
    )?);
    let state = SessionContext::new().state();
    let format = ParquetFormat::default();
    let mut tables = Vec::new();
    // Same folder rules as the single-process session: hidden folders are not tables.
    for (table, table_dir) in shoal_sql::table_folders(dir)? {
        let mut paths: Vec<_> = std::fs::read_dir(&table_dir)
            .map_err(|source| Error::Io {
                path: table_dir.clone(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
            .collect();
        paths.sort();
        let mut schema = None;
        let mut files = Vec::new();
        for path in paths {
            let relative = format!(
                "{table}/{}",
                path.file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default()
            );
            let size_bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            let mut file = SiteFile {
                path: relative.clone(),
                size_bytes,
                rows: 0,
                error: None,
                fingerprint: String::new(),
            };
            match footer_rows(&path) {
                Ok(rows) => file.rows = rows,
                Err(message) => file.error = Some(message),
            }
            if file.error.is_none() {
                match footer_fingerprint(&path) {
                    Ok(fingerprint) => file.fingerprint = fingerprint,
                    Err(message) => file.error = Some(message),
                }
            }
            if file.error.is_none() {
                let meta = store
                    .head(&object_store::path::Path::from(relative.as_str()))
                    .await
                    .map_err(|e| Error::Io {
                        path: path.clone(),
                        source: std::io::Error::other(e.to_string()),
                    })?;
                // The same schema inference as a single-process ListingTable, so both
                // give identical column types.
                match format.infer_schema(&state, &store, &[meta]).await {
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

/// SHA-256 of the file's footer (metadata and its length): the footer holds every row
/// group's offsets and statistics, so two files with the same size and footer are copies.
/// It costs one small read, not a pass over the data.
fn footer_fingerprint(path: &Path) -> std::result::Result<String, String> {
    use sha2::{Digest, Sha256};
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    let mut tail = [0u8; 8];
    if size < 8 {
        return Err("too small to be Parquet".into());
    }
    file.seek(SeekFrom::End(-8)).map_err(|e| e.to_string())?;
    file.read_exact(&mut tail).map_err(|e| e.to_string())?;
    let footer_len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]])) + 8;
    if footer_len > size {
        return Err(format!(
            "footer length {footer_len} exceeds the file size {size}"
        ));
    }
    let mut footer = vec![0u8; footer_len as usize];
    file.seek(SeekFrom::End(-(footer_len as i64)))
        .map_err(|e| e.to_string())?;
    file.read_exact(&mut footer).map_err(|e| e.to_string())?;
    let digest = Sha256::digest(&footer);
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
}

fn footer_rows(path: &Path) -> std::result::Result<u64, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let reader = SerializedFileReader::new(file).map_err(|e| e.to_string())?;
    Ok(reader.metadata().file_metadata().num_rows().max(0) as u64)
}
