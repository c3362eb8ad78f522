//! (c) Image classification in the shape of Daft's published batch-inference benchmark
//! (`benchmarking/ai/`: ResNet-18 over ImageNet files): decode each JPEG, resize it to
//! 224 x 224, normalise it with ImageNet's mean and std, classify it with a ResNet-18-shaped
//! network (`bench_resnet18.onnx`, random weights: the speed depends on the shapes) and
//! return each file's top class. The files are JPEGs of photo-like content and sizes on two
//! sites (`site-<i>/photos/class-<k>/*.jpg`), read as files by every engine.
//!
//! Phases: shoal on one process, shoal on 2 workers (one per site), Daft and Ray Data
//! (`benches/images.py`), each in its own process. The answer is every file's top class;
//! engines resize with different filters, so the report gives how many of the files got the
//! same class as shoal's one-process run rather than demanding equality.

use serde_json::{Value, json};
use shoal_engine::{CoordinatorOptions, EmbeddedCluster, SitePolicy};
use shoal_operators::model::DirectoryModels;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

pub const SITES: usize = 2;
pub const MODEL: &str = "bench_resnet18";
/// Folders per site (`class-<k>`): what a per-folder count would group by.
const FOLDERS: usize = 8;

/// The job in shoal's SQL: the files table `photos` of each site.
pub fn sql() -> String {
    format!(
        "SELECT path, top_k(predict('{MODEL}', image_tensor(content, 224, 224, 'nchw', \
         0.485, 0.456, 0.406, 0.229, 0.224, 0.225, 'stretch')), 1)[1]['class'] AS label \
         FROM photos"
    )
}

/// Writes `total` JPEGs over the sites under `dir`, once (deterministic: fixed seed).
pub fn generate(dir: &Path, total: usize) {
    use rand::{Rng, SeedableRng};
    let marker = dir.join(format!(".generated-{total}"));
    if marker.exists() {
        return;
    }
    let _ = std::fs::remove_dir_all(dir);
    let mut rng = rand::rngs::StdRng::seed_from_u64(18);
    for n in 0..total {
        let site = n % SITES + 1;
        let folder = dir.join(format!("site-{site}/photos/class-{}", n % FOLDERS));
        std::fs::create_dir_all(&folder).unwrap();
        // ImageNet's photos are mostly around 500 x 375.
        let (width, height) = (
            rng.random_range(320..=640u32),
            rng.random_range(240..=480u32),
        );
        let tint: [f32; 3] = [rng.random(), rng.random(), rng.random()];
        let slope: [f32; 3] = [rng.random(), rng.random(), rng.random()];
        let waves = rng.random_range(2.0..12.0f32);
        let mut image = image::RgbImage::new(width, height);
        for (x, y, pixel) in image.enumerate_pixels_mut() {
            let (u, v) = (x as f32 / width as f32, y as f32 / height as f32);
            for c in 0..3 {
                let wave = ((u * waves + v * (c as f32 + 1.0)) * std::f32::consts::PI).sin();
                let value = tint[c] * 0.6 + slope[c] * u * 0.3 + wave * 0.2;
                let noise = rng.random_range(-0.04..0.04f32);
                pixel.0[c] = ((value + noise).clamp(0.0, 1.0) * 255.0) as u8;
            }
        }
        let file = folder.join(format!("img-{site}-{n:05}.jpg"));
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .encode_image(&image)
            .unwrap();
    }
    std::fs::write(marker, b"").unwrap();
}

pub fn site_dirs(data: &Path) -> Vec<PathBuf> {
    (1..=SITES)
        .map(|i| data.join(format!("site-{i}")))
        .collect()
}

/// Runs one of shoal's image phases; prints nothing, returns the phase's JSON.
pub async fn run_phase(phase: &str, data: &Path, models: &Path, runs: usize) -> Value {
    let sql = sql();
    let mut times = Vec::new();
    let mut labels = Value::Null;
    match phase {
        "images-shoal-1" => {
            let registry = Arc::new(DirectoryModels::load(models).unwrap());
            let dirs = site_dirs(data);
            let dirs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
            let ctx = shoal_sql::local_context(&dirs, registry).await.unwrap();
            for _ in 0..runs {
                let started = Instant::now();
                let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
                times.push(started.elapsed().as_secs_f64());
                labels = labels_of(&batches);
            }
        }
        "images-shoal-2" => {
            let options = CoordinatorOptions {
                models_dir: Some(models.to_path_buf()),
                ..Default::default()
            };
            // Every file's class comes back with its path, so the sites let `photos` rows
            // leave (the content still never does: only the model's output of it).
            let policy =
                SitePolicy::parse("[tables.photos]\negress = \"rows\"\n", "image bench").unwrap();
            let cluster = EmbeddedCluster::start_with_policy(options, &site_dirs(data), policy)
                .await
                .unwrap();
            for _ in 0..runs {
                let started = Instant::now();
                let out = cluster.sql(&sql).await.unwrap();
                times.push(started.elapsed().as_secs_f64());
                labels = labels_of(&out.batches);
            }
            cluster.stop().await;
        }
        other => panic!("unknown phase {other}"),
    }
    json!({ "times": times, "answer": labels })
}

/// `{path below photos/: class}` of a result's rows.
fn labels_of(batches: &[datafusion::arrow::array::RecordBatch]) -> Value {
    use datafusion::arrow::array::{AsArray, Int32Array};
    let mut labels = BTreeMap::new();
    for batch in batches {
        let paths = batch.column(0).as_string::<i32>();
        let classes = batch
            .column(1)
            .as_any()
            .downcast_ref::<Int32Array>()
            .unwrap();
        for i in 0..batch.num_rows() {
            labels.insert(paths.value(i).to_string(), json!(classes.value(i)));
        }
    }
    json!(labels)
}

/// The share of `reference`'s files that `answer` gives the same class, and how many
/// files `answer` has.
pub fn agreement(reference: &Value, answer: &Value) -> (f64, usize) {
    let (Some(reference), Some(answer)) = (reference.as_object(), answer.as_object()) else {
        return (f64::NAN, 0);
    };
    let same = reference
        .iter()
        .filter(|(path, class)| answer.get(*path) == Some(class))
        .count();
    (same as f64 / reference.len().max(1) as f64, answer.len())
}
