//! Sample data: TPC-H `lineitem` generated in Rust (tpchgen), split across site folders.

use crate::error::{Error, Result};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_writer::ArrowWriterOptions;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use std::path::{Path, PathBuf};
use tpchgen::generators::LineItemGenerator;
use tpchgen_arrow::LineItemArrow;

/// Bumped when the files' layout changes, so data made by an older shoal is regenerated.
/// 2: no Arrow schema hint in the files (plain Parquet types: strings are read as strings by
/// every reader; tpchgen's Utf8View hint broke Daft).
const FILE_FORMAT: u32 = 2;

/// Marker written last: a folder with it holds complete data for that scale and layout.
const MARKER: &str = ".shoal-tpch";

/// Writes `lineitem` at `scale` into `sites` folders `<root>/site-<i>/lineitem/part-<p>.parquet`
/// (`files_per_site` files each). Reuses data already generated with the same settings.
pub fn generate_lineitem(
    root: &Path,
    scale: f64,
    sites: usize,
    files_per_site: usize,
) -> Result<Vec<PathBuf>> {
    let dirs: Vec<PathBuf> = (1..=sites)
        .map(|i| root.join(format!("site-{i}")))
        .collect();
    let marker =
        format!("scale={scale} sites={sites} files_per_site={files_per_site} format={FILE_FORMAT}");
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    if std::fs::read_to_string(root.join(MARKER)).is_ok_and(|m| m == marker) {
        return Ok(dirs);
    }
    // Only the lineitem folders are replaced: the rest of the folder (other tables, a
    // models registry) stays.
    for dir in &dirs {
        let table = dir.join("lineitem");
        if table.exists() {
            std::fs::remove_dir_all(&table).map_err(io(&table))?;
        }
    }
    let parts = (sites * files_per_site) as i32;
    for (site_index, dir) in dirs.iter().enumerate() {
        let table = dir.join("lineitem");
        std::fs::create_dir_all(&table).map_err(io(&table))?;
        for f in 0..files_per_site {
            let part = (site_index * files_per_site + f + 1) as i32;
            let path = table.join(format!("part-{part}.parquet"));
            write_part(&path, scale, part, parts)?;
        }
    }
    std::fs::write(root.join(MARKER), marker).map_err(io(root))?;
    Ok(dirs)
}

fn write_part(path: &Path, scale: f64, part: i32, parts: i32) -> Result<()> {
    let generator = LineItemGenerator::new(scale, part, parts);
    let mut batches = LineItemArrow::new(generator)
        .with_batch_size(8192)
        .peekable();
    let Some(first) = batches.peek() else {
        return Err(Error::DataGen(format!("part {part} of {parts} is empty")));
    };
    let schema = first.schema();
    let file = std::fs::File::create(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(128 * 1024))
        .build();
    let options = ArrowWriterOptions::new()
        .with_properties(props)
        .with_skip_arrow_metadata(true);
    let mut writer = ArrowWriter::try_new_with_options(file, schema, options)
        .map_err(|e| Error::DataGen(e.to_string()))?;
    for batch in batches {
        writer
            .write(&batch)
            .map_err(|e| Error::DataGen(e.to_string()))?;
    }
    writer.close().map_err(|e| Error::DataGen(e.to_string()))?;
    Ok(())
}
