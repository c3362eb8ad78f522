//! Where a sink's files live on a worker, and the commit and abort of a run.

use serde::{Deserialize, Serialize};
use std::path::{Component, Path, PathBuf};

/// One file of a committed run, as listed in its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    pub site: String,
    /// Relative to the worker's output folder, e.g. `scores/run-7/part-site-1-0-....parquet`.
    pub file: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteManifest {
    pub run_id: String,
    pub path: String,
    pub files: Vec<ManifestFile>,
}

/// A sink path must stay inside the output folder: relative, no `..`, no root.
pub fn check_sink_path(path: &str) -> Result<(), String> {
    let p = Path::new(path);
    if path.is_empty() || p.is_absolute() {
        return Err(format!("sink path '{path}' must be a relative folder name"));
    }
    if p.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(format!(
            "sink path '{path}' may not contain '..', '.' or a root: it must stay inside the worker's output folder"
        ));
    }
    if p.components()
        .any(|c| c.as_os_str().to_string_lossy().starts_with('.'))
    {
        return Err(format!("sink path '{path}' may not contain hidden folders"));
    }
    Ok(())
}

/// Run ids name folders: letters, digits, '-' and '_' only.
pub fn check_run_id(run_id: &str) -> Result<(), String> {
    if run_id.is_empty()
        || run_id.len() > 100
        || !run_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "run id '{run_id}' must be 1-100 letters, digits, '-' or '_'"
        ));
    }
    Ok(())
}

pub fn staging_dir(root: &Path, path: &str, run_id: &str) -> PathBuf {
    root.join(path).join(format!(".staging-{run_id}"))
}

pub fn committed_dir(root: &Path, path: &str, run_id: &str) -> PathBuf {
    root.join(path).join(format!("run-{run_id}"))
}

pub const MANIFEST_FILE: &str = "_manifest.json";

/// The manifest of a committed run, if this run was committed here.
pub fn committed(root: &Path, path: &str, run_id: &str) -> std::io::Result<Option<SiteManifest>> {
    let file = committed_dir(root, path, run_id).join(MANIFEST_FILE);
    match std::fs::read(&file) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| std::io::Error::other(format!("{}: {e}", file.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Makes the staged files of `manifest` visible in one rename. Committing a run that is
/// already committed is a no-op returning the stored manifest.
pub fn commit(root: &Path, manifest: &SiteManifest) -> std::io::Result<SiteManifest> {
    if let Some(done) = committed(root, &manifest.path, &manifest.run_id)? {
        return Ok(done);
    }
    let staging = staging_dir(root, &manifest.path, &manifest.run_id);
    for f in &manifest.files {
        let name = Path::new(&f.file).file_name().unwrap_or_default();
        if !staging.join(name).is_file() {
            return Err(std::io::Error::other(format!(
                "run '{}': staged file {} is missing on this worker; the run cannot be committed",
                manifest.run_id,
                staging.join(name).display()
            )));
        }
    }
    // Files not in the manifest (a retried partition, a cancelled write) are not part of
    // the run: remove them before the folder becomes visible.
    for entry in std::fs::read_dir(&staging)? {
        let entry = entry?;
        let listed = manifest
            .files
            .iter()
            .any(|f| Path::new(&f.file).file_name() == Some(entry.file_name().as_os_str()));
        if !listed {
            std::fs::remove_file(entry.path())?;
        }
    }
    let body = serde_json::to_vec_pretty(manifest).map_err(std::io::Error::other)?;
    std::fs::write(staging.join(MANIFEST_FILE), body)?;
    std::fs::rename(
        &staging,
        committed_dir(root, &manifest.path, &manifest.run_id),
    )?;
    Ok(manifest.clone())
}

/// Removes whatever a run staged here (nothing if it staged nothing).
pub fn abort(root: &Path, path: &str, run_id: &str) -> std::io::Result<()> {
    match std::fs::remove_dir_all(staging_dir(root, path, run_id)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn paths_must_stay_inside_the_output_folder() {
        assert!(check_sink_path("scores/daily").is_ok());
        for bad in ["", "/etc", "../up", "a/../b", "./a", "a/.hidden"] {
            assert!(check_sink_path(bad).is_err(), "{bad}");
        }
        assert!(check_run_id("nightly-2026_11").is_ok());
        assert!(check_run_id("a/b").is_err());
    }

    #[test]
    fn commit_is_one_rename_and_idempotent_and_abort_cleans_up() {
        let root = tempfile::tempdir().unwrap();
        let staging = staging_dir(root.path(), "out", "r1");
        std::fs::create_dir_all(&staging).unwrap();
        std::fs::write(staging.join("part-a.parquet"), b"x").unwrap();
        std::fs::write(staging.join("part-stray.parquet"), b"y").unwrap();
        let manifest = SiteManifest {
            run_id: "r1".into(),
            path: "out".into(),
            files: vec![ManifestFile {
                site: "s".into(),
                file: "out/run-r1/part-a.parquet".into(),
                rows: 1,
                bytes: 1,
                sha256: "00".into(),
            }],
        };
        commit(root.path(), &manifest).unwrap();
        let done = committed_dir(root.path(), "out", "r1");
        assert!(done.join("part-a.parquet").is_file());
        assert!(!done.join("part-stray.parquet").exists());
        assert!(!staging.exists());
        assert_eq!(commit(root.path(), &manifest).unwrap(), manifest);
        assert_eq!(committed(root.path(), "out", "r1").unwrap(), Some(manifest));

        std::fs::create_dir_all(staging_dir(root.path(), "out", "r2")).unwrap();
        abort(root.path(), "out", "r2").unwrap();
        assert!(!staging_dir(root.path(), "out", "r2").exists());
        abort(root.path(), "out", "never").unwrap();
    }
}
