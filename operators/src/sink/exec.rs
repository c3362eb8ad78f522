//! The physical sink: writes each input partition to one staged Parquet file on the worker
//! running it, and yields one manifest row per file. Nothing becomes visible until the
//! coordinator commits the run (see [`super::staging`]).

use super::staging::{check_run_id, check_sink_path, staging_dir};
use datafusion::arrow::array::{RecordBatch, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{Result, exec_err};
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
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

/// Where this process writes: its site name and output folder (workers only).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SinkSite {
    pub site: String,
    pub output_root: PathBuf,
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
pub struct LocalParquetSinkExec {
    input: Arc<dyn ExecutionPlan>,
    path: String,
    run_id: String,
    /// None on the coordinator, which only plans and encodes the sink.
    site: Option<SinkSite>,
    properties: Arc<PlanProperties>,
}

impl LocalParquetSinkExec {
    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        path: String,
        run_id: String,
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

    pub fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }
}

impl DisplayAs for LocalParquetSinkExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "LocalParquetSinkExec: path={}, run={}",
            self.path, self.run_id
        )
    }
}

impl ExecutionPlan for LocalParquetSinkExec {
    fn name(&self) -> &str {
        "LocalParquetSinkExec"
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
        let [input] = <[_; 1]>::try_from(children).map_err(|_| {
            datafusion::error::DataFusionError::Internal(
                "LocalParquetSinkExec has one input".into(),
            )
        })?;
        Ok(Arc::new(Self::new(
            input,
            self.path.clone(),
            self.run_id.clone(),
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
                "the local_parquet sink '{}' must run on a worker that holds the data, not on the coordinator",
                self.path
            );
        };
        let input = self.input.execute(partition, context)?;
        let staging = staging_dir(&site.output_root, &self.path, &self.run_id);
        let committed_prefix = format!("{}/run-{}", self.path, self.run_id);
        let write = write_partition(input, site, staging, committed_prefix, partition);
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

async fn write_partition(
    mut input: SendableRecordBatchStream,
    site: SinkSite,
    staging: PathBuf,
    committed_prefix: String,
    partition: usize,
) -> Result<RecordBatch> {
    let io = |what: &str, path: &std::path::Path, e: std::io::Error| {
        datafusion::error::DataFusionError::Execution(format!(
            "local_parquet sink on worker '{}': {what} {}: {e}",
            site.site,
            path.display()
        ))
    };
    std::fs::create_dir_all(&staging).map_err(|e| io("creating", &staging, e))?;
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
        datafusion::error::DataFusionError::Execution(format!("writing {}: {e}", path.display()))
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
        Ok::<_, datafusion::error::DataFusionError>(sink)
    })
    .await
    .map_err(blocking)?
    .map_err(|e| io("writing", &path, std::io::Error::other(e.to_string())))?;
    if rows == 0 {
        std::fs::remove_file(&path).map_err(|e| io("removing", &path, e))?;
        return Ok(RecordBatch::new_empty(manifest_schema()));
    }
    let sha256 = hex::encode(sink.hasher.finalize());
    Ok(RecordBatch::try_new(
        manifest_schema(),
        vec![
            Arc::new(StringArray::from(vec![site.site.clone()])),
            Arc::new(StringArray::from(vec![format!(
                "{committed_prefix}/{name}"
            )])),
            Arc::new(UInt64Array::from(vec![rows])),
            Arc::new(UInt64Array::from(vec![sink.bytes])),
            Arc::new(StringArray::from(vec![sha256])),
        ],
    )?)
}
