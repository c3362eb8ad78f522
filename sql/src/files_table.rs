//! A files table over local folders (`shoal_operators::files`), for the single-process
//! session: listed afresh at each scan, as DataFusion's ListingTable lists Parquet, with the
//! rules a worker lists its files by (hidden files and folders are not the table's; only
//! the kinds of file a files table knows are).

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::object_store::path::Path as StorePath;
use datafusion::physical_plan::ExecutionPlan;
use shoal_operators::files::{self, FileEntry, LISTING_COLUMNS};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// DataFusion's local file system store, which every session has.
const LOCAL_STORE: &str = "file:///";

#[derive(Debug)]
pub struct LocalFilesTable {
    /// The table's folder on each site.
    folders: Vec<PathBuf>,
}

impl LocalFilesTable {
    pub fn new(folders: Vec<PathBuf>) -> Self {
        Self { folders }
    }

    /// Every file of the table, in path order per folder.
    fn list(&self) -> Result<Vec<FileEntry>> {
        let mut entries = Vec::new();
        for folder in &self.folders {
            list_folder(folder, "", &mut entries)?;
        }
        Ok(entries)
    }
}

fn list_folder(dir: &Path, relative: &str, entries: &mut Vec<FileEntry>) -> Result<()> {
    let failed = |e: std::io::Error| {
        DataFusionError::Execution(format!("cannot list '{}': {e}", dir.display()))
    };
    let mut children: Vec<_> = std::fs::read_dir(dir)
        .map_err(failed)?
        .collect::<std::io::Result<_>>()
        .map_err(failed)?;
    children.sort_by_key(|e| e.file_name());
    for child in children {
        let name = child.file_name().to_string_lossy().into_owned();
        if crate::file_formats::is_hidden(&name) {
            continue;
        }
        let path = if relative.is_empty() {
            name.clone()
        } else {
            format!("{relative}/{name}")
        };
        let meta = child.metadata().map_err(failed)?;
        if meta.is_dir() {
            list_folder(&child.path(), &path, entries)?;
            continue;
        }
        let known = Path::new(&name)
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(files::is_file_kind);
        if !meta.is_file() || !known {
            continue;
        }
        let location = StorePath::from_absolute_path(child.path())
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        entries.push(FileEntry {
            location: location.to_string(),
            path,
            size: meta.len(),
            modified_micros: modified,
        });
    }
    Ok(())
}

#[async_trait]
impl TableProvider for LocalFilesTable {
    fn schema(&self) -> SchemaRef {
        files::table_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// Filters on `path`, `size` and `modified` skip files before any is opened.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(files::prune::pushdown(filters, |f| {
            files::prune::reads_only(f, &LISTING_COLUMNS)
        }))
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let entries = self.list()?;
        let on_listing: Vec<&Expr> = filters
            .iter()
            .filter(|f| files::prune::reads_only(f, &LISTING_COLUMNS))
            .collect();
        let listing = files::listing_batch(&entries.iter().collect::<Vec<_>>())?;
        let keep = files::prune::files_passing(state, &listing, &on_listing)?;
        let kept: Vec<FileEntry> = entries
            .into_iter()
            .zip(keep)
            .filter_map(|(entry, kept)| kept.then_some(entry))
            .collect();
        let groups = files::spread(kept, state.config().target_partitions());
        files::scan(LOCAL_STORE, groups, projection, limit)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use datafusion::prelude::SessionContext;

    async fn run(ctx: &SessionContext, sql: &str) -> String {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string()
    }

    #[tokio::test]
    async fn lists_known_files_at_any_depth_and_prunes_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let table = dir.path().join("t");
        for (path, bytes) in [
            ("a.png", &b"\xffbc"[..]),
            ("sub/b.WAV", b"de"),
            ("sub/.hidden.png", b"x"),
            ("_staging/c.png", b"x"),
            ("notes.bin", b"x"),
        ] {
            let file = table.join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, bytes).unwrap();
        }
        let ctx = SessionContext::new();
        ctx.register_table("t", Arc::new(LocalFilesTable::new(vec![table])))
            .unwrap();
        let listed = run(
            &ctx,
            "SELECT path, size, arrow_typeof(content) FROM t ORDER BY path",
        )
        .await;
        assert_eq!(
            listed
                .lines()
                .filter(|l| l.contains(".png") || l.contains(".WAV"))
                .count(),
            2,
            "{listed}"
        );
        assert!(listed.contains("| sub/b.WAV | 2    | Binary"), "{listed}");
        let sql = "SELECT count(*) FROM t WHERE path LIKE 'sub/%'";
        assert!(run(&ctx, sql).await.contains("| 1 "));
        // The filter picked the file before the scan was planned.
        let plan = run(&ctx, &format!("EXPLAIN {sql}")).await;
        assert!(plan.contains("file_groups={1 group: [["), "{plan}");
        assert!(!plan.contains("a.png"), "{plan}");
    }

    #[tokio::test]
    async fn a_statement_building_image_tensors_gathers_fewer_files_per_batch() {
        let site = tempfile::tempdir().unwrap();
        let table = site.path().join("photos");
        std::fs::create_dir_all(&table).unwrap();
        std::fs::write(table.join("a.png"), b"png").unwrap();
        let models = tempfile::tempdir().unwrap();
        let provider =
            Arc::new(shoal_operators::model::DirectoryModels::load(models.path()).unwrap());
        let ctx = crate::session::local_context(&[site.path()], provider)
            .await
            .unwrap();
        // 3 x 224 x 224 Float32 is 588 KiB a row: 222 rows make 128 MiB.
        let tensors = "EXPLAIN SELECT image_tensor(content, 224, 224, 'nchw') FROM photos";
        assert!(run(&ctx, tensors).await.contains("up to 222 files"));
        let listing = "EXPLAIN SELECT path, size FROM photos";
        assert!(run(&ctx, listing).await.contains("up to batch_size files"));
    }
}
