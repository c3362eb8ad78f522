//! Unstructured data where it lies: a real vision model (RapidOCR's text-direction
//! classifier, from its PyPI wheel) classifies text-line images stored on the sites, in one
//! process and on a cluster, and its answers are checked against the truth and against the
//! wheel's own Python pipeline on the same files.
//!
//! The images and the wheel's answers come from `tests/data/make_text_lines.py` (set-up
//! installs the wheel into `.venv`; the fonts are Debian's fonts-dejavu-core).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use shoal_engine::EmbeddedCluster;
use shoal_engine::protocol::PipelineMode;
use shoal_operators::model::DirectoryModels;
use shoal_tests::{
    ROWS_LEAVE, assert_same_rows, pipeline_rows, repo_root, run_pipeline, sites_cluster, to_rows,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

#[path = "unstructured/documents.rs"]
mod documents;
#[path = "unstructured/spectrogram.rs"]
mod spectrogram;

const SITES: usize = 2;
const PER_SITE: usize = 40;

/// Renders the lines and asks the wheel, into `dir`; returns the site folders.
fn text_lines(dir: &Path) -> Vec<PathBuf> {
    let python = repo_root().join(".venv/bin/python");
    let script = repo_root().join("tests/data/make_text_lines.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(dir)
        .args([
            "--sites",
            &SITES.to_string(),
            "--per-site",
            &PER_SITE.to_string(),
        ])
        .output()
        .unwrap_or_else(|e| panic!("{} (run `make setup`): {e}", python.display()));
    assert!(
        out.status.success(),
        "{} failed (run `make setup`):\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    (1..=SITES).map(|i| dir.join(format!("site-{i}"))).collect()
}

/// RapidOCR's classifier input: height 48, width 192, the line at the left, zero after it,
/// values scaled to [-1, 1].
const DIRECTION: &str = "predict_proba('text_direction', image_tensor(content, 48, 192, 'nchw', \
                         0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 'pad'))";

/// Rows of (path, rotated, wheel_180, probability of 180 degrees rounded to 3 places).
fn scored(sql_rows: &[Vec<String>]) -> Vec<(String, bool, bool, f64)> {
    sql_rows
        .iter()
        .map(|r| {
            (
                r[0].clone(),
                r[1] == "true",
                r[2] == "true",
                r[3].parse().unwrap(),
            )
        })
        .collect()
}

fn check_answers(rows: &[(String, bool, bool, f64)]) {
    assert_eq!(rows.len(), SITES * PER_SITE);
    let right = rows
        .iter()
        .filter(|(_, truth, _, p)| (*p > 0.5) == *truth)
        .count();
    let agree = rows
        .iter()
        .filter(|(_, _, wheel, p)| (*p > 0.5) == *wheel)
        .count();
    let wheel_right = rows
        .iter()
        .filter(|(_, truth, wheel, _)| truth == wheel)
        .count();
    let n = rows.len() as f64;
    eprintln!(
        "text direction over {} lines: shoal {:.1}% right, wheel {:.1}% right, agreement {:.1}%",
        rows.len(),
        100.0 * right as f64 / n,
        100.0 * wheel_right as f64 / n,
        100.0 * agree as f64 / n,
    );
    let disagreements: Vec<_> = rows
        .iter()
        .filter(|(_, _, wheel, p)| (*p > 0.5) != *wheel)
        .collect();
    assert!(right as f64 >= 0.9 * n, "accuracy under 90%: {rows:?}");
    assert!(
        agree as f64 >= 0.95 * n,
        "agreement with the wheel under 95%: {disagreements:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_text_lines_are_told_apart_where_they_lie_as_by_the_wheel() {
    let dir = tempfile::tempdir().unwrap();
    let sites = text_lines(dir.path());
    let models = dir.path().join("models");
    let sql = format!(
        "SELECT path, rotated, wheel_180, round({DIRECTION}, 3) AS p180 FROM lines ORDER BY path"
    );

    // One process: DataFusion with shoal's functions over both site folders.
    let dirs: Vec<&Path> = sites.iter().map(PathBuf::as_path).collect();
    let provider = Arc::new(DirectoryModels::load(&models).unwrap());
    let ctx = shoal_sql::local_context(&dirs, provider).await.unwrap();
    let single = to_rows(&ctx.sql(&sql).await.unwrap().collect().await.unwrap());
    check_answers(&scored(&single));

    // The cluster: each site decodes and classifies its own files.
    let cluster = lines_cluster(dir.path(), &sites).await;
    let out = cluster.sql(&sql).await.unwrap();
    assert!(out.report.distributed, "classified on the sites");
    let rows = to_rows(&out.batches);
    assert_same_rows(&sql, &single, &rows);
    check_answers(&scored(&rows));

    // What a site sends back can be just the counts.
    let counts = format!(
        "SELECT rotated, count(*) AS lines, sum(CAST({DIRECTION} > 0.5 AS INT)) AS said_180 \
         FROM lines GROUP BY rotated ORDER BY rotated"
    );
    let out = cluster.sql(&counts).await.unwrap();
    let rows = to_rows(&out.batches);
    let expected = to_rows(&ctx.sql(&counts).await.unwrap().collect().await.unwrap());
    assert_same_rows(&counts, &expected, &rows);
    assert_eq!(rows.len(), 2);
    cluster.stop().await;
}

/// The same images as files (`line_files/<upright|rotated>/...`): a files table, read
/// where it lies, that says what the Parquet table of the same bytes says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_of_image_files_is_a_table_classified_where_it_lies() {
    use datafusion::arrow::datatypes::TimeUnit;
    let dir = tempfile::tempdir().unwrap();
    let sites = text_lines(dir.path());
    // Neither a hidden file nor one of no known kind is a row.
    let thumbs = sites[0].join("line_files/.thumbs");
    std::fs::create_dir_all(&thumbs).unwrap();
    std::fs::write(thumbs.join("x.png"), b"not a row").unwrap();
    std::fs::write(sites[0].join("line_files/index.bin"), b"not a row").unwrap();
    // A file too large to read, in a table of its own (sparse: it costs no disk).
    let big = sites[0].join("big_files/scan.png");
    std::fs::create_dir_all(big.parent().unwrap()).unwrap();
    let too_large = shoal_operators::files::MAX_FILE_BYTES + 1;
    std::fs::File::create(&big)
        .unwrap()
        .set_len(too_large)
        .unwrap();

    let dirs: Vec<&Path> = sites.iter().map(PathBuf::as_path).collect();
    let provider = Arc::new(DirectoryModels::load(&dir.path().join("models")).unwrap());
    let ctx = shoal_sql::local_context(&dirs, provider).await.unwrap();
    let schema = ctx
        .table("line_files")
        .await
        .unwrap()
        .schema()
        .as_arrow()
        .clone();
    let columns: Vec<(&str, &DataType)> = schema
        .fields()
        .iter()
        .map(|f| (f.name().as_str(), f.data_type()))
        .collect();
    let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    assert_eq!(
        columns,
        [
            ("path", &DataType::Utf8),
            ("size", &DataType::UInt64),
            ("modified", &utc),
            ("content", &DataType::Binary)
        ]
    );

    // One process: each file's probability is the Parquet copy's, and the folder is right.
    let sql = format!("SELECT path, round({DIRECTION}, 3) AS p180 FROM line_files ORDER BY path");
    let files = to_rows(&ctx.sql(&sql).await.unwrap().collect().await.unwrap());
    assert_eq!(files.len(), SITES * PER_SITE, "{files:?}");
    let parquet = format!("SELECT path, round({DIRECTION}, 3) FROM lines");
    let parquet = to_rows(&ctx.sql(&parquet).await.unwrap().collect().await.unwrap());
    let same_image = |path: &str| {
        // `rotated/1-003.jpg` is `lines/1/003.jpg` of the Parquet table.
        let name = path.rsplit('/').next().unwrap();
        let (site, rest) = name.split_once('-').unwrap();
        let key = format!("lines/{site}/{rest}");
        parquet.iter().find(|r| r[0] == key).unwrap().clone()
    };
    let mut right = 0;
    for row in &files {
        let copy = same_image(&row[0]);
        assert_eq!(row[1..], copy[1..], "{} and {}", row[0], copy[0]);
        let rotated = row[0].starts_with("rotated/");
        right += usize::from((row[1].parse::<f64>().unwrap() > 0.5) == rotated);
    }
    assert!(right * 10 >= files.len() * 9, "{right} of {}", files.len());

    // A statement that does not use `content` never reads it: the file too large to read
    // is counted; reading it fails naming it.
    let listed = "SELECT count(*), sum(size) FROM big_files";
    let listed = to_rows(&ctx.sql(listed).await.unwrap().collect().await.unwrap());
    assert_eq!(listed, [["1".to_string(), too_large.to_string()]]);
    let read = ctx
        .sql("SELECT image_error(content) FROM big_files")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        read.contains("big_files/scan.png") && read.contains("reads the content of files up to"),
        "{read}"
    );

    // The cluster, under the sites' default policy: counts per folder leave the sites,
    // the files' paths and content do not.
    let cluster = sites_cluster(&dir.path().join("models"), &sites, None).await;
    let counts = format!(
        "SELECT split_part(path, '/', 1) AS folder, count(*) AS files, \
         sum(CAST({DIRECTION} > 0.5 AS INT)) AS said_180 FROM line_files GROUP BY 1 ORDER BY 1"
    );
    let out = cluster.sql(&counts).await.unwrap();
    assert!(out.report.distributed, "classified on the sites");
    let expected = to_rows(&ctx.sql(&counts).await.unwrap().collect().await.unwrap());
    assert_same_rows(&counts, &expected, &to_rows(&out.batches));
    // A filter on the path picks files before any is read.
    let rotated = "SELECT count(*) AS files, sum(size) AS bytes FROM line_files \
                   WHERE path LIKE 'rotated/%'";
    let out = cluster.sql(rotated).await.unwrap();
    let expected = to_rows(&ctx.sql(rotated).await.unwrap().collect().await.unwrap());
    assert_same_rows(rotated, &expected, &to_rows(&out.batches));
    assert_eq!(expected[0][0], (SITES * PER_SITE / 2).to_string());
    let err = cluster
        .sql("SELECT path, content FROM line_files")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("refuses: table 'line_files'") && err.contains("content"),
        "{err}"
    );
    cluster.stop().await;
}

/// The cluster over the text-line sites (rows may leave: the tests compare them).
async fn lines_cluster(dir: &Path, sites: &[PathBuf]) -> EmbeddedCluster {
    sites_cluster(&dir.join("models"), sites, Some(ROWS_LEAVE)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_pipeline_labels_each_sites_images_there_and_returns_counts() {
    let dir = tempfile::tempdir().unwrap();
    let sites = text_lines(dir.path());
    let cluster = lines_cluster(dir.path(), &sites).await;
    let examples = repo_root().join("examples/pipelines");
    let toml = std::fs::read_to_string(examples.join("text_direction.toml")).unwrap();
    let sql = std::fs::read_to_string(examples.join("text_direction.sql")).unwrap();
    let events = run_pipeline(
        &cluster,
        "text_direction",
        &toml,
        PipelineMode::Run,
        Some("t1"),
    )
    .await
    .unwrap();
    let counts = to_rows(&pipeline_rows(&events));
    let expected = to_rows(&cluster.sql(&sql).await.unwrap().batches);
    assert_same_rows("text_direction", &expected, &counts);
    // Every line of each site is counted on its own site, about half upside down.
    for site in ["site-1", "site-2"] {
        let of_site: Vec<&Vec<String>> = counts.iter().filter(|r| r[0] == site).collect();
        let total: usize = of_site.iter().map(|r| r[2].parse::<usize>().unwrap()).sum();
        assert_eq!(total, PER_SITE, "{counts:?}");
        let upside_down: usize = of_site
            .iter()
            .filter(|r| r[1] == "upside down")
            .map(|r| r[2].parse::<usize>().unwrap())
            .sum();
        assert!(upside_down.abs_diff(PER_SITE / 2) <= 2, "{counts:?}");
    }
    // The labels stay on the site that holds the images.
    for site in &sites {
        let labels = site.join(".shoal-output/labels/text_direction/run-t1");
        let parts = std::fs::read_dir(&labels)
            .unwrap_or_else(|e| panic!("{}: {e}", labels.display()))
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "parquet"))
            .count();
        assert!(parts >= 1, "no labels written under {}", labels.display());
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_tensor_that_does_not_fit_the_model_is_refused_while_planning() {
    let dir = tempfile::tempdir().unwrap();
    let sites = text_lines(dir.path());
    let provider = Arc::new(DirectoryModels::load(&dir.path().join("models")).unwrap());
    let dirs: Vec<&Path> = sites.iter().map(PathBuf::as_path).collect();
    let ctx = shoal_sql::local_context(&dirs, provider).await.unwrap();
    let cases = [
        (
            // Channels last: the model wants [3, ?, ?].
            "SELECT predict_proba('text_direction', image_tensor(content, 48, 192, 'nhwc')) FROM lines",
            "cannot feed input 'x': the input takes [3, ?, ?] per row; the argument's tensors \
             are [48, 192, 3]",
        ),
        (
            "SELECT predict('text_direction', rotated) FROM lines",
            "pass a tensor column",
        ),
        (
            "SELECT predict('text_direction', image_tensor(content, 48, 192, 'nchw'), rotated) FROM lines",
            "model expects 1 feature(s), got 2",
        ),
    ];
    for (sql, expected) in cases {
        let err = match ctx.sql(sql).await {
            Ok(frame) => frame.collect().await.unwrap_err(),
            Err(e) => e,
        };
        assert!(err.to_string().contains(expected), "{sql}\n{err}");
    }
}

/// An image of one colour, encoded.
fn encoded(width: u32, height: u32, rgb: [u8; 3], format: image::ImageFormat) -> Vec<u8> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_pixel(width, height, image::Rgb(rgb))
        .write_to(&mut bytes, format)
        .unwrap();
    bytes.into_inner()
}

/// `batch` as the Parquet table `table` of the site folder `site`.
fn write_table(site: &Path, table: &str, batch: &RecordBatch) {
    let folder = site.join(table);
    std::fs::create_dir_all(&folder).unwrap();
    let file = std::fs::File::create(folder.join("part-0.parquet")).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(batch).unwrap();
    writer.close().unwrap();
}

/// A PNG of one pixel whose header declares `side` x `side` pixels, checksum fixed: a
/// decoder that trusted it would allocate 4.8 GB at 40000.
fn png_declaring(side: u32) -> Vec<u8> {
    let mut png = encoded(1, 1, [0, 0, 0], image::ImageFormat::Png);
    png[16..20].copy_from_slice(&side.to_be_bytes());
    png[20..24].copy_from_slice(&side.to_be_bytes());
    let crc = crc32fast::hash(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_files_are_nulls_with_their_reasons_and_the_site_keeps_serving() {
    use datafusion::arrow::array::{BinaryArray, StringArray};
    let dir = tempfile::tempdir().unwrap();
    let sites = text_lines(dir.path());
    let jpeg = encoded(64, 64, [200, 30, 30], image::ImageFormat::Jpeg);
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("a_good.jpg", jpeg.clone()),
        ("b_truncated.jpg", jpeg[..jpeg.len() / 3].to_vec()),
        ("c_text_named.png", b"name,amount\nA,1\n".to_vec()),
        ("d_empty.png", Vec::new()),
        ("e_40000x40000.png", png_declaring(40_000)),
    ];
    let schema = Arc::new(Schema::new(vec![
        Field::new("path", DataType::Utf8, false),
        Field::new("content", DataType::Binary, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(files.iter().map(|f| f.0))),
            Arc::new(BinaryArray::from_iter_values(files.iter().map(|f| &f.1))),
        ],
    )
    .unwrap();
    write_table(&sites[0], "uploads", &batch);

    let cluster = lines_cluster(dir.path(), &sites).await;
    let sql = format!(
        "SELECT path, image_error(content) AS why, {DIRECTION} IS NULL AS unscored \
         FROM uploads ORDER BY path"
    );
    let out = cluster.sql(&sql).await.unwrap();
    let rows = to_rows(&out.batches);
    let why = |i: usize| rows[i][1].to_lowercase();
    assert_eq!(rows[0][1..], ["NULL", "false"], "the good file scores");
    assert!(
        why(1).starts_with("jpeg header does not read") && why(1).contains("not enough bytes"),
        "{}",
        why(1)
    );
    assert!(
        why(2).contains("not an image in a known format"),
        "{}",
        why(2)
    );
    assert!(why(3).contains("the file is empty (0 bytes)"), "{}", why(3));
    assert!(
        why(4).contains("declares 40000 x 40000 pixels, over the limit"),
        "{}",
        why(4)
    );
    // The model ran on the good file only; the others' results are null.
    assert!(rows[1..].iter().all(|r| r[2] == "true"), "{rows:?}");

    // Strict: the statement fails naming the row and its reason, and the site still serves.
    let strict = "SELECT image_tensor_strict(content, 48, 192, 'nchw') FROM uploads";
    let err = cluster.sql(strict).await.unwrap_err().to_string();
    assert!(err.contains("is not an image that decodes"), "{err}");
    let again = cluster.sql("SELECT count(*) FROM uploads").await.unwrap();
    assert_eq!(to_rows(&again.batches), [["5"]]);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_of_many_images_is_read_in_batches_its_tensors_fit() {
    use datafusion::arrow::array::BinaryArray;
    // 1000 images at 224 x 224 x 3 Float32 are 574 MiB of tensors: more than one batch may
    // hold (512 MiB), so the statement reads fewer rows per batch, on the site too.
    let dir = tempfile::tempdir().unwrap();
    let sites = text_lines(dir.path());
    let png = encoded(8, 8, [10, 200, 30], image::ImageFormat::Png);
    let schema = Arc::new(Schema::new(vec![Field::new(
        "content",
        DataType::Binary,
        false,
    )]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(BinaryArray::from_iter_values(
            std::iter::repeat_n(&png, 1000),
        ))],
    )
    .unwrap();
    write_table(&sites[1], "thumbnails", &batch);
    let cluster = lines_cluster(dir.path(), &sites).await;
    let sql = "SELECT count(*) AS decoded, round(sum(array_max(arrow_cast(t, 'List(Float32)'))), 1) \
               AS total FROM (SELECT image_tensor(content, 224, 224, 'nchw') AS t FROM thumbnails) \
               WHERE t IS NOT NULL";
    let out = cluster.sql(sql).await.unwrap();
    // Every image decoded; each one's brightest value is its green, 200 / 255.
    assert_eq!(to_rows(&out.batches), [["1000", "784.3"]]);
    cluster.stop().await;
}

/// A 16-bit PCM WAV of `channels` channels carrying the same tone at `hz`.
fn wav_tone(rate: u32, channels: u16, hz: f32, seconds: f32) -> Vec<u8> {
    let frames = (rate as f32 * seconds) as usize;
    let data: Vec<u8> = (0..frames)
        .flat_map(|i| {
            let v = (i as f32 * hz * std::f32::consts::TAU / rate as f32).sin() * 16000.0;
            std::iter::repeat_n(v as i16, usize::from(channels))
        })
        .flat_map(i16::to_le_bytes)
        .collect();
    let block = channels * 2;
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    for field in [16u32.to_le_bytes().to_vec(), 1u16.to_le_bytes().to_vec()] {
        out.extend_from_slice(&field);
    }
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * u32::from(block)).to_le_bytes());
    out.extend_from_slice(&block.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&data);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordings_become_waveforms_on_the_sites_as_on_one_node() {
    use datafusion::arrow::array::{BinaryArray, StringArray};
    let dir = tempfile::tempdir().unwrap();
    let sites = text_lines(dir.path());
    let schema = Arc::new(Schema::new(vec![
        Field::new("path", DataType::Utf8, false),
        Field::new("content", DataType::Binary, false),
    ]));
    let clips: [(&str, Vec<u8>); 3] = [
        ("a_44k_stereo.wav", wav_tone(44_100, 2, 440.0, 1.2)),
        ("b_8k_mono.wav", wav_tone(8_000, 1, 440.0, 0.5)),
        ("c_not_audio.wav", b"RIFF but not really".to_vec()),
    ];
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from_iter_values(clips.iter().map(|c| c.0))),
            Arc::new(BinaryArray::from_iter_values(clips.iter().map(|c| &c.1))),
        ],
    )
    .unwrap();
    write_table(&sites[0], "clips", &batch);
    let cluster = lines_cluster(dir.path(), &sites).await;
    // The waveform at 16 kHz for one second: its peak, and how far the tone reaches
    // (the 8 kHz clip lasts half a second, so the rest is zero).
    let sql = "SELECT path, audio_error(content) IS NULL AS decodes, \
               round(array_max(arrow_cast(w, 'List(Float32)')), 2) AS peak, \
               array_length(array_remove_all(arrow_cast(w, 'List(Float32)'), 0.0)) > 12000 AS long \
               FROM (SELECT path, content, audio_tensor(content, 16000, 1) AS w FROM clips) \
               ORDER BY path";
    let out = cluster.sql(sql).await.unwrap();
    assert!(out.report.distributed, "decoded on the site");
    let rows = to_rows(&out.batches);
    let dirs: Vec<&Path> = sites.iter().map(PathBuf::as_path).collect();
    let provider = Arc::new(DirectoryModels::load(&dir.path().join("models")).unwrap());
    let ctx = shoal_sql::local_context(&dirs, provider).await.unwrap();
    let single = to_rows(&ctx.sql(sql).await.unwrap().collect().await.unwrap());
    assert_same_rows(sql, &single, &rows);
    assert_eq!(
        rows,
        [
            ["a_44k_stereo.wav", "true", "0.49", "true"],
            ["b_8k_mono.wav", "true", "0.49", "false"],
            ["c_not_audio.wav", "false", "NULL", "NULL"],
        ]
    );
    cluster.stop().await;
}
