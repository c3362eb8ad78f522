//! A files scan as it travels to a worker inside a plan: its store, its groups of files
//! (with the listing's values), its columns and its limit. The source's table schema is
//! fixed, so it is not sent.

use super::{FileEntry, FilesSource, files_scan};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig};
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_plan::ExecutionPlan;
use std::sync::Arc;

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct EncodedFilesScan {
    store_url: String,
    groups: Vec<Vec<FileEntry>>,
    /// Output columns, as indices into the scan's own column order.
    projection: Vec<usize>,
    limit: Option<usize>,
}

/// The scan `plan` is, if it is a files scan.
pub fn encode(plan: &Arc<dyn ExecutionPlan>) -> Option<Result<EncodedFilesScan>> {
    let config = plan
        .downcast_ref::<DataSourceExec>()?
        .data_source()
        .downcast_ref::<FileScanConfig>()?;
    let source = config.file_source().downcast_ref::<FilesSource>()?;
    Some(encode_config(config, source))
}

fn encode_config(config: &FileScanConfig, source: &FilesSource) -> Result<EncodedFilesScan> {
    let groups = config
        .file_groups
        .iter()
        .map(|group| group.files().iter().map(entry).collect::<Result<Vec<_>>>())
        .collect::<Result<_>>()?;
    Ok(EncodedFilesScan {
        store_url: config.object_store_url.to_string(),
        groups,
        projection: source.projected_columns(),
        limit: config.limit,
    })
}

/// A listed file back from its scan: its partition values are the listing's columns.
fn entry(file: &datafusion::datasource::listing::PartitionedFile) -> Result<FileEntry> {
    match file.partition_values.as_slice() {
        [
            ScalarValue::Utf8(Some(path)),
            ScalarValue::UInt64(Some(size)),
            ScalarValue::TimestampMicrosecond(Some(modified), _),
        ] => Ok(FileEntry {
            location: file.object_meta.location.to_string(),
            path: path.clone(),
            size: *size,
            modified_micros: *modified,
        }),
        other => exec_err!(
            "a files scan holds '{}' with listing values {other:?}",
            file.object_meta.location
        ),
    }
}

/// The scan back on the receiving side.
pub fn decode(encoded: EncodedFilesScan) -> Result<Arc<dyn ExecutionPlan>> {
    let groups = encoded
        .groups
        .into_iter()
        .map(|files| FileGroup::new(files.iter().map(FileEntry::partitioned_file).collect()))
        .collect();
    files_scan(
        &encoded.store_url,
        groups,
        encoded.projection,
        encoded.limit,
    )
}
