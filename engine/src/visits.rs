//! Sample data with a known answer for training: a `visits` table (hospital visits) on each
//! site, made from a fixed logistic model (`readmitted`) and a fixed linear one (`cost`),
//! with each site's patients drawn from a shifted population (sites are not alike, as in
//! real federations). Tests check trained models against these coefficients.

use crate::error::{Error, Result};
use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The features, in column order.
pub const FEATURES: [&str; 5] = ["age", "bmi", "systolic_bp", "glucose", "prior_visits"];

/// The readmission model's logit: intercept, then one weight per feature (applied to the
/// feature minus its centre in [`CENTRES`]).
pub const READMISSION_INTERCEPT: f64 = -0.8;
pub const READMISSION_WEIGHTS: [f64; 5] = [0.045, 0.08, 0.02, 0.015, 0.35];
pub const CENTRES: [f64; 5] = [55.0, 28.0, 130.0, 120.0, 3.0];

/// cost = COST_INTERCEPT + Σ COST_WEIGHTS · feature + N(0, COST_NOISE²).
pub const COST_INTERCEPT: f64 = 1200.0;
pub const COST_WEIGHTS: [f64; 5] = [35.0, 60.0, 8.0, 5.0, 420.0];
pub const COST_NOISE: f64 = 300.0;

const MARKER: &str = ".shoal-visits";

/// The true readmission logit as SQL over the `visits` columns (the Bayes-optimal rule is
/// `logit > 0`).
pub fn readmission_logit_sql() -> String {
    let terms: Vec<String> = FEATURES
        .iter()
        .zip(READMISSION_WEIGHTS.iter().zip(CENTRES))
        .map(|(f, (w, c))| format!("{w} * ({f} - {c})"))
        .collect();
    format!("({READMISSION_INTERCEPT} + {})", terms.join(" + "))
}

/// splitmix64: a small, fast, reproducible generator (no state shared between sites).
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self, mean: f64, std: f64) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        mean + std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// Writes `<site>/visits/part-<k>.parquet` in every site folder, `rows_per_site` rows each
/// over `files_per_site` files; reuses files made with the same settings.
pub fn generate_visits(
    sites: &[PathBuf],
    rows_per_site: usize,
    files_per_site: usize,
) -> Result<()> {
    let marker = format!("rows_per_site={rows_per_site} files_per_site={files_per_site} format=1");
    for (s, site) in sites.iter().enumerate() {
        let table = site.join("visits");
        if std::fs::read_to_string(table.join(MARKER)).is_ok_and(|m| m == marker) {
            continue;
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { path, source }
        };
        if table.exists() {
            std::fs::remove_dir_all(&table).map_err(io(&table))?;
        }
        std::fs::create_dir_all(&table).map_err(io(&table))?;
        let per_file = rows_per_site / files_per_site.max(1);
        for f in 0..files_per_site.max(1) {
            let mut rng = Rng(0x5eed_0000 + (s as u64) * 1000 + f as u64);
            let batch = visits_batch(&mut rng, s, per_file)?;
            let path = table.join(format!("part-{}.parquet", f + 1));
            let file = std::fs::File::create(&path).map_err(io(&path))?;
            let mut writer = ArrowWriter::try_new(file, batch.schema(), None)
                .map_err(|e| Error::DataGen(e.to_string()))?;
            writer
                .write(&batch)
                .map_err(|e| Error::DataGen(e.to_string()))?;
            writer.close().map_err(|e| Error::DataGen(e.to_string()))?;
        }
        std::fs::write(table.join(MARKER), &marker).map_err(io(&table))?;
    }
    Ok(())
}

fn visits_batch(rng: &mut Rng, site: usize, rows: usize) -> Result<RecordBatch> {
    // Each site serves an older or younger, healthier or sicker population.
    let shift = site as f64;
    let mut columns: Vec<Vec<f64>> = (0..4).map(|_| Vec::with_capacity(rows)).collect();
    let mut prior = Vec::with_capacity(rows);
    let mut readmitted = Vec::with_capacity(rows);
    let mut cost = Vec::with_capacity(rows);
    for _ in 0..rows {
        let age = rng
            .normal(48.0 + 7.0 * shift, 14.0)
            .clamp(18.0, 95.0)
            .round();
        let bmi = rng.normal(26.0 + 1.5 * shift, 4.5).clamp(15.0, 55.0);
        let bp = rng.normal(122.0 + 5.0 * shift, 16.0).clamp(80.0, 220.0);
        let glucose = rng.normal(105.0 + 8.0 * shift, 30.0).clamp(50.0, 350.0);
        let visits = (rng.uniform() * (4.0 + 2.0 * shift)).floor();
        let values = [age, bmi, bp, glucose, visits];
        let logit = READMISSION_INTERCEPT
            + values
                .iter()
                .zip(READMISSION_WEIGHTS.iter().zip(CENTRES))
                .map(|(v, (w, c))| w * (v - c))
                .sum::<f64>();
        let p = 1.0 / (1.0 + (-logit).exp());
        readmitted.push((rng.uniform() < p) as i64);
        cost.push(
            COST_INTERCEPT
                + values
                    .iter()
                    .zip(COST_WEIGHTS)
                    .map(|(v, w)| v * w)
                    .sum::<f64>()
                + rng.normal(0.0, COST_NOISE),
        );
        for (column, v) in columns.iter_mut().zip(values).take(4) {
            column.push(v);
        }
        prior.push(visits as i64);
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("age", DataType::Float64, false),
        Field::new("bmi", DataType::Float64, false),
        Field::new("systolic_bp", DataType::Float64, false),
        Field::new("glucose", DataType::Float64, false),
        Field::new("prior_visits", DataType::Int64, false),
        Field::new("readmitted", DataType::Int64, false),
        Field::new("cost", DataType::Float64, false),
    ]));
    let mut arrays: Vec<ArrayRef> = columns
        .into_iter()
        .take(4)
        .map(|c| Arc::new(Float64Array::from(c)) as ArrayRef)
        .collect();
    arrays.push(Arc::new(Int64Array::from(prior)));
    arrays.push(Arc::new(Int64Array::from(readmitted)));
    arrays.push(Arc::new(Float64Array::from(cost)));
    RecordBatch::try_new(schema, arrays).map_err(|e| Error::DataGen(e.to_string()))
}
