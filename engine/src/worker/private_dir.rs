//! The worker's model cache is private: the models a site scores with are the operator's
//! and may be confidential, and a cache others can write could feed the worker a model
//! (reads verify the hash, but a shared folder still leaks every model). The folder is
//! created 0700 and refused if it exists as anything but a folder of this user's that no
//! one else may read or write (someone else may have created it first, or put a symlink
//! there, in a shared temp folder). Files in it are written under fresh random names with
//! `create_new` (O_EXCL: never through an existing file or symlink), 0600, then renamed.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where a worker caches models when not told: under the user's cache folder
/// (`$XDG_CACHE_HOME`, else `~/.cache`), else a per-user folder in the temp folder.
pub fn default_model_cache(site: &str) -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|cache| cache.join("shoal").join("models"))
        .unwrap_or_else(|| std::env::temp_dir().join(format!("shoal-models-{}", user_id())));
    base.join(site)
}

/// The effective user id of this process (the owner of `/proc/self`).
fn user_id() -> u32 {
    std::fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid())
}

/// Creates `dir` (and missing parents) private to this user, or checks that it already is.
pub fn ensure_private_dir(dir: &Path) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("creating model cache folder {}: {e}", dir.display()))?;
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| format!("model cache folder {}: {e}", dir.display()))?;
    let refuse = |why: &str| {
        Err(format!(
            "model cache folder {} {why}: refusing to keep models there (remove it, or pass \
             --model-cache with a private folder)",
            dir.display()
        ))
    };
    if !meta.file_type().is_dir() {
        return refuse("is not a folder (a symlink?)");
    }
    if meta.uid() != user_id() {
        return refuse("belongs to another user");
    }
    if meta.permissions().mode() & 0o077 != 0 {
        // Ours, but opened up (an older version made it 0755): close it.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .or_else(|_| refuse("is readable or writable by other users"))?;
    }
    Ok(())
}

/// Writes `bytes` to `path` in the private folder `dir`: a fresh random temporary name,
/// created exclusively with mode 0600, then renamed over `path`.
pub fn write_private(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut random = [0u8; 12];
    getrandom::fill(&mut random).map_err(|e| format!("no randomness: {e}"))?;
    let tmp = dir.join(format!(".{}.tmp", hex::encode(random)));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut file| file.write_all(bytes).and_then(|()| file.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("writing {}: {e}", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_is_private_and_files_are_written_exclusively() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("cache/site-1");
        ensure_private_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let path = dir.join("m.onnx");
        write_private(&dir, &path, b"model").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"model");
        let file_mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(file_mode & 0o777, 0o600);
        // A folder opened up is closed again; a symlink in its place is refused.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&dir).unwrap();
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let link = root.path().join("cache/site-2");
        std::os::unix::fs::symlink(root.path(), &link).unwrap();
        let err = ensure_private_dir(&link).unwrap_err();
        assert!(err.contains("not a folder"), "{err}");
    }
}
