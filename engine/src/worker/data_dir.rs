//! What a worker holds: `<data>/<table>/**/<file>`, in a local folder or under a bucket
//! prefix alike (both are an [`ObjectStore`] here). A table's files are all of one format
//! (Parquet, CSV, newline-delimited JSON or Arrow IPC: see `shoal_sql::file_formats`),
//! directly in its folder or in Hive partition folders (`year=2024/part.parquet`).
//! Parquet files are described from their footers (rows, a fingerprint that finds
//! replicas); the schema is inferred by DataFusion's reader for the format, as a
//! single-process session would. The worker describes its data again at an interval, so
//! [`Describer`] keeps what it learned of each file and reads only new or changed ones.
//! A folder of images, recordings or documents (and no structured file) is a files table
//! (`shoal_operators::files`): one row per file, described from the listing alone.
//! A table folder may hold an `object_store` sink's runs (`run-<id>/`): of those, only the
//! files a committed manifest lists are the table's (`shoal_sql::file_formats::run_folder`).

use crate::error::{Error, Result};
use crate::worker::site_data::SiteData;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::SessionState;
use datafusion::prelude::SessionContext;
use object_store::path::Path as StorePath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use parking_lot::Mutex;
use parquet::file::metadata::{FooterTail, ParquetMetaDataReader};
use shoal_operators::files;
use shoal_operators::sink::staging::{MANIFEST_FILE, SiteManifest};
use shoal_planner::{SiteFile, SiteTableReport};
use shoal_sql::file_formats::{
    TableFormat, below_run_folder, is_hidden, partition_values, run_folder,
};
use std::collections::{HashMap, HashSet};
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
    /// The files each committed run manifest lists: a manifest is written once and never
    /// changes, so it is read once.
    manifests: Mutex<HashMap<StorePath, Arc<HashSet<String>>>>,
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
        let mut manifests = HashMap::new();
        let mut tables = Vec::new();
        for table in folders {
            let prefix = StorePath::from(table.as_str());
            let listed = list_all(store, &prefix).await.map_err(listing_failed)?;
            let runs = self
                .committed_runs(store, &table, &listed, &mut manifests)
                .await;
            let mut metas: Vec<ObjectMeta> = listed
                .into_iter()
                .filter(|m| {
                    // Below the table folder, nothing hidden: `_SUCCESS`, `.staging-...`.
                    m.location
                        .prefix_match(&prefix)
                        .is_some_and(|mut parts| parts.all(|p| !is_hidden(p.as_ref())))
                })
                .filter(|m| {
                    let path = m.location.as_ref();
                    let relative = path.strip_prefix(&format!("{table}/")).unwrap_or(path);
                    match run_folder(relative) {
                        None => true,
                        Some(run) => runs.get(run).is_some_and(|files| files.contains(path)),
                    }
                })
                .collect();
            metas.sort_by(|a, b| a.location.cmp(&b.location));
            let report = self
                .describe_table(store, &state, &table, metas, &mut seen)
                .await;
            tables.push(report);
        }
        // Forget files and manifests that are gone.
        *self.known.lock() = seen;
        *self.manifests.lock() = manifests;
        Ok(tables)
    }

    /// The committed sink runs of `table`, by run folder, with the files their manifests
    /// list. A manifest that cannot be read leaves its run out, and says so.
    async fn committed_runs(
        &self,
        store: &Arc<dyn ObjectStore>,
        table: &str,
        listed: &[ObjectMeta],
        manifests: &mut HashMap<StorePath, Arc<HashSet<String>>>,
    ) -> HashMap<String, Arc<HashSet<String>>> {
        let mut runs = HashMap::new();
        for meta in listed {
            let path = meta.location.as_ref();
            let relative = path.strip_prefix(&format!("{table}/")).unwrap_or(path);
            let Some(run) = run_folder(relative) else {
                continue;
            };
            if relative != format!("{run}/{MANIFEST_FILE}") {
                continue;
            }
            let known = self.manifests.lock().get(&meta.location).cloned();
            let files = match known {
                Some(files) => files,
                None => match read_manifest(store, &meta.location).await {
                    Ok(files) => Arc::new(files),
                    Err(e) => {
                        tracing::warn!("not reading the sink run {table}/{run}: {e}");
                        continue;
                    }
                },
            };
            manifests.insert(meta.location.clone(), files.clone());
            runs.insert(run.to_string(), files);
        }
        runs
    }

    async fn describe_table(
        &self,
        store: &Arc<dyn ObjectStore>,
        state: &SessionState,
        table: &str,
        metas: Vec<ObjectMeta>,
        seen: &mut HashMap<StorePath, Described>,
    ) -> SiteTableReport {
        // The table's format and layout are its first structured file's (or it is a files
        // table); files that differ are reported with the reason, and fail queries on the
        // table naming them.
        let format = TableFormat::of_table(metas.iter().filter_map(|m| m.location.extension()))
            .unwrap_or(TableFormat::Parquet);
        if format == TableFormat::Files {
            return files_table(table, metas);
        }
        let first_extension = metas
            .iter()
            .filter_map(|m| m.location.extension())
            .find(|e| TableFormat::of_extension(e).is_some())
            .map(str::to_string);
        let mut partition_columns: Option<Vec<String>> = None;
        let mut schema: Option<SchemaRef> = None;
        let mut files = Vec::new();
        for meta in metas {
            let Some(extension) = meta.location.extension().map(str::to_string) else {
                continue;
            };
            if TableFormat::of_extension(&extension).is_none() {
                // Not a data file of its format (a README, a checksum): not part of it.
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
                modified_micros: meta.last_modified.timestamp_micros(),
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
            match partition_values(below_run_folder(relative)) {
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
        let schema = match format.file_format() {
            Some(reader) => reader
                .infer_schema(state, store, std::slice::from_ref(meta))
                .await
                .map_err(|e| e.to_string()),
            None => Err(format!("a {} file has no schema to infer", format.name())),
        };
        Described {
            size: meta.size,
            modified: meta.last_modified.timestamp_micros(),
            rows,
            fingerprint,
            schema,
        }
    }
}

/// A files table: one row per file it knows the kind of, at any depth below the folder;
/// nothing needs reading to describe it.
fn files_table(table: &str, metas: Vec<ObjectMeta>) -> SiteTableReport {
    let files = metas
        .into_iter()
        .filter(|m| m.location.extension().is_some_and(files::is_file_kind))
        .map(|meta| SiteFile {
            path: meta.location.to_string(),
            size_bytes: meta.size,
            rows: 1,
            error: None,
            fingerprint: String::new(),
            partition_values: Vec::new(),
            modified_micros: meta.last_modified.timestamp_micros(),
        })
        .collect();
    SiteTableReport {
        name: table.to_string(),
        schema: files::table_schema().as_ref().clone(),
        files,
        format: files::FORMAT_NAME.to_string(),
        partition_columns: Vec::new(),
    }
}

/// The files a committed run's manifest lists (paths from the data's root).
async fn read_manifest(
    store: &Arc<dyn ObjectStore>,
    location: &StorePath,
) -> std::result::Result<HashSet<String>, String> {
    let bytes = store
        .get(location)
        .await
        .map_err(|e| e.to_string())?
        .bytes()
        .await
        .map_err(|e| e.to_string())?;
    let manifest: SiteManifest =
        serde_json::from_slice(&bytes).map_err(|e| format!("{location}: {e}"))?;
    Ok(manifest.files.into_iter().map(|f| f.file).collect())
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::worker::site_data::{DataLocation, StoreLimits};
    use datafusion::arrow::array::{Float64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use shoal_operators::sink::staging::ManifestFile;

    fn write_parquet(path: &std::path::Path, rows: usize) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new(
            "score",
            DataType::Float64,
            false,
        )]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Float64Array::from(vec![0.5; rows]))],
        )
        .unwrap();
        let file = std::fs::File::create(path).unwrap();
        let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
    }

    #[tokio::test]
    async fn a_folder_of_images_is_a_files_table_and_a_readme_stays_out_of_parquet() {
        let dir = tempfile::tempdir().unwrap();
        write_parquet(&dir.path().join("scores/part.parquet"), 2);
        std::fs::write(dir.path().join("scores/README.txt"), b"about").unwrap();
        std::fs::create_dir_all(dir.path().join("scans/2024")).unwrap();
        std::fs::write(dir.path().join("scans/2024/a.png"), b"png").unwrap();
        std::fs::write(dir.path().join("scans/b.JPG"), b"jpeg!").unwrap();
        std::fs::write(dir.path().join("scans/index.db"), b"not a row").unwrap();
        let data = SiteData::open(
            &DataLocation::Local(dir.path().to_path_buf()),
            StoreLimits::default(),
        )
        .unwrap();
        let tables = Describer::default().describe(&data).await.unwrap();
        let scans = tables.iter().find(|t| t.name == "scans").unwrap();
        assert_eq!(scans.format, "files");
        let files: Vec<(&str, u64, u64)> = scans
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.size_bytes, f.rows))
            .collect();
        assert_eq!(files, [("scans/2024/a.png", 3, 1), ("scans/b.JPG", 5, 1)]);
        assert!(scans.files.iter().all(|f| f.modified_micros > 0));
        assert_eq!(&scans.schema, files::table_schema().as_ref());
        let scores = tables.iter().find(|t| t.name == "scores").unwrap();
        assert_eq!(scores.format, "parquet");
        assert_eq!(scores.files.len(), 1);
    }

    #[tokio::test]
    async fn only_the_files_of_committed_sink_runs_are_a_table() {
        let dir = tempfile::tempdir().unwrap();
        write_parquet(&dir.path().join("scores/run-done/part-a.parquet"), 3);
        // Uploaded before its run's commit, or left by a retried partition: never read.
        write_parquet(&dir.path().join("scores/run-done/part-stray.parquet"), 5);
        write_parquet(&dir.path().join("scores/run-writing/part-b.parquet"), 7);
        let manifest = SiteManifest {
            run_id: "done".into(),
            path: "scores".into(),
            files: vec![ManifestFile {
                site: "s".into(),
                file: "scores/run-done/part-a.parquet".into(),
                rows: 3,
                bytes: 0,
                sha256: String::new(),
            }],
            inputs: Vec::new(),
        };
        std::fs::write(
            dir.path().join("scores/run-done").join(MANIFEST_FILE),
            serde_json::to_vec(&manifest).unwrap(),
        )
        .unwrap();
        let data = SiteData::open(
            &DataLocation::Local(dir.path().to_path_buf()),
            StoreLimits::default(),
        )
        .unwrap();
        let describer = Describer::default();
        let tables = describer.describe(&data).await.unwrap();
        let files: Vec<(&str, u64, bool)> = tables[0]
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.rows, f.error.is_none()))
            .collect();
        assert_eq!(files, [("scores/run-done/part-a.parquet", 3, true)]);
        assert!(tables[0].partition_columns.is_empty());
        // The writing run commits: its files join the table at the next listing.
        let second = SiteManifest {
            run_id: "writing".into(),
            files: vec![ManifestFile {
                file: "scores/run-writing/part-b.parquet".into(),
                rows: 7,
                ..manifest.files[0].clone()
            }],
            ..manifest
        };
        std::fs::write(
            dir.path().join("scores/run-writing").join(MANIFEST_FILE),
            serde_json::to_vec(&second).unwrap(),
        )
        .unwrap();
        let tables = describer.describe(&data).await.unwrap();
        let rows: u64 = tables[0].files.iter().map(|f| f.rows).sum();
        assert_eq!((tables[0].files.len(), rows), (2, 10));
    }
}
