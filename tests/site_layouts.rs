//! What a site may hold besides flat Parquet folders: CSV, newline-delimited JSON and Arrow
//! IPC tables, Hive-style partition folders (columns of the table, pruned by filters), and
//! files added or removed while the worker runs (picked up by its re-listing), and Parquet
//! tables of images (binary columns) turned into tensors where they lie. Each answer
//! is compared with single-node DataFusion over the same folders (`shoal_sql::local_context`,
//! which reads them by the same layout rules).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use datafusion::arrow::array::RecordBatch;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use shoal_engine::{CoordinatorOptions, EmbeddedCluster, SitePolicy};
use shoal_tests::{assert_same_rows, models_dir, registry, to_rows, tpch_sites};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The first `files` lineitem files of the shared test data, as batches.
async fn lineitem_part(site: usize, file: usize) -> Vec<RecordBatch> {
    let path = tpch_sites()[site].join(format!("lineitem/part-{}.parquet", site * 2 + file + 1));
    let ctx = SessionContext::new();
    ctx.read_parquet(path.display().to_string(), ParquetReadOptions::default())
        .await
        .unwrap()
        .select_columns(&["l_orderkey", "l_linenumber", "l_returnflag", "l_shipmode"])
        .unwrap()
        .collect()
        .await
        .unwrap()
}

fn write_as(path: &Path, batches: &[RecordBatch]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let schema = batches[0].schema();
    match path.extension().and_then(|e| e.to_str()).unwrap() {
        "csv" => {
            let mut writer = datafusion::arrow::csv::Writer::new(file);
            for batch in batches {
                writer.write(batch).unwrap();
            }
        }
        "json" => {
            let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(file);
            for batch in batches {
                writer.write(batch).unwrap();
            }
            writer.finish().unwrap();
        }
        "arrow" => {
            let mut writer =
                datafusion::arrow::ipc::writer::FileWriter::try_new(file, &schema).unwrap();
            for batch in batches {
                writer.write(batch).unwrap();
            }
            writer.finish().unwrap();
        }
        "parquet" => {
            let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
            for batch in batches {
                writer.write(batch).unwrap();
            }
            writer.close().unwrap();
        }
        other => panic!("no writer for {other}"),
    }
}

async fn cluster(sites: &[PathBuf], rescan: Duration) -> EmbeddedCluster {
    let options = CoordinatorOptions {
        models_dir: Some(models_dir()),
        ..Default::default()
    };
    // These tables are about layouts, not egress: the sites release rows.
    let policy = SitePolicy::parse("[defaults]\negress = \"rows\"\n", "layout tests").unwrap();
    let mut cluster = EmbeddedCluster::start_with_policy(options, &[], policy)
        .await
        .unwrap();
    for (i, dir) in sites.iter().enumerate() {
        cluster
            .add_worker_with(format!("site-{}", i + 1), dir.clone(), |o| {
                o.rescan_interval = rescan
            })
            .await
            .unwrap();
    }
    cluster
}

async fn single_node(sites: &[PathBuf], sql: &str) -> Vec<Vec<String>> {
    let dirs: Vec<&Path> = sites.iter().map(PathBuf::as_path).collect();
    let ctx = shoal_sql::local_context(&dirs, registry()).await.unwrap();
    to_rows(&ctx.sql(sql).await.unwrap().collect().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_json_and_arrow_tables_answer_as_single_node() {
    let dir = tempfile::tempdir().unwrap();
    let sites: Vec<PathBuf> = (1..=2)
        .map(|i| dir.path().join(format!("site-{i}")))
        .collect();
    for (i, site) in sites.iter().enumerate() {
        let batches = lineitem_part(i, 0).await;
        for format in ["csv", "json", "arrow"] {
            write_as(
                &site.join(format!("items_{format}/part-{i}.{format}")),
                &batches,
            );
        }
    }
    let cluster = cluster(&sites, Duration::ZERO).await;
    for format in ["csv", "json", "arrow"] {
        let sql = format!(
            "SELECT l_returnflag, l_shipmode, count(*) AS n, sum(l_orderkey) AS k, \
             sum(l_linenumber) AS l FROM items_{format} \
             GROUP BY l_returnflag, l_shipmode ORDER BY l_returnflag, l_shipmode"
        );
        let out = cluster.sql(&sql).await.unwrap();
        assert!(out.report.distributed, "{format} read on the sites");
        assert_same_rows(
            &sql,
            &single_node(&sites, &sql).await,
            &to_rows(&out.batches),
        );
    }
    cluster.stop().await;
}

/// A PNG of `width` x `height` whose every pixel is `rgb`.
fn png(width: u32, height: u32, rgb: [u8; 3]) -> Vec<u8> {
    let image = image::RgbImage::from_pixel(width, height, image::Rgb(rgb));
    let mut bytes = std::io::Cursor::new(Vec::new());
    image.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
    bytes.into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_tables_of_images_become_tensors_on_the_sites_as_on_one_node() {
    use datafusion::arrow::array::{BinaryArray, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let sites: Vec<PathBuf> = (1..=2)
        .map(|i| dir.path().join(format!("site-{i}")))
        .collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("content", DataType::Binary, true),
    ]));
    for (i, site) in sites.iter().enumerate() {
        let base = 10 * i as i64;
        let images = [
            Some(png(6, 4, [255, 0, 0])),
            Some(png(3, 5, [0, 128, 255])),
            // A scan cut short, and a row without a file.
            Some(png(4, 4, [9, 9, 9])[..20].to_vec()),
            None,
        ];
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(base..base + 4)),
                Arc::new(BinaryArray::from_iter(images)),
            ],
        )
        .unwrap();
        write_as(&site.join(format!("scans/part-{i}.parquet")), &[batch]);
    }
    let cluster = cluster(&sites, Duration::ZERO).await;
    let sql = "SELECT id, arrow_cast(image_tensor(content, 2, 2, 'nchw', 0.5, 0.5, 0.5, \
               0.25, 0.25, 0.25), 'List(Float32)') AS t, image_error(content) IS NULL AS ok \
               FROM scans ORDER BY id";
    let out = cluster.sql(sql).await.unwrap();
    assert!(out.report.distributed, "decoded on the sites");
    let rows = to_rows(&out.batches);
    assert_same_rows(sql, &single_node(&sites, sql).await, &rows);
    // A red image: R = (1 - 0.5) / 0.25 = 2, G = B = (0 - 0.5) / 0.25 = -2.
    assert_eq!(
        rows[0][1],
        "[2.0, 2.0, 2.0, 2.0, -2.0, -2.0, -2.0, -2.0, -2.0, -2.0, -2.0, -2.0]"
    );
    let valid: Vec<&str> = rows.iter().map(|r| r[2].as_str()).collect();
    assert_eq!(
        valid,
        [
            "true", "true", "false", "true", "true", "true", "false", "true"
        ]
    );
    // The tensor column says what it is: Arrow's fixed-shape tensor, [3, 2, 2] per row.
    let out = cluster
        .sql("SELECT image_tensor(content, 2, 2, 'nchw') AS t FROM scans")
        .await
        .unwrap();
    let schema = out.batches[0].schema();
    let metadata = schema.field(0).metadata();
    assert_eq!(
        metadata.get("ARROW:extension:name").map(String::as_str),
        Some("arrow.fixed_shape_tensor")
    );
    assert_eq!(
        metadata.get("ARROW:extension:metadata").map(String::as_str),
        Some("{\"shape\":[3,2,2]}")
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hive_partition_folders_are_columns_and_filters_on_them_skip_files() {
    let dir = tempfile::tempdir().unwrap();
    let sites: Vec<PathBuf> = (1..=2)
        .map(|i| dir.path().join(format!("site-{i}")))
        .collect();
    // site-1: year=2023 and year=2024; site-2: year=2024 and year=2025, two months each.
    for (i, site) in sites.iter().enumerate() {
        for (j, year) in [2023 + i, 2024 + i].into_iter().enumerate() {
            let batches = lineitem_part(i, j).await;
            for month in ["01", "02"] {
                write_as(
                    &site.join(format!("sales/year={year}/month={month}/part.parquet")),
                    &batches,
                );
            }
        }
        // Not part of the table: a marker file and a hidden folder.
        std::fs::write(site.join("sales/_SUCCESS"), b"").unwrap();
    }
    let cluster = cluster(&sites, Duration::ZERO).await;
    let grouped = "SELECT year, month, count(*) AS n, sum(l_orderkey) AS k FROM sales \
                   GROUP BY year, month ORDER BY year, month";
    let out = cluster.sql(grouped).await.unwrap();
    assert_same_rows(
        grouped,
        &single_node(&sites, grouped).await,
        &to_rows(&out.batches),
    );
    let all_bytes = cluster
        .sql("SELECT count(*) AS n, sum(l_linenumber) AS l FROM sales")
        .await
        .unwrap()
        .report
        .bytes_scanned;

    let filtered = "SELECT count(*) AS n, sum(l_linenumber) AS l FROM sales \
                    WHERE year = '2024' AND month = '02'";
    let out = cluster.sql(filtered).await.unwrap();
    assert_same_rows(
        filtered,
        &single_node(&sites, filtered).await,
        &to_rows(&out.batches),
    );
    // Two files of eight match: the others are never opened.
    assert!(
        out.report.bytes_scanned * 3 < all_bytes,
        "pruned scan read {} of {all_bytes} bytes",
        out.report.bytes_scanned
    );
    // A filter on a partition column and a data column still answers exactly.
    let mixed = "SELECT count(*) AS n FROM sales WHERE year > '2023' AND l_linenumber > 3";
    let out = cluster.sql(mixed).await.unwrap();
    assert_same_rows(
        mixed,
        &single_node(&sites, mixed).await,
        &to_rows(&out.batches),
    );
    cluster.stop().await;
}

/// Polls `sql` until it answers `expected` or `timeout` passes; the last answer.
async fn wait_for(
    cluster: &EmbeddedCluster,
    sql: &str,
    expected: &[Vec<String>],
    timeout: Duration,
) -> Vec<Vec<String>> {
    let deadline = Instant::now() + timeout;
    loop {
        // Until the listing catches up, the table may be unknown or name a removed file.
        let rows = match cluster.sql(sql).await {
            Ok(out) => to_rows(&out.batches),
            Err(e) => vec![vec![e.to_string()]],
        };
        if rows == expected || Instant::now() > deadline {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_added_and_removed_are_served_without_restarting_the_worker() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site-1");
    let first = lineitem_part(0, 0).await;
    let second = lineitem_part(0, 1).await;
    let rows = |batches: &[RecordBatch]| batches.iter().map(|b| b.num_rows()).sum::<usize>();
    write_as(&site.join("items/a.parquet"), &first);
    let cluster = cluster(std::slice::from_ref(&site), Duration::from_millis(200)).await;
    let count = "SELECT count(*) AS n FROM items";
    let n = |n: usize| vec![vec![n.to_string()]];
    assert_eq!(
        to_rows(&cluster.sql(count).await.unwrap().batches),
        n(rows(&first))
    );

    let started = Instant::now();
    write_as(&site.join("items/b.parquet"), &second);
    let both = n(rows(&first) + rows(&second));
    assert_eq!(
        wait_for(&cluster, count, &both, Duration::from_secs(20)).await,
        both
    );
    eprintln!(
        "FIGURE a new file served {} ms after it was written",
        started.elapsed().as_millis()
    );

    // A new table appears as well.
    write_as(&site.join("more/c.parquet"), &second);
    let more = n(rows(&second));
    assert_eq!(
        wait_for(
            &cluster,
            "SELECT count(*) AS n FROM more",
            &more,
            Duration::from_secs(20)
        )
        .await,
        more
    );

    std::fs::remove_file(site.join("items/a.parquet")).unwrap();
    let after = n(rows(&second));
    assert_eq!(
        wait_for(&cluster, count, &after, Duration::from_secs(20)).await,
        after
    );
    cluster.stop().await;
}
