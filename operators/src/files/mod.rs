//! Files as tables: a folder of images, recordings or documents is a table of one row per
//! file, `path` (below the table folder), `size` (bytes), `modified` (UTC) and `content`
//! (the bytes, read only when a statement uses the column).
//!
//! ```text
//!  FileBatchesExec           one batch of many files (rows, and at most 64 MiB of content)
//!        │
//!  DataSourceExec            DataFusion's file scan: groups of files, locality, limits
//!   └─ FilesSource           one row per file; `content` is the only column read from it,
//!                            path/size/modified arrive as the file's partition values
//! ```
//!
//! Why partition values: the listing already knows a file's path, size and time, so a
//! statement that never names `content` opens no file at all, and a filter on `path`
//! prunes files before any task is planned, the same way Hive partition folders do.
//! Why a batching node: DataFusion opens one file at a time and each file is one row, so
//! without it every image would reach `image_tensor` and `predict` as a batch of one.

mod batches;
pub mod prune;
mod source;
pub mod wire;

pub use batches::FileBatchesExec;
pub use source::FilesSource;

use datafusion::arrow::array::{
    ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef, TimeUnit};
use datafusion::common::{Result, ScalarValue};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::physical_plan::ExecutionPlan;
use std::sync::Arc;

/// The name a table report carries for a files table.
pub const FORMAT_NAME: &str = "files";

/// The largest file whose `content` a statement may read: the bytes are held in memory
/// while the row is processed, and a file this large is not an image or a recording.
pub const MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// How much content one batch gathers before it is passed on: enough files for a model
/// run, little enough that a few batches in flight per task stay small.
pub const BATCH_CONTENT_BYTES: usize = 64 * 1024 * 1024;

/// The extensions of files that make a folder a files table: images, audio, video,
/// documents and text. Newline-delimited JSON (`.json`) stays a structured table.
const EXTENSIONS: &[&str] = &[
    // images
    "jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "ico", "pnm", "ppm", "pgm",
    "qoi", // audio
    "wav", "flac", "mp3", "ogg", "oga", "opus", "m4a", "aac", "aiff", "aif", // video
    "mp4", "mov", "mkv", "webm", "avi", // documents and text
    "txt", "md", "pdf", "html", "htm", "xml", "rtf", "doc", "docx", "log", "eml",
];

/// Whether a file with this extension belongs to a files table.
pub fn is_file_kind(extension: &str) -> bool {
    let lower = extension.to_ascii_lowercase();
    EXTENSIONS.contains(&lower.as_str())
}

pub const PATH: &str = "path";
pub const SIZE: &str = "size";
pub const MODIFIED: &str = "modified";
pub const CONTENT: &str = "content";

/// A files table's columns, in the order a user sees them.
pub fn table_schema() -> SchemaRef {
    let mut fields = listing_fields();
    fields.push(content_field());
    Arc::new(Schema::new(fields))
}

/// The columns the listing knows without opening a file.
fn listing_fields() -> Vec<FieldRef> {
    vec![
        Arc::new(Field::new(PATH, DataType::Utf8, false)),
        Arc::new(Field::new(SIZE, DataType::UInt64, false)),
        Arc::new(Field::new(
            MODIFIED,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        )),
    ]
}

fn content_field() -> FieldRef {
    Arc::new(Field::new(CONTENT, DataType::Binary, false))
}

/// The scan's own column order: what is read from the file (`content`), then the listing's
/// columns as partition values, which DataFusion always puts last.
fn source_table_schema() -> TableSchema {
    TableSchema::builder(Arc::new(Schema::new(vec![content_field()])))
        .with_table_partition_cols(listing_fields())
        .build()
}

/// Where a column of [`table_schema`] is in the scan's order.
fn source_index(table_index: usize) -> usize {
    if table_index == 3 { 0 } else { table_index + 1 }
}

/// One file of a files table, as listed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FileEntry {
    /// Its location in the object store the scan reads from.
    pub location: String,
    /// Its path below the table folder: what the `path` column shows.
    pub path: String,
    pub size: u64,
    /// Modification time, in microseconds since the epoch (UTC).
    pub modified_micros: i64,
}

impl FileEntry {
    fn partitioned_file(&self) -> PartitionedFile {
        listed_file(&self.location, self.size).with_partition_values(vec![
            ScalarValue::Utf8(Some(self.path.clone())),
            ScalarValue::UInt64(Some(self.size)),
            ScalarValue::TimestampMicrosecond(Some(self.modified_micros), Some("UTC".into())),
        ])
    }
}

/// A file to scan, from its location as an object store listed it (already
/// percent-encoded). `PartitionedFile::new` would encode it again, and a file named
/// `IMG 1%.jpg` would then be looked for as `IMG 1%25.jpg`.
pub fn listed_file(location: &str, size: u64) -> PartitionedFile {
    let mut file = PartitionedFile::new(location, size);
    if let Ok(parsed) = object_store::path::Path::parse(location) {
        file.object_meta.location = parsed;
    }
    file
}

/// A scan of `groups` of files in the store at `store_url`: `projection` and `limit` as a
/// table provider receives them (indices into [`table_schema`]).
pub fn scan(
    store_url: &str,
    groups: Vec<Vec<FileEntry>>,
    projection: Option<&Vec<usize>>,
    limit: Option<usize>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let projection: Vec<usize> = match projection {
        Some(columns) => columns.iter().map(|i| source_index(*i)).collect(),
        None => (0..table_schema().fields().len())
            .map(source_index)
            .collect(),
    };
    let groups = groups
        .into_iter()
        .map(|files| FileGroup::new(files.iter().map(FileEntry::partitioned_file).collect()))
        .collect();
    Ok(Arc::new(FileBatchesExec::new(files_scan(
        store_url, groups, projection, limit,
    )?)))
}

/// The bare scan over built groups, with `projection` in the scan's own column order: also
/// how the codec rebuilds one on a worker.
fn files_scan(
    store_url: &str,
    groups: Vec<FileGroup>,
    projection: Vec<usize>,
    limit: Option<usize>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let source = Arc::new(FilesSource::new(source_table_schema()));
    let config = FileScanConfigBuilder::new(ObjectStoreUrl::parse(store_url)?, source)
        .with_file_groups(groups)
        .with_limit(limit)
        .with_projection_indices(Some(projection))?
        .build();
    Ok(DataSourceExec::from_data_source(config))
}

/// One row per entry with the listing's columns (`path`, `size`, `modified`): what a
/// filter on them is evaluated over to skip files before planning.
pub fn listing_batch(entries: &[&FileEntry]) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            entries.iter().map(|e| e.path.as_str()),
        )),
        Arc::new(UInt64Array::from_iter_values(
            entries.iter().map(|e| e.size),
        )),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(entries.iter().map(|e| e.modified_micros))
                .with_timezone("UTC"),
        ),
    ];
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(listing_fields())),
        columns,
    )?)
}

/// The columns of [`table_schema`] a filter may read to prune files.
pub const LISTING_COLUMNS: [&str; 3] = [PATH, SIZE, MODIFIED];

/// `entries` spread over `groups` groups of files (round robin, in order), so that a
/// scan's partitions share the files.
pub fn spread<T>(entries: Vec<T>, groups: usize) -> Vec<Vec<T>> {
    let groups = groups.clamp(1, entries.len().max(1));
    let mut spread: Vec<Vec<T>> = (0..groups).map(|_| Vec::new()).collect();
    for (i, entry) in entries.into_iter().enumerate() {
        spread[i % groups].push(entry);
    }
    spread
}

#[cfg(test)]
mod tests;
