//! Log-mel spectrograms of recordings stored as files, made where they lie: the values are
//! librosa's (`tests/data/make_audio_reference.py`), on the sites as in one process.

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::Float32Type;
use shoal_engine::protocol::PipelineMode;
use shoal_operators::model::DirectoryModels;
use shoal_tests::{
    ROWS_LEAVE, assert_same_rows, pipeline_rows, repo_root, run_pipeline, sites_cluster, to_rows,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn reference(name: &str) -> Vec<f32> {
    std::fs::read(repo_root().join("tests/data/audio").join(name))
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordings_become_librosas_log_mel_spectrograms_where_they_lie() {
    let dir = tempfile::tempdir().unwrap();
    let sites: Vec<PathBuf> = (1..=2)
        .map(|i| dir.path().join(format!("site-{i}")))
        .collect();
    let chirp = std::fs::read(repo_root().join("tests/data/audio/chirp.wav")).unwrap();
    for site in &sites {
        std::fs::create_dir_all(site.join("recordings")).unwrap();
        std::fs::write(site.join("recordings/chirp.wav"), &chirp).unwrap();
    }
    std::fs::write(sites[1].join("recordings/notes.wav"), b"not audio").unwrap();
    std::fs::create_dir_all(dir.path().join("models")).unwrap();
    let dirs: Vec<&Path> = sites.iter().map(PathBuf::as_path).collect();
    let provider = Arc::new(DirectoryModels::load(&dir.path().join("models")).unwrap());
    let ctx = shoal_sql::local_context(&dirs, provider).await.unwrap();

    for (scale, file, frames) in [
        ("log10", "chirp_logmel.f32", 101),
        ("whisper", "chirp_whisper.f32", 100),
    ] {
        let sql = format!(
            "SELECT path, audio_spectrogram(content, 16000, 1, 400, 160, 80, '{scale}') AS mel \
             FROM recordings ORDER BY path"
        );
        let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
        let field = batches[0].schema().field(1).clone();
        let shape = field.extension_type_metadata().unwrap_or_default();
        assert_eq!(shape, format!("{{\"shape\":[80,{frames}]}}"), "{scale}");
        let expected = reference(file);
        let mut checked = 0;
        for batch in &batches {
            let paths = batch.column(0).as_string::<i32>();
            let mels = batch.column(1).as_fixed_size_list();
            for row in 0..batch.num_rows() {
                if paths.value(row) == "notes.wav" {
                    assert!(mels.is_null(row), "not audio: a null");
                    continue;
                }
                let value = mels.value(row);
                let values = value.as_primitive::<Float32Type>().values();
                let worst = values
                    .iter()
                    .zip(&expected)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(worst < 2e-4, "{scale}: {worst}");
                checked += 1;
            }
        }
        assert_eq!(checked, 2, "one recording on each site");
    }

    // On the sites (which here let rows leave): the same values, compared by their sum.
    let cluster = sites_cluster(&dir.path().join("models"), &sites, Some(ROWS_LEAVE)).await;
    let sql = "SELECT site() AS site, path, round(array_sum(arrow_cast(audio_spectrogram(content, \
               16000, 1, 400, 160, 80), 'List(Float32)')), 1) AS total FROM recordings \
               ORDER BY path, site";
    let out = cluster.sql(sql).await.unwrap();
    assert!(out.report.distributed, "made on the sites");
    let on_sites = to_rows(&out.batches);
    assert_eq!(on_sites.len(), 3, "{on_sites:?}");
    let local = "SELECT path, round(array_sum(arrow_cast(audio_spectrogram(content, 16000, 1, \
                 400, 160, 80), 'List(Float32)')), 1) AS total FROM recordings ORDER BY path";
    let expected = to_rows(&ctx.sql(local).await.unwrap().collect().await.unwrap());
    let without_site: Vec<Vec<String>> = on_sites.iter().map(|r| r[1..].to_vec()).collect();
    assert_same_rows(sql, &expected, &without_site);
    // The pipeline op: `audio` with mel sizes makes the same spectrogram.
    let events = run_pipeline(&cluster, "mels", PIPELINE, PipelineMode::Run, Some("m1"))
        .await
        .unwrap();
    // Its rows are (path, site, total); the statement's (site, path, total).
    let mut from_pipeline: Vec<Vec<String>> = to_rows(&pipeline_rows(&events))
        .into_iter()
        .map(|r| vec![r[1].clone(), r[0].clone(), r[2].clone()])
        .collect();
    from_pipeline.sort();
    let mut statement = on_sites.clone();
    statement.sort();
    assert_eq!(from_pipeline, statement);
    let err = cluster
        .sql("SELECT audio_spectrogram(content, 16000, 1, 400, 0, 80) FROM recordings")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("hop_length"), "{err}");
    cluster.stop().await;
}

const PIPELINE: &str = r#"
[source.recordings]
table = "recordings"
columns = ["path", "content"]

[features.mels]
input = "recordings"
keep = ["path"]
ops = [{ op = "audio", column = "content", sample_rate = 16000, seconds = 1.0, n_fft = 400, hop_length = 160, n_mels = 80, output = "mel" }]

[features.totals]
input = "mels"
keep = ["path"]
columns = { site = "site()", total = "round(array_sum(arrow_cast(mel, 'List(Float32)')), 1)" }

[sink.out]
input = "totals"
kind = "client"
"#;
