//! Committing a sink's files in a store without rename (a bucket prefix, or a site's data
//! folder through the same `ObjectStore` interface): the data files first, the manifest last.
//!
//! ```text
//!  <data>/<path>/run-<run>/part-*.parquet   uploaded while the query runs (not yet listed)
//!  <data>/<path>/run-<run>/_manifest.json   the commit: written once, only if absent
//! ```
//! A run folder without its manifest is not output: readers list only the files a committed
//! manifest names (see `shoal_sql::file_formats::committed_run_files`), and an abort deletes
//! whatever an uncommitted run left. The manifest is put with `PutMode::Create`, so two
//! commits of one run id cannot both win and a committed run is never written again.

use super::staging::{ManifestFile, SiteManifest, crash_here_for_tests, waves_path};
use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions};
use std::collections::{BTreeMap, HashSet};
use std::io;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

pub use super::staging::MANIFEST_FILE;

/// `<path>/run-<run id>`: the folder of one run's files.
pub fn run_dir(path: &str, run_id: &str) -> StorePath {
    StorePath::from(format!("{path}/run-{run_id}"))
}

fn manifest_location(path: &str, run_id: &str) -> StorePath {
    run_dir(path, run_id).join(MANIFEST_FILE)
}

fn failed(what: &str, location: &StorePath, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("{what} {location}: {e}"))
}

/// The manifest of a committed run, if this run was committed in this store.
pub async fn committed(
    store: &dyn ObjectStore,
    path: &str,
    run_id: &str,
) -> io::Result<Option<SiteManifest>> {
    let location = manifest_location(path, run_id);
    match store.get(&location).await {
        Ok(got) => {
            let bytes = got
                .bytes()
                .await
                .map_err(|e| failed("reading", &location, e))?;
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| failed("parsing", &location, e))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(failed("reading", &location, e)),
    }
}

/// Copies a staged local file to `to`, in parts for a large one (object_store's buffered
/// writer: one PUT below its capacity, a multipart upload above it).
pub async fn upload(
    store: Arc<dyn ObjectStore>,
    local: &std::path::Path,
    to: &StorePath,
) -> io::Result<()> {
    let mut file = tokio::fs::File::open(local).await?;
    let mut writer = object_store::buffered::BufWriter::new(store, to.clone());
    let copied = async {
        tokio::io::copy(&mut file, &mut writer).await?;
        writer.shutdown().await
    }
    .await;
    if let Err(e) = copied {
        // A multipart upload left open would be billed and invisible: end it.
        let _ = writer.abort().await;
        return Err(failed("uploading", to, e));
    }
    Ok(())
}

async fn list_all(store: &dyn ObjectStore, prefix: &StorePath) -> io::Result<Vec<StorePath>> {
    store
        .list(Some(prefix))
        .map_ok(|meta| meta.location)
        .try_collect()
        .await
        .map_err(|e| failed("listing", prefix, e))
}

async fn delete_all(store: &dyn ObjectStore, prefix: &StorePath) -> io::Result<()> {
    for location in list_all(store, prefix).await? {
        match store.delete(&location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(failed("deleting", &location, e)),
        }
    }
    Ok(())
}

/// Commits `manifest`: checks every listed file is there whole, deletes what the run folder
/// holds besides them (a retried partition's upload), then writes the manifest. Committing
/// a committed run changes nothing and returns the stored manifest.
pub async fn commit(store: &dyn ObjectStore, manifest: &SiteManifest) -> io::Result<SiteManifest> {
    let (path, run_id) = (manifest.path.as_str(), manifest.run_id.as_str());
    if let Some(done) = committed(store, path, run_id).await? {
        return Ok(done);
    }
    let dir = run_dir(path, run_id);
    let mut listed = HashSet::new();
    for file in &manifest.files {
        let location = StorePath::from(file.file.as_str());
        if location.prefix_match(&dir).is_none() {
            return Err(io::Error::other(format!(
                "run '{run_id}': file {location} is outside the run's folder {dir}"
            )));
        }
        match store.head(&location).await {
            Ok(meta) if meta.size == file.bytes => {}
            Ok(meta) => {
                return Err(io::Error::other(format!(
                    "run '{run_id}': {location} holds {} bytes, the sink wrote {}; the run cannot be committed",
                    meta.size, file.bytes
                )));
            }
            Err(object_store::Error::NotFound { .. }) => {
                return Err(io::Error::other(format!(
                    "run '{run_id}': {location} is missing from the store; the run cannot be committed"
                )));
            }
            Err(e) => return Err(failed("checking", &location, e)),
        }
        listed.insert(location);
    }
    for location in list_all(store, &dir).await? {
        if !listed.contains(&location) {
            match store.delete(&location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(failed("deleting", &location, e)),
            }
        }
    }
    let body = serde_json::to_vec_pretty(manifest).map_err(io::Error::other)?;
    let location = manifest_location(path, run_id);
    let create = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    match store.put_opts(&location, body.clone().into(), create).await {
        Ok(_) => Ok(manifest.clone()),
        // Another commit of this run id won: its manifest is the run.
        Err(object_store::Error::AlreadyExists { .. }) => committed(store, path, run_id)
            .await?
            .ok_or_else(|| failed("reading", &location, "it exists but cannot be read")),
        // A store without conditional writes (plain HTTP/WebDAV): the coordinator commits a
        // run on a site once at a time, so a check before the write is the best there is.
        Err(object_store::Error::NotImplemented { .. }) => {
            if let Some(done) = committed(store, path, run_id).await? {
                return Ok(done);
            }
            store
                .put(&location, body.into())
                .await
                .map_err(|e| failed("writing", &location, e))?;
            Ok(manifest.clone())
        }
        Err(e) => Err(failed("writing", &location, e)),
    }
}

/// Removes what an uncommitted run left here, its waves included. A committed run is never
/// touched.
pub async fn abort(store: &dyn ObjectStore, path: &str, run_id: &str) -> io::Result<()> {
    if committed(store, path, run_id).await?.is_none() {
        delete_all(store, &run_dir(path, run_id)).await?;
    }
    delete_all(store, &StorePath::from(waves_path(path, run_id))).await
}

/// Takes back the committed run `run_id` (its commit failed on another site): the manifest
/// goes first, so readers stop seeing the run at once, then its files.
pub async fn rollback(store: &dyn ObjectStore, path: &str, run_id: &str) -> io::Result<()> {
    let manifest = manifest_location(path, run_id);
    match store.delete(&manifest).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(failed("deleting", &manifest, e)),
    }
    delete_all(store, &run_dir(path, run_id)).await
}

/// The waves of `run_id` committed here; deletes what waves that never committed uploaded
/// (a crash mid-wave), which a resumed run redoes.
pub async fn committed_waves(
    store: &dyn ObjectStore,
    path: &str,
    run_id: &str,
) -> io::Result<Vec<SiteManifest>> {
    let waves = waves_path(path, run_id);
    let root = StorePath::from(waves.as_str());
    let mut wave_ids = BTreeMap::new();
    for location in list_all(store, &root).await? {
        let folder = location
            .prefix_match(&root)
            .and_then(|mut parts| parts.next())
            .map(|p| p.as_ref().to_string());
        if let Some(wave) = folder.as_deref().and_then(|f| f.strip_prefix("run-")) {
            wave_ids.insert(wave.to_string(), ());
        }
    }
    let mut committed_waves = Vec::new();
    for wave in wave_ids.into_keys() {
        match committed(store, &waves, &wave).await? {
            Some(manifest) => committed_waves.push(manifest),
            None => delete_all(store, &run_dir(&waves, &wave)).await?,
        }
    }
    Ok(committed_waves)
}

/// Makes a resumable run's committed waves in this store its output: their files are copied
/// into the run's folder (server-side copies) and the run is committed with one manifest.
/// Idempotent: a crash at any point leaves the waves intact and no manifest, and sealing
/// again finishes the job; sealing a sealed run returns its manifest. None when this store
/// holds no wave of the run.
pub async fn seal(
    store: &dyn ObjectStore,
    path: &str,
    run_id: &str,
) -> io::Result<Option<SiteManifest>> {
    let waves_root = StorePath::from(waves_path(path, run_id));
    if let Some(done) = committed(store, path, run_id).await? {
        delete_all(store, &waves_root).await?;
        return Ok(Some(done));
    }
    let waves = committed_waves(store, path, run_id).await?;
    if waves.is_empty() {
        return Ok(None);
    }
    let dir = run_dir(path, run_id);
    let mut manifest = SiteManifest {
        run_id: run_id.to_string(),
        path: path.to_string(),
        files: Vec::new(),
        inputs: Vec::new(),
    };
    for wave in waves {
        manifest.inputs.extend(wave.inputs);
        for file in wave.files {
            let from = StorePath::from(file.file.as_str());
            let name = from.filename().unwrap_or_default().to_string();
            let to = dir.clone().join(name.as_str());
            store
                .copy(&from, &to)
                .await
                .map_err(|e| failed("copying", &from, e))?;
            crash_here_for_tests();
            manifest.files.push(ManifestFile {
                file: to.to_string(),
                ..file
            });
        }
    }
    manifest.inputs.sort();
    let sealed = commit(store, &manifest).await?;
    delete_all(store, &waves_root).await?;
    Ok(Some(sealed))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use object_store::memory::InMemory;

    async fn put(store: &InMemory, location: &str, body: &'static [u8]) {
        store
            .put(&StorePath::from(location), body.into())
            .await
            .unwrap();
    }

    fn file(location: &str, bytes: u64) -> ManifestFile {
        ManifestFile {
            site: "s".into(),
            file: location.into(),
            rows: 1,
            bytes,
            sha256: "00".into(),
        }
    }

    async fn names(store: &InMemory, prefix: &str) -> Vec<String> {
        let mut all: Vec<String> = list_all(store, &StorePath::from(prefix))
            .await
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        all.sort();
        all
    }

    #[tokio::test]
    async fn the_manifest_is_written_last_once_and_unlisted_files_go() {
        let store = InMemory::new();
        put(&store, "out/run-r1/part-a.parquet", b"abc").await;
        put(&store, "out/run-r1/part-stray.parquet", b"y").await;
        let manifest = SiteManifest {
            run_id: "r1".into(),
            path: "out".into(),
            files: vec![file("out/run-r1/part-a.parquet", 3)],
            inputs: Vec::new(),
        };
        assert_eq!(committed(&store, "out", "r1").await.unwrap(), None);
        assert_eq!(commit(&store, &manifest).await.unwrap(), manifest);
        assert_eq!(
            names(&store, "out").await,
            ["out/run-r1/_manifest.json", "out/run-r1/part-a.parquet"]
        );
        // A second commit of the same id, even with other files, changes nothing.
        let other = SiteManifest {
            files: Vec::new(),
            ..manifest.clone()
        };
        assert_eq!(commit(&store, &other).await.unwrap(), manifest);
        // Nor does an abort of it.
        abort(&store, "out", "r1").await.unwrap();
        assert_eq!(
            committed(&store, "out", "r1").await.unwrap(),
            Some(manifest)
        );
        // A rollback (the run failed to commit on another site) takes it all back.
        rollback(&store, "out", "r1").await.unwrap();
        assert_eq!(committed(&store, "out", "r1").await.unwrap(), None);
        assert!(names(&store, "out").await.is_empty());
    }

    #[tokio::test]
    async fn a_file_missing_or_cut_short_refuses_the_commit() {
        let store = InMemory::new();
        put(&store, "out/run-r1/part-a.parquet", b"ab").await;
        for bad in [
            file("out/run-r1/part-a.parquet", 3),
            file("out/run-r1/part-gone.parquet", 1),
            file("elsewhere/part-a.parquet", 2),
        ] {
            let manifest = SiteManifest {
                run_id: "r1".into(),
                path: "out".into(),
                files: vec![bad],
                inputs: Vec::new(),
            };
            let err = commit(&store, &manifest).await.unwrap_err().to_string();
            assert!(err.contains("run 'r1'"), "{err}");
        }
        assert_eq!(committed(&store, "out", "r1").await.unwrap(), None);
        abort(&store, "out", "r1").await.unwrap();
        assert!(names(&store, "out").await.is_empty());
    }

    #[tokio::test]
    async fn waves_seal_into_one_run_and_sealing_again_is_a_no_op() {
        let store = InMemory::new();
        let waves = waves_path("out", "r1");
        for (wave, input) in [("w1", "fa"), ("w2", "fb")] {
            let location = format!("{waves}/run-{wave}/part-{wave}.parquet");
            put(&store, &location, b"x").await;
            let manifest = SiteManifest {
                run_id: wave.into(),
                path: waves.clone(),
                files: vec![file(&location, 1)],
                inputs: vec![input.into()],
            };
            commit(&store, &manifest).await.unwrap();
        }
        // A wave that never committed is deleted when the waves are listed.
        put(&store, &format!("{waves}/run-w3/part-w3.parquet"), b"z").await;
        assert_eq!(committed_waves(&store, "out", "r1").await.unwrap().len(), 2);
        assert!(names(&store, &format!("{waves}/run-w3")).await.is_empty());

        let sealed = seal(&store, "out", "r1").await.unwrap().unwrap();
        assert_eq!(sealed.inputs, ["fa", "fb"]);
        assert_eq!(
            names(&store, "out").await,
            [
                "out/run-r1/_manifest.json",
                "out/run-r1/part-w1.parquet",
                "out/run-r1/part-w2.parquet"
            ]
        );
        assert_eq!(seal(&store, "out", "r1").await.unwrap(), Some(sealed));
        assert_eq!(seal(&store, "out", "never").await.unwrap(), None);
    }
}
