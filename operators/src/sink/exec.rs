//! The physical sink: writes each input partition to one staged Parquet file on the worker
//! running it (uploaded to the site's data store for an `object_store` sink), and yields
//! one manifest row per file. Nothing becomes visible until the coordinator commits the run
//! (see [`super::staging`] and [`super::store_commit`]).

use super::staging::{SinkTarget, check_run_id, check_sink_path, staging_dir};
use super::store_commit;
use datafusion::arrow::array::{RecordBatch, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{Result, exec_err};
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;

/// Rows per row group in files a sink writes.
const SINK_ROW_GROUP_ROWS: usize = 128 * 1024;
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties,
};
use futures::StreamExt;
use object_store::ObjectStore;
use object_store::path::Path as StorePath;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where this process writes: its site name, output folder and data store (workers only).
#[derive(Debug, Clone)]
pub struct SinkSite {
    pub site: String,
    /// `local_parquet` sinks write here; `object_store` sinks stage their files here.
    pub output_root: PathBuf,
    /// The site's data (`--data`), where `object_store` sinks commit.
    pub data_store: Arc<dyn ObjectStore>,
}

/// The rows a sink returns: one per file written.
pub fn manifest_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("site", DataType::Utf8, false),
        Field::new("file", DataType::Utf8, false),
        Field::new("rows", DataType::UInt64, false),
        Field::new("bytes", DataType::UInt64, false),
        Field::new("sha256", DataType::Utf8, false),
    ]))
}

#[derive(Debug)]
pub struct ParquetSinkExec {
    input: Arc<dyn ExecutionPlan>,
    path: String,
    run_id: String,
    target: SinkTarget,
    /// None on the coordinator, which only plans and encodes the sink.
    site: Option<SinkSite>,
    properties: Arc<PlanProperties>,
}

impl ParquetSinkExec {
    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        path: String,
        run_id: String,
        target: SinkTarget,
        site: Option<SinkSite>,
    ) -> Result<Self> {
        if let Err(e) = check_sink_path(&path).and_then(|_| check_run_id(&run_id)) {
            return exec_err!("{e}");
        }
        let partitions = input.output_partitioning().partition_count();
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(manifest_schema()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Ok(Self {
            input,
            path,
            run_id,
            target,
            site,
            properties,
        })
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    pub fn target(&self) -> SinkTarget {
        self.target
    }

    pub fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }
}

impl DisplayAs for ParquetSinkExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "ParquetSinkExec: path={}, run={}",
            self.path, self.run_id
        )?;
        match self.target {
            SinkTarget::OutputFolder => Ok(()),
            SinkTarget::DataStore => write!(f, ", into=site data store"),
        }
    }
}

impl ExecutionPlan for ParquetSinkExec {
    fn name(&self) -> &str {
        "ParquetSinkExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(
            &Arc<dyn datafusion::physical_plan::PhysicalExpr>,
        ) -> Result<datafusion::common::tree_node::TreeNodeRecursion>,
    ) -> Result<datafusion::common::tree_node::TreeNodeRecursion> {
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [input] = <[_; 1]>::try_from(children)
            .map_err(|_| DataFusionError::Internal("ParquetSinkExec has one input".into()))?;
        Ok(Arc::new(Self::new(
            input,
            self.path.clone(),
            self.run_id.clone(),
            self.target,
            self.site.clone(),
        )?))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let Some(site) = self.site.clone() else {
            return exec_err!(
                "the {} sink '{}' must run on a worker that holds the data, not on the coordinator",
                self.target.kind_name(),
                self.path
            );
        };
        let input = self.input.execute(partition, context)?;
        let write = sink_partition(
            input,
            site,
            self.target,
            self.path.clone(),
            self.run_id.clone(),
            partition,
        );
        let stream = futures::stream::once(write);
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            manifest_schema(),
            stream,
        )))
    }
}

/// Counts and hashes the bytes as they are written, so the checksum needs no second read.
struct HashingFile {
    file: std::fs::File,
    hasher: Sha256,
    bytes: u64,
}

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos:x}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// One file a partition wrote to its staging folder.
struct StagedFile {
    name: String,
    local: PathBuf,
    rows: u64,
    bytes: u64,
    sha256: String,
}

fn sink_error(site: &SinkSite, target: SinkTarget, message: String) -> DataFusionError {
    DataFusionError::Execution(format!(
        "{} sink on worker '{}': {message}",
        target.kind_name(),
        site.site
    ))
}

/// Writes one input partition and returns its manifest row (none if it had no rows).
async fn sink_partition(
    input: SendableRecordBatchStream,
    site: SinkSite,
    target: SinkTarget,
    path: String,
    run_id: String,
    partition: usize,
) -> Result<RecordBatch> {
    if target == SinkTarget::DataStore {
        refuse_other_data(&site, &path).await?;
    }
    let staging = staging_dir(&site.output_root, &path, &run_id);
    let Some(staged) = write_partition(input, &site, target, &staging, partition).await? else {
        return Ok(RecordBatch::new_empty(manifest_schema()));
    };
    let file = format!("{path}/run-{run_id}/{}", staged.name);
    if target == SinkTarget::DataStore {
        store_commit::upload(
            site.data_store.clone(),
            &staged.local,
            &StorePath::from(file.as_str()),
        )
        .await
        .map_err(|e| sink_error(&site, target, e.to_string()))?;
        std::fs::remove_file(&staged.local).map_err(|e| {
            sink_error(
                &site,
                target,
                format!("removing {}: {e}", staged.local.display()),
            )
        })?;
    }
    Ok(RecordBatch::try_new(
        manifest_schema(),
        vec![
            Arc::new(StringArray::from(vec![site.site.clone()])),
            Arc::new(StringArray::from(vec![file])),
            Arc::new(UInt64Array::from(vec![staged.rows])),
            Arc::new(UInt64Array::from(vec![staged.bytes])),
            Arc::new(StringArray::from(vec![staged.sha256])),
        ],
    )?)
}

/// An `object_store` sink's folder holds its runs and nothing else: writing into a folder
/// of the site's own data would mix predictions into a source table.
async fn refuse_other_data(site: &SinkSite, path: &str) -> Result<()> {
    let folder = path.split('/').next().unwrap_or(path);
    let listing = site
        .data_store
        .list_with_delimiter(Some(&StorePath::from(folder)))
        .await
        .map_err(|e| {
            sink_error(
                site,
                SinkTarget::DataStore,
                format!("listing {folder}: {e}"),
            )
        })?;
    let names = listing
        .objects
        .iter()
        .map(|o| o.location.filename().unwrap_or_default().to_string())
        .chain(
            listing
                .common_prefixes
                .iter()
                .map(|p| p.filename().unwrap_or_default().to_string()),
        );
    for name in names {
        if !name.starts_with("run-") && !name.starts_with('.') && !name.starts_with('_') {
            return Err(sink_error(
                site,
                SinkTarget::DataStore,
                format!(
                    "the sink path '{folder}' is a folder of the site's own data (it holds \
                     '{name}'): an object_store sink writes only into a folder of its own runs; \
                     choose another path"
                ),
            ));
        }
    }
    Ok(())
}

async fn write_partition(
    mut input: SendableRecordBatchStream,
    site: &SinkSite,
    target: SinkTarget,
    staging: &Path,
    partition: usize,
) -> Result<Option<StagedFile>> {
    let io = |what: &str, path: &Path, e: std::io::Error| {
        sink_error(site, target, format!("{what} {}: {e}", path.display()))
    };
    std::fs::create_dir_all(staging).map_err(|e| io("creating", staging, e))?;
    let name = format!("part-{}-{partition}-{}.parquet", site.site, unique_suffix());
    let path = staging.join(&name);
    let file = std::fs::File::create(&path).map_err(|e| io("creating", &path, e))?;
    // Row groups of 128k rows: the writer buffers a whole row group before it flushes, so
    // this bounds a sink's memory whatever the size of its input (the default is 1M rows).
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(SINK_ROW_GROUP_ROWS))
        .build();
    let sink = HashingFile {
        file,
        hasher: Sha256::new(),
        bytes: 0,
    };
    // Parquet encoding and file IO run on the blocking pool, never on the runtime threads
    // that also carry the worker's network streams and heartbeats.
    let blocking = |e: tokio::task::JoinError| {
        DataFusionError::Execution(format!("writing {}: {e}", path.display()))
    };
    let mut writer = ArrowWriter::try_new(sink, input.schema(), Some(props))?;
    let mut rows = 0u64;
    while let Some(batch) = input.next().await {
        let batch = batch?;
        rows += batch.num_rows() as u64;
        writer = tokio::task::spawn_blocking(move || writer.write(&batch).map(|()| writer))
            .await
            .map_err(blocking)??;
    }
    let sink = tokio::task::spawn_blocking(move || {
        let sink = writer.into_inner()?;
        sink.file.sync_all()?;
        Ok::<_, DataFusionError>(sink)
    })
    .await
    .map_err(blocking)?
    .map_err(|e| io("writing", &path, std::io::Error::other(e.to_string())))?;
    if rows == 0 {
        std::fs::remove_file(&path).map_err(|e| io("removing", &path, e))?;
        return Ok(None);
    }
    Ok(Some(StagedFile {
        name,
        local: path,
        rows,
        bytes: sink.bytes,
        sha256: hex::encode(sink.hasher.finalize()),
    }))
}
