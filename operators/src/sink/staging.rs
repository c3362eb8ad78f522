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
    /// Checkpoint keys of the input files these files cover (resumable runs' waves).
    #[serde(default)]
    pub inputs: Vec<String>,
}

/// Where a sink's files go on a site: a pipeline sink's `kind`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum SinkTarget {
    /// `local_parquet`: the worker's output folder (`--output`), committed by one rename.
    #[default]
    OutputFolder,
    /// `object_store`: where the site's data lives (`--data`, a folder or a bucket prefix),
    /// committed by writing the manifest last ([`super::store_commit`]). A committed run
    /// is a table of the site, like the data beside it.
    DataStore,
}

impl SinkTarget {
    /// The sink `kind` a pipeline names it by.
    pub fn kind_name(self) -> &'static str {
        match self {
            Self::OutputFolder => "local_parquet",
            Self::DataStore => "object_store",
        }
    }
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
    // Hidden folders are the sink's own (staging, waves), except the waves of a run.
    if p.components().any(|c| {
        let name = c.as_os_str().to_string_lossy();
        name.starts_with('.') && !name.starts_with(WAVES_PREFIX)
    }) {
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
    if manifest.files.is_empty() {
        // A wave whose inputs gave no rows here still records that it covered them.
        std::fs::create_dir_all(&staging)?;
    }
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

/// Where a resumable run commits its waves before the seal: `<path>/.waves-<run id>`
/// (relative to the output folder; hidden, so no reader takes them for output).
pub fn waves_path(path: &str, run_id: &str) -> String {
    format!("{path}/{WAVES_PREFIX}{run_id}")
}

const WAVES_PREFIX: &str = ".waves-";

/// Whether `path` is a resumable run's waves folder ([`waves_path`]): its commits are
/// checkpoints, hidden until the seal, not a run's output.
pub fn is_waves_path(path: &str) -> bool {
    path.rsplit('/')
        .next()
        .is_some_and(|last| last.starts_with(WAVES_PREFIX))
}

/// The waves of `run_id` committed here; removes the staging of waves that never
/// committed (a crash mid-wave), which a resumed run redoes.
pub fn committed_waves(
    root: &Path,
    path: &str,
    run_id: &str,
) -> std::io::Result<Vec<SiteManifest>> {
    let dir = root.join(waves_path(path, run_id));
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut waves = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(".staging-") {
            std::fs::remove_dir_all(entry.path())?;
        } else if let Some(wave) = name.strip_prefix("run-")
            && let Some(manifest) = committed(root, &waves_path(path, run_id), wave)?
        {
            waves.push(manifest);
        }
    }
    waves.sort_by(|a, b| a.run_id.cmp(&b.run_id));
    Ok(waves)
}

/// Makes a resumable run's committed waves on this worker its output, in one rename: their
/// files are linked into the run's staging folder, which is then committed as one run.
/// Idempotent: a crash at any point leaves the waves intact and nothing visible, and sealing
/// again finishes the job; sealing a sealed run returns its manifest. None when this worker
/// holds no wave of the run.
pub fn seal(root: &Path, path: &str, run_id: &str) -> std::io::Result<Option<SiteManifest>> {
    if let Some(done) = committed(root, path, run_id)? {
        let _ = std::fs::remove_dir_all(root.join(waves_path(path, run_id)));
        return Ok(Some(done));
    }
    let waves = committed_waves(root, path, run_id)?;
    if waves.is_empty() {
        return Ok(None);
    }
    let staging = staging_dir(root, path, run_id);
    match std::fs::remove_dir_all(&staging) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::create_dir_all(&staging)?;
    let mut manifest = SiteManifest {
        run_id: run_id.to_string(),
        path: path.to_string(),
        files: Vec::new(),
        inputs: Vec::new(),
    };
    for wave in waves {
        manifest.inputs.extend(wave.inputs);
        for file in wave.files {
            let source = root.join(&file.file);
            let name = Path::new(&file.file)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            std::fs::hard_link(&source, staging.join(&name))
                .or_else(|_| std::fs::copy(&source, staging.join(&name)).map(|_| ()))?;
            crash_here_for_tests();
            manifest.files.push(ManifestFile {
                file: format!("{path}/run-{run_id}/{name}"),
                ..file
            });
        }
    }
    manifest.inputs.sort();
    let sealed = commit(root, &manifest)?;
    std::fs::remove_dir_all(root.join(waves_path(path, run_id)))?;
    Ok(Some(sealed))
}

/// Fault injection for the fault-tolerance tests: `SHOAL_FAULT_CRASH_IN_SEAL=1` makes the
/// process abort in the middle of a seal, after its first file is staged. Only in builds
/// with the `fault-injection` feature (the test build).
#[cfg(feature = "fault-injection")]
pub(super) fn crash_here_for_tests() {
    if std::env::var("SHOAL_FAULT_CRASH_IN_SEAL").is_ok_and(|v| v == "1") {
        std::process::abort();
    }
}

#[cfg(not(feature = "fault-injection"))]
pub(super) fn crash_here_for_tests() {}

/// Takes back the committed run `run_id` (its commit failed on another site, so the run as
/// a whole never happened). Nothing if it is not committed here.
pub fn rollback(root: &Path, path: &str, run_id: &str) -> std::io::Result<()> {
    match std::fs::remove_dir_all(committed_dir(root, path, run_id)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Removes whatever a run staged here, its waves included (nothing if it staged nothing).
pub fn abort(root: &Path, path: &str, run_id: &str) -> std::io::Result<()> {
    for dir in [
        staging_dir(root, path, run_id),
        root.join(waves_path(path, run_id)),
    ] {
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
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
    fn waves_folders_are_told_from_outputs() {
        assert!(is_waves_path(&waves_path("scores", "r1")));
        assert!(!is_waves_path("scores"));
        assert!(!is_waves_path("predictions/daily"));
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
            inputs: Vec::new(),
        };
        commit(root.path(), &manifest).unwrap();
        let done = committed_dir(root.path(), "out", "r1");
        assert!(done.join("part-a.parquet").is_file());
        assert!(!done.join("part-stray.parquet").exists());
        assert!(!staging.exists());
        assert_eq!(commit(root.path(), &manifest).unwrap(), manifest);
        assert_eq!(committed(root.path(), "out", "r1").unwrap(), Some(manifest));

        rollback(root.path(), "out", "r1").unwrap();
        assert_eq!(committed(root.path(), "out", "r1").unwrap(), None);
        assert!(!done.exists());
        rollback(root.path(), "out", "r1").unwrap();

        std::fs::create_dir_all(staging_dir(root.path(), "out", "r2")).unwrap();
        abort(root.path(), "out", "r2").unwrap();
        assert!(!staging_dir(root.path(), "out", "r2").exists());
        abort(root.path(), "out", "never").unwrap();
    }

    #[test]
    fn sealing_waves_is_one_run_and_idempotent() {
        let root = tempfile::tempdir().unwrap();
        let waves = waves_path("out", "r1");
        for (wave, input) in [("w1", "fa"), ("w2", "fb")] {
            let staging = staging_dir(root.path(), &waves, wave);
            std::fs::create_dir_all(&staging).unwrap();
            std::fs::write(staging.join(format!("part-{wave}.parquet")), b"x").unwrap();
            let manifest = SiteManifest {
                run_id: wave.into(),
                path: waves.clone(),
                files: vec![ManifestFile {
                    site: "s".into(),
                    file: format!("{waves}/run-{wave}/part-{wave}.parquet"),
                    rows: 1,
                    bytes: 1,
                    sha256: "00".into(),
                }],
                inputs: vec![input.into()],
            };
            commit(root.path(), &manifest).unwrap();
        }
        // A wave that never committed is dropped when the waves are listed.
        std::fs::create_dir_all(staging_dir(root.path(), &waves, "w3")).unwrap();
        let listed = committed_waves(root.path(), "out", "r1").unwrap();
        assert_eq!(listed.len(), 2);
        assert!(!staging_dir(root.path(), &waves, "w3").exists());

        let sealed = seal(root.path(), "out", "r1").unwrap().unwrap();
        assert_eq!(sealed.inputs, ["fa", "fb"]);
        let done = committed_dir(root.path(), "out", "r1");
        assert!(done.join("part-w1.parquet").is_file() && done.join("part-w2.parquet").is_file());
        assert_eq!(sealed.files[0].file, "out/run-r1/part-w1.parquet");
        assert!(!root.path().join(&waves).exists());
        assert_eq!(seal(root.path(), "out", "r1").unwrap(), Some(sealed));
        assert_eq!(seal(root.path(), "out", "never").unwrap(), None);
    }
}
