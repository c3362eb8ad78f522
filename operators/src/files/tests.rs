#![allow(clippy::unwrap_used)]
use super::*;
use crate::codec::ShoalCodec;
use datafusion::arrow::array::{Array, BinaryArray};
use datafusion::physical_plan::collect;
use datafusion::prelude::SessionContext;
use datafusion_proto::physical_plan::AsExecutionPlan;
use datafusion_proto::protobuf::PhysicalPlanNode;

/// Three files in a temporary folder, listed as a files table at `file:///`.
fn listed(dir: &std::path::Path) -> Vec<FileEntry> {
    let files: [(&str, &[u8]); 3] = [
        ("a.png", b"first"),
        ("b/c 1%.jpg", b"second!"),
        ("d.wav", b""),
    ];
    files
        .iter()
        .enumerate()
        .map(|(i, (path, bytes))| {
            let file = dir.join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, bytes).unwrap();
            FileEntry {
                location: object_store::path::Path::from_absolute_path(&file)
                    .unwrap()
                    .to_string(),
                path: path.to_string(),
                size: bytes.len() as u64,
                modified_micros: 1_700_000_000_000_000 + i as i64,
            }
        })
        .collect()
}

/// Every partition's batches, in partition order (a plain `collect` interleaves
/// partitions in whichever order they finish).
async fn rows(plan: Arc<dyn ExecutionPlan>) -> Vec<RecordBatch> {
    datafusion::physical_plan::collect_partitioned(plan, SessionContext::new().task_ctx())
        .await
        .unwrap()
        .into_iter()
        .flatten()
        .collect()
}

#[tokio::test]
async fn each_file_is_a_row_and_a_partitions_files_come_in_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let entries = listed(dir.path());
    let plan = scan("file:///", spread(entries, 1), None, None).unwrap();
    let batches = rows(plan).await;
    assert_eq!(batches.len(), 1, "{batches:?}");
    let batch = &batches[0];
    assert_eq!(batch.schema(), table_schema());
    let paths = batch
        .column(0)
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    let content = batch
        .column(3)
        .as_any()
        .downcast_ref::<BinaryArray>()
        .unwrap();
    let sizes = batch
        .column(1)
        .as_any()
        .downcast_ref::<UInt64Array>()
        .unwrap();
    assert_eq!(
        paths.iter().flatten().collect::<Vec<_>>(),
        ["a.png", "b/c 1%.jpg", "d.wav"]
    );
    assert_eq!(content.value(1), b"second!");
    assert_eq!(sizes.values().to_vec(), [5, 7, 0]);
}

#[tokio::test]
async fn a_scan_without_content_opens_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let entries = listed(dir.path());
    // Gone since the listing: reading it would fail.
    std::fs::remove_file(dir.path().join("a.png")).unwrap();
    let plan = scan(
        "file:///",
        spread(entries.clone(), 2),
        Some(&vec![2, 0]),
        None,
    )
    .unwrap();
    let batches = rows(plan).await;
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(total, 3);
    assert_eq!(batches[0].schema().field(0).name(), MODIFIED);
    assert_eq!(batches[0].schema().field(1).name(), PATH);
    let plan = scan("file:///", spread(entries, 1), Some(&vec![3]), None).unwrap();
    let err = collect(plan, SessionContext::new().task_ctx())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("a.png"), "{err}");
}

#[tokio::test]
async fn a_scan_travels_whole_through_the_codec() {
    let dir = tempfile::tempdir().unwrap();
    let entries = listed(dir.path());
    let codec = ShoalCodec::default();
    let round_trip = |plan: &Arc<dyn ExecutionPlan>| {
        let node = PhysicalPlanNode::try_from_physical_plan(plan.clone(), &codec).unwrap();
        node.try_into_physical_plan(&SessionContext::new().task_ctx(), &codec)
            .unwrap()
    };
    let show = |p: &Arc<dyn ExecutionPlan>| {
        datafusion::physical_plan::displayable(p.as_ref())
            .indent(true)
            .to_string()
    };
    // The limit travels (which partitions' rows fill a limit over several is not fixed, so
    // the rows are compared without one).
    let limited = scan(
        "file:///",
        spread(entries.clone(), 2),
        Some(&vec![3, 0]),
        Some(2),
    )
    .unwrap();
    assert_eq!(show(&round_trip(&limited)), show(&limited));
    let plan = scan("file:///", spread(entries, 2), Some(&vec![3, 0]), None).unwrap();
    let back = round_trip(&plan);
    assert_eq!(show(&back), show(&plan));
    // DataFusion's partitions may take each other's files, so rows are compared by path.
    let by_path = |batches: Vec<RecordBatch>| {
        let mut rows: Vec<(String, Vec<u8>)> = batches
            .iter()
            .flat_map(|b| {
                let content = b.column(0).as_any().downcast_ref::<BinaryArray>().unwrap();
                let paths = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
                (0..b.num_rows())
                    .map(|i| (paths.value(i).to_string(), content.value(i).to_vec()))
                    .collect::<Vec<_>>()
            })
            .collect();
        rows.sort();
        rows
    };
    let expected = by_path(rows(plan).await);
    assert_eq!(expected.len(), 3);
    assert_eq!(by_path(rows(back).await), expected);
}

#[tokio::test]
async fn content_gathered_into_a_batch_counts_against_the_statements_memory() {
    use datafusion::execution::memory_pool::GreedyMemoryPool;
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    let dir = tempfile::tempdir().unwrap();
    let entries: Vec<FileEntry> = (0..3)
        .map(|i| {
            let file = dir.path().join(format!("{i}.png"));
            std::fs::write(&file, vec![7u8; 1 << 20]).unwrap();
            FileEntry {
                location: object_store::path::Path::from_absolute_path(&file)
                    .unwrap()
                    .to_string(),
                path: format!("{i}.png"),
                size: 1 << 20,
                modified_micros: 0,
            }
        })
        .collect();
    let plan = scan("file:///", spread(entries.clone(), 1), None, None).unwrap();
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(GreedyMemoryPool::new(2 << 20)))
        .build_arc()
        .unwrap();
    let ctx = SessionContext::new_with_config_rt(Default::default(), runtime);
    let err = collect(plan.clone(), ctx.task_ctx())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Resources exhausted") && err.contains("FileBatchesExec"),
        "{err}"
    );
    // With room for them, the same files are read (a new plan: a scan's partitions share
    // one queue of files, which a run uses up).
    let plan = scan("file:///", spread(entries, 1), None, None).unwrap();
    let batches = collect(plan, SessionContext::new().task_ctx())
        .await
        .unwrap();
    assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 3);
}
