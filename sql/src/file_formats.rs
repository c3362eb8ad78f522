//! The file formats a site's table may be in, and the folder layout of a table: one folder
//! per table, its files all of one format and extension, optionally in Hive-style partition
//! folders (`year=2024/month=01/part.parquet`: `year` and `month` become Utf8 columns).
//! The worker describes its tables by these rules and the single-process session reads
//! them by the same, so a cluster and one process agree on what a table holds.

use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::arrow::ArrowFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use std::sync::Arc;

/// DataFusion's readers, by the name a table report carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TableFormat {
    Parquet,
    /// Comma-separated, with a header row.
    Csv,
    /// Newline-delimited JSON, one object per line.
    Json,
    /// Arrow IPC files (`.arrow`, also known as Feather v2).
    Arrow,
    /// Images, recordings, documents: one row per file (`shoal_operators::files`).
    Files,
}

impl TableFormat {
    pub const ALL: [TableFormat; 5] = [
        Self::Parquet,
        Self::Csv,
        Self::Json,
        Self::Arrow,
        Self::Files,
    ];

    /// The format of a table whose data files have these extensions, in path order: the
    /// first structured file's format (a folder of Parquet with a README.txt is a Parquet
    /// table), else a files table if it holds any image, recording or document.
    pub fn of_table<'a>(extensions: impl IntoIterator<Item = &'a str> + Clone) -> Option<Self> {
        extensions
            .clone()
            .into_iter()
            .find_map(Self::of_extension)
            .or_else(|| {
                extensions
                    .into_iter()
                    .any(shoal_operators::files::is_file_kind)
                    .then_some(Self::Files)
            })
    }

    /// Whether a file with `extension` is any table's data (rather than a README or a
    /// checksum, which a table folder may hold).
    pub fn is_data(extension: &str) -> bool {
        Self::of_extension(extension).is_some() || shoal_operators::files::is_file_kind(extension)
    }

    /// The structured format of a file, by its extension.
    pub fn of_extension(extension: &str) -> Option<Self> {
        match extension.to_ascii_lowercase().as_str() {
            "parquet" => Some(Self::Parquet),
            "csv" => Some(Self::Csv),
            "json" | "jsonl" | "ndjson" => Some(Self::Json),
            "arrow" | "ipc" | "feather" => Some(Self::Arrow),
            _ => None,
        }
    }

    /// The name a table report carries (`parquet`, `csv`, `json`, `arrow`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Parquet => "parquet",
            Self::Csv => "csv",
            Self::Json => "json",
            Self::Arrow => "arrow",
            Self::Files => shoal_operators::files::FORMAT_NAME,
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    /// DataFusion's reader for the format, with shoal's settings (CSV has a header). None
    /// for a files table, whose schema is fixed and whose scan is shoal's own.
    pub fn file_format(self) -> Option<Arc<dyn FileFormat>> {
        match self {
            Self::Parquet => Some(Arc::new(ParquetFormat::default())),
            Self::Csv => Some(Arc::new(CsvFormat::default().with_has_header(true))),
            Self::Json => Some(Arc::new(JsonFormat::default())),
            Self::Arrow => Some(Arc::new(ArrowFormat)),
            Self::Files => None,
        }
    }
}

/// A file's place in its table folder: the partition values of the folders above it, in
/// order, or why the path is not a valid table file.
pub fn partition_values(relative: &str) -> Result<Vec<(String, String)>, String> {
    let mut parts: Vec<&str> = relative.split('/').collect();
    parts.pop();
    parts
        .into_iter()
        .map(|folder| match folder.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
            _ => Err(format!(
                "it is in the subfolder '{folder}', which is not a key=value partition folder"
            )),
        })
        .collect()
}

/// Whether a path segment is the engine's own or a hidden one (`.shoal-audit`, `_SUCCESS`,
/// `.staging-...`): never a table file or a partition.
pub fn is_hidden(segment: &str) -> bool {
    segment.starts_with('.') || segment.starts_with('_')
}

/// A table folder may hold the runs of an `object_store` sink, `run-<id>/` folders right
/// below it (`shoal_operators::sink::store_commit`). Their files are the table's only once
/// the run's manifest is written, and then only the files it lists: a run being written or
/// aborted is never read. The run folder of a file at `relative` (to the table folder).
pub fn run_folder(relative: &str) -> Option<&str> {
    let (first, rest) = relative.split_once('/')?;
    (first.starts_with(RUN_FOLDER_PREFIX) && !rest.is_empty()).then_some(first)
}

/// The path of a table file below its run folder, if it is in one: partition folders are
/// read from there.
pub fn below_run_folder(relative: &str) -> &str {
    match run_folder(relative) {
        Some(run) => &relative[run.len() + 1..],
        None => relative,
    }
}

const RUN_FOLDER_PREFIX: &str = "run-";

/// The files the committed runs of a local table folder list, or None if it holds no run
/// folder. `site_root` is the folder the manifests' paths are relative to.
pub fn committed_run_files(
    table_dir: &std::path::Path,
    site_root: &std::path::Path,
) -> std::io::Result<Option<Vec<std::path::PathBuf>>> {
    use shoal_operators::sink::staging::{MANIFEST_FILE, SiteManifest};
    let mut runs = Vec::new();
    for entry in std::fs::read_dir(table_dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_dir() && name.starts_with(RUN_FOLDER_PREFIX) {
            runs.push(entry.path());
        }
    }
    if runs.is_empty() {
        return Ok(None);
    }
    let mut files = Vec::new();
    for run in runs {
        let manifest = match std::fs::read(run.join(MANIFEST_FILE)) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let manifest: SiteManifest = serde_json::from_slice(&manifest).map_err(|e| {
            std::io::Error::other(format!("{}: {e}", run.join(MANIFEST_FILE).display()))
        })?;
        files.extend(manifest.files.iter().map(|f| site_root.join(&f.file)));
    }
    files.sort();
    Ok(Some(files))
}

/// How a local table folder is laid out: its format ([`TableFormat::of_table`]), the
/// extension of its first data file (in path order, at any depth) and the partition columns
/// of the folders above it (none for a files table, whose subfolders are free). None for a
/// folder without data files.
pub fn table_layout(
    dir: &std::path::Path,
) -> std::io::Result<Option<(TableFormat, String, Vec<String>)>> {
    /// Data files below `dir` in path order, as (relative path, extension), until the
    /// first structured one: that one decides the table's format.
    fn walk(
        dir: &std::path::Path,
        relative: &str,
        found: &mut Vec<(String, String)>,
    ) -> std::io::Result<bool> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<std::io::Result<_>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_hidden(&name) {
                continue;
            }
            let path = if relative.is_empty() {
                name.clone()
            } else {
                format!("{relative}/{name}")
            };
            if entry.file_type()?.is_dir() {
                if walk(&entry.path(), &path, found)? {
                    return Ok(true);
                }
            } else if let Some(extension) = std::path::Path::new(&name)
                .extension()
                .and_then(|e| e.to_str())
                .filter(|e| TableFormat::is_data(e))
            {
                found.push((path, extension.to_string()));
                if TableFormat::of_extension(extension).is_some() {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }
    let mut found = Vec::new();
    walk(dir, "", &mut found)?;
    let Some(format) = TableFormat::of_table(found.iter().map(|(_, e)| e.as_str())) else {
        return Ok(None);
    };
    // The walk stopped at the structured file that decided the format; a files table
    // holds only files it knows.
    let decided = match format {
        TableFormat::Files => found.first(),
        _ => found.last(),
    };
    let Some((relative, extension)) = decided.cloned() else {
        return Ok(None);
    };
    let columns = match format {
        TableFormat::Files => Vec::new(),
        _ => partition_values(below_run_folder(&relative))
            .map(|values| values.into_iter().map(|(k, _)| k).collect())
            .unwrap_or_default(),
    };
    Ok(Some((format, extension, columns)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_by_extension_and_name() {
        assert_eq!(
            TableFormat::of_extension("PARQUET"),
            Some(TableFormat::Parquet)
        );
        assert_eq!(TableFormat::of_extension("jsonl"), Some(TableFormat::Json));
        assert_eq!(
            TableFormat::of_extension("feather"),
            Some(TableFormat::Arrow)
        );
        assert_eq!(TableFormat::of_extension("txt"), None);
        for format in TableFormat::ALL {
            assert_eq!(TableFormat::from_name(format.name()), Some(format));
        }
    }

    #[test]
    fn a_table_is_structured_if_any_file_is_else_files() {
        let of = |extensions: &[&str]| TableFormat::of_table(extensions.iter().copied());
        assert_eq!(of(&["txt", "parquet"]), Some(TableFormat::Parquet));
        assert_eq!(of(&["png", "JPG", "wav"]), Some(TableFormat::Files));
        assert_eq!(of(&["bin", "sha256"]), None);
        assert!(TableFormat::Files.file_format().is_none());
    }

    #[test]
    fn sink_runs_are_told_from_partitions() {
        assert_eq!(run_folder("run-r1/part.parquet"), Some("run-r1"));
        assert_eq!(run_folder("run-r1"), None);
        assert_eq!(run_folder("year=2024/run-r1/part.parquet"), None);
        assert_eq!(below_run_folder("run-r1/part.parquet"), "part.parquet");
        assert_eq!(
            below_run_folder("year=1/part.parquet"),
            "year=1/part.parquet"
        );
    }

    #[test]
    fn partition_folders_give_their_values_in_order() {
        assert_eq!(partition_values("part.parquet").unwrap(), vec![]);
        assert_eq!(
            partition_values("year=2024/month=01/part.parquet").unwrap(),
            vec![
                ("year".to_string(), "2024".to_string()),
                ("month".to_string(), "01".to_string())
            ]
        );
        let err = partition_values("misc/part.parquet").unwrap_err();
        assert!(err.contains("'misc'"), "{err}");
        assert!(partition_values("=x/part.parquet").is_err());
    }
}
