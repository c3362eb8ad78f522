//! A model registry read from a directory of `<name>.onnx` files: the coordinator's source
//! of truth, and the single-process session's.

use super::{LoadedModel, ModelInfo, ModelProvider};
use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// sha256 of model bytes, hex: the identity a worker fetches and caches a model by.
pub fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[derive(Debug, Default)]
pub struct DirectoryModels {
    dir: Option<PathBuf>,
    models: BTreeMap<String, Arc<LoadedModel>>,
}

impl DirectoryModels {
    /// Loads every `*.onnx` in `dir`. A file that is not a valid model fails the whole load
    /// with an error naming it: a registry that silently skips a model would make `predict`
    /// fail later with a misleading "unknown model".
    pub fn load(dir: &Path) -> Result<Self> {
        let io = |source| Error::Io {
            path: dir.to_path_buf(),
            source,
        };
        let mut models = BTreeMap::new();
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "onnx"))
            .collect();
        paths.sort();
        for path in paths {
            let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            let bytes = std::fs::read(&path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            let model = LoadedModel::from_bytes(name, &path.display().to_string(), bytes)?;
            models.insert(name.to_string(), Arc::new(model));
        }
        Ok(Self {
            dir: Some(dir.to_path_buf()),
            models,
        })
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    pub fn by_hash(&self, hash: &str) -> Option<Arc<LoadedModel>> {
        self.models.values().find(|m| m.hash == hash).cloned()
    }

    pub fn unknown(&self, name: &str) -> Error {
        Error::UnknownModel {
            name: name.to_string(),
            known: self.models.keys().cloned().collect::<Vec<_>>().join(", "),
        }
    }
}

impl ModelProvider for DirectoryModels {
    fn model(&self, name: &str, pinned_hash: Option<&str>) -> Result<Arc<LoadedModel>> {
        let model = self.models.get(name).ok_or_else(|| self.unknown(name))?;
        if let Some(pin) = pinned_hash
            && pin != model.hash
        {
            return Err(Error::Store(format!(
                "model '{name}' changed during the query: planned with {pin}, registry has {}",
                model.hash
            )));
        }
        Ok(model.clone())
    }

    fn list(&self) -> Vec<ModelInfo> {
        self.models.values().map(|m| m.info()).collect()
    }
}
